public import ClusterAPI
public import ClusterClient
public import Foundation
public import TLSTransport
public import TestBed
public import TestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// The executables next to the running one (tests, benchmarks and the launcher are built beside them).
public let siblingBinaries = URL(
    fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "/"
).deletingLastPathComponent()

/// A controller on a unix socket in the bed directory and an agent inside each node's namespaces.
public final class BedCluster: @unchecked Sendable {
    public let bed: TestBed
    public let pki: PKIDirectory
    public let socket: String
    public let heartbeat: Int
    public let gracePeriod: Int
    /// The agents' `--api-timeout` (seconds): short on the bed, so tests that stop the controller need not wait long.
    public let apiTimeout = 5
    private var controller: ChildProcess?
    private var agents: [String: ChildProcess] = [:]
    /// Each agent's own link to the controller, when the cluster was started with them (`start(…, controllerLinks:)`).
    private var links: [String: ControllerLink] = [:]
    public let admin: APIClient
    /// The lifetime (seconds) of the controller's and the agents' certificates, when shorter than the default.
    public let leafValidity: Int?
    /// The bed's nodes this cluster runs agents on (all of them unless the cluster was started on some).
    public let nodeNames: [String]
    /// The cluster's name (its CA's `O`).
    public let name: String
    /// Where the controller serves the sync endpoint (`--sync-listen`), when it does.
    public private(set) var syncAddress: String?
    /// Where the controller serves the cross-cluster gateway (`--gateway-listen`), when it does.
    public let gatewayAddress: String?
    /// The controller's `--sync-deadline` (seconds), when not its default.
    public let syncDeadline: Int?

    private init(
        bed: TestBed, pki: PKIDirectory, socket: String, heartbeat: Int, gracePeriod: Int, admin: APIClient,
        leafValidity: Int?, nodeNames: [String], name: String, syncAddress: String?, gatewayAddress: String?,
        syncDeadline: Int?
    ) {
        self.syncDeadline = syncDeadline
        self.gatewayAddress = gatewayAddress
        self.nodeNames = nodeNames
        self.name = name
        self.syncAddress = syncAddress
        self.leafValidity = leafValidity
        self.gracePeriod = gracePeriod
        self.bed = bed
        self.pki = pki
        self.socket = socket
        self.heartbeat = heartbeat
        self.admin = admin
    }

    /// Starts a controller and an agent per node. With `controllerLinks` each agent reaches the controller through
    /// its own `ControllerLink`, which a test can cut (`setControllerLink`). With `leafValidity` (seconds) the
    /// controller's and the agents' certificates live that long, and the daemons renew them (through the controller,
    /// which holds the CA); the admin's certificate keeps the default lifetime.
    ///
    /// Several clusters share a bed when each is started `on` some of its nodes, with its own `name` and a `syncPort`
    /// (the controller then serves the sync endpoint on the switch's address at that port), and with a `gatewayPort`
    /// the cross-cluster gateway beside it.
    public static func start(
        _ bed: TestBed, on nodes: [String]? = nil, name: String = "bed", syncPort: Int? = nil, gatewayPort: Int? = nil,
        syncDeadline: Int? = nil, heartbeat: Int = 2,
        gracePeriod: Int = 40, controllerLinks: Bool = false, leafValidity: Int? = nil
    ) async throws -> BedCluster {
        let nodeNames = nodes ?? bed.report.nodes.map(\.name)
        let directory = bed.report.directory + "/cluster-\(name)-\(UUID().uuidString.prefix(6))"
        let pki = PKIDirectory(url: URL(fileURLWithPath: directory + "/pki"))
        _ = try pki.initialize(cluster: name)
        let daemons = leafValidity.map { PKIDirectory(url: pki.url, policy: .leaves(validFor: $0)) } ?? pki
        _ = try daemons.issue(
            LeafRequest(role: .controller, name: "controller", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"]))
        let adminKey = try pki.issue(LeafRequest(role: .user, name: "admin"))
        for node in nodeNames { _ = try daemons.issue(LeafRequest(role: .node, name: node)) }
        let socket = directory + "/api.sock"
        let provider = try TLSContextProvider(identity: adminKey.key, trust: try pki.bundle())
        let cluster = BedCluster(
            bed: bed, pki: pki, socket: socket, heartbeat: heartbeat, gracePeriod: gracePeriod,
            admin: APIClient(endpoint: .unix(path: socket), provider: provider), leafValidity: leafValidity,
            nodeNames: nodeNames, name: name,
            syncAddress: syncPort.map { "\(bed.report.segments[bed.node(nodeNames[0]).segment].address):\($0)" },
            gatewayAddress: gatewayPort.map { "\(bed.report.segments[bed.node(nodeNames[0]).segment].address):\($0)" },
            syncDeadline: syncDeadline)
        try await cluster.startController()
        if controllerLinks {
            for node in nodeNames {
                cluster.links[node] = try ControllerLink(path: directory + "/api-\(node).sock", upstream: socket)
            }
        }
        for node in nodeNames { try cluster.startAgent(node) }
        _ = try await cluster.waitFor("nodes Ready") {
            let nodes = try await cluster.admin.list(Kinds.node)["items"]?.array ?? []
            return nodes.filter { $0["status"]?["printableStatus"]?.string == "Ready" }.count == nodeNames.count
                ? true : nil
        }
        return cluster
    }

    /// The port every daemon of the bed serves its metrics on (`--metrics-listen`), each on its own address.
    public static let metricsPort = 9464

    /// Where the controller serves its metrics: on the switch's address (it runs in the switch namespace).
    public var controllerMetrics: String {
        // Clusters sharing the bed (each with a sync port) serve their controllers' metrics beside it.
        let port = syncAddress.flatMap { $0.split(separator: ":").last.flatMap { Int($0) } }.map { $0 + 1 }
        return "\(switchAddress):\(port ?? Self.metricsPort)"
    }

    /// The segment the cluster's nodes (and its controller) are on.
    public var segment: Int { bed.node(nodeNames[0]).segment }

    /// The address of the cluster's switch host (its controller's, and its gateway's).
    public var switchAddress: String {
        bed.report.segments[segment].address
    }

    /// Where a node's agent serves its metrics: on the node's address.
    public func agentMetrics(_ name: String) -> String { "\(bed.node(name).address):\(Self.metricsPort)" }

    /// Starts the controller on the cluster's data directory (again, after `killController`): in the switch
    /// namespace, so that its plain-HTTP metrics listen on the bed's network (the cluster API is a unix socket in the
    /// bed directory, which every node sees).
    public func startController() async throws {
        let issued = pki.url.appendingPathComponent("issued").path
        let directory = pki.url.deletingLastPathComponent().path
        var arguments: [String] = [
            "--data", directory + "/data", "--listen", "unix:" + socket, "--cert",
            "\(issued)/controller-controller.pem",
            "--key", "\(issued)/controller-controller-key.pem", "--ca", pki.bundleURL.path, "--node-grace-period",
            String(gracePeriod), "--pki", pki.url.path, "--metrics-listen", controllerMetrics,
        ]
        if let leafValidity { arguments += ["--leaf-validity", String(leafValidity)] }
        if let syncAddress { arguments += ["--sync-listen", syncAddress] }
        if let gatewayAddress { arguments += ["--gateway-listen", gatewayAddress] }
        if let syncDeadline { arguments += ["--sync-deadline", String(syncDeadline)] }
        let controller = try bed.startOnSwitch(
            segment: segment, siblingBinaries.appendingPathComponent("sync-controller").path, arguments)
        self.controller = controller
        let deadline = Date().addingTimeInterval(20)
        while !controller.stdout.contains("serving the cluster API") {
            guard Date() < deadline else {
                throw TestBedError("the controller did not start: \(await controller.stop())")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Cuts (`up: false`) or restores the link between a node's agent and the controller; the cluster must have
    /// been started with `controllerLinks`.
    public func setControllerLink(of name: String, up: Bool) throws {
        guard let link = links[name] else {
            throw TestBedError("node \(name) has no controller link: start the cluster with controllerLinks")
        }
        if up { link.restore() } else { link.cut() }
    }

    /// SIGSTOP (`running: false`) or SIGCONT of the controller: a controller that accepts connections but answers
    /// nothing, as one that hangs.
    public func setControllerRunning(_ running: Bool) {
        guard let controller else { return }
        kill(controller.pid, running ? SIGCONT : SIGSTOP)
    }

    /// kill -9 of the controller.
    /// kill -9 of the controller, restarted on the same data with its sync endpoint at `port` of the same host (its
    /// metrics beside it): the peers knew another address.
    public func restartController(syncPort port: Int) async throws {
        await killController()
        syncAddress = "\(switchAddress):\(port)"
        try await startController()
    }

    public func killController() async {
        guard let controller else { return }
        self.controller = nil
        kill(controller.pid, SIGKILL)
        _ = await controller.wait(timeout: 10)
    }

    public func startAgent(_ name: String) throws {
        let node = bed.node(name)
        let issued = pki.url.appendingPathComponent("issued").path
        agents[name] = try bed.start(
            on: name, siblingBinaries.appendingPathComponent("node-agent").path,
            [
                "--name", name, "--address", node.address, "--server", "unix://" + (links[name]?.path ?? socket),
                "--cert", "\(issued)/node-\(name).pem",
                "--key", "\(issued)/node-\(name)-key.pem", "--ca", pki.bundleURL.path, "--libvirt", node.uri,
                "--run-dir", node.imagesDirectory, "--heartbeat", String(heartbeat), "--api-timeout",
                String(apiTimeout),
                "--metrics-listen", agentMetrics(name),
            ] + hostPathArguments)
    }

    /// SIGTERM of node `name`'s agent (a graceful stop); returns its exit status (137 if it had to be killed after
    /// `timeout` seconds) and everything it printed.
    public func stopAgent(_ name: String, timeout: TimeInterval = 10) async -> (status: Int32, output: String) {
        guard let agent = agents.removeValue(forKey: name) else { return (-1, "") }
        kill(agent.pid, SIGTERM)
        let status = await agent.wait(timeout: timeout)
        return (status, agent.stdout + agent.stderr)
    }

    /// Freezes (`running: false`, SIGSTOP) or thaws (SIGCONT) node `name`'s agent: it holds whatever it was doing.
    public func setAgent(_ name: String, running: Bool) {
        guard let agent = agents[name] else { return }
        kill(agent.pid, running ? SIGCONT : SIGSTOP)
    }

    public func killAgent(_ name: String) async {
        guard let agent = agents.removeValue(forKey: name) else { return }
        kill(agent.pid, SIGKILL)
        _ = await agent.wait(timeout: 10)
    }

    /// The agents' storage roots (the nodes' own storage and the bed's shared directory) and import directories
    /// (where the bed keeps the tiny guest's kernel, initrd and boot disk).
    public var hostPathArguments: [String] {
        let guest = bed.report.guest
        let imports = Set(
            [guest.kernel, guest.initrd, guest.bootDisk].map { ($0 as NSString).deletingLastPathComponent })
        return ["--storage-root", "/var/lib/vmsync", "--storage-root", bed.report.sharedDirectory]
            + imports.sorted().flatMap { ["--import-dir", $0] }
    }

    /// Waits until a restarted agent has registered its node again and posted a heartbeat after that (its loops —
    /// VMIs, migrations — have listed what is on its node by then); returns when (monotonic seconds, the heartbeat
    /// monitor's clock).
    public func waitForAgentBack(_ name: String, timeout: TimeInterval = 60) async throws -> Double {
        _ = try await waitFor("agent \(name) registered again", timeout: timeout) {
            agentOutput(name).contains("node registered") ? true : nil
        }
        let registered = try await admin.get(Kinds.node, name: name)["status"]?["conditions"]?.array?.first {
            $0["type"] == "Ready"
        }?["lastHeartbeatTime"]
        _ = try await waitFor("agent \(name) heartbeat after registering", timeout: timeout) {
            () async throws -> Bool? in
            let node = try await admin.get(Kinds.node, name: name)
            let beat = node["status"]?["conditions"]?.array?.first { $0["type"] == "Ready" }?["lastHeartbeatTime"]
            return beat != registered ? true : nil
        }
        return HeartbeatMonitor.monotonicNow
    }

    /// The PID of a node's agent.
    public func agentPID(_ name: String) -> Int32? { agents[name]?.pid }

    /// The controller's process ID (nil while none runs).
    public var controllerPID: Int32? { controller?.pid }

    /// Everything the controller and the agents have printed so far, each under a heading.
    public var allOutput: String {
        var parts = agents.sorted { $0.key < $1.key }.map {
            "=== agent \($0.key)\n\($0.value.stdout)\($0.value.stderr)"
        }
        if let controller { parts.append("=== controller\n\(controller.stdout)\(controller.stderr)") }
        return parts.joined(separator: "\n")
    }

    /// What a node's agent has printed so far (its log).
    public func agentOutput(_ name: String) -> String {
        agents[name].map { $0.stdout + $0.stderr } ?? ""
    }

    public func stopAll() {
        for agent in agents.values { kill(agent.pid, SIGTERM) }
        if let controller {
            kill(controller.pid, SIGCONT)
            kill(controller.pid, SIGTERM)
        }
        for link in links.values { link.stop() }
    }

    /// SIGTERM of every daemon of the cluster, waiting until each has exited (its nodes free for another cluster).
    public func shutdown() async {
        let daemons = Array(agents.values) + (controller.map { [$0] } ?? [])
        stopAll()
        for daemon in daemons { _ = await daemon.wait(timeout: 20) }
        agents = [:]
        controller = nil
    }

    public func syncctl(_ arguments: [String], input: String = "") async throws -> ProcessResult {
        let config = pki.url.deletingLastPathComponent().appendingPathComponent("kubeconfig").path
        if !FileManager.default.fileExists(atPath: config) {
            let made = try await run(
                siblingBinaries.appendingPathComponent("syncctl").path,
                ["config", "create", "--dir", pki.url.path, "--server", "unix://" + socket, "--output", config])
            guard made.status == 0 else { throw TestBedError("syncctl config create: \(made.stderr)") }
        }
        return try await run(
            siblingBinaries.appendingPathComponent("syncctl").path, arguments + ["--kubeconfig", config], input: input)
    }

    /// Polls `probe` until it returns a value (errors count as "not yet").
    public func waitFor<T>(_ what: String, timeout: TimeInterval = 90, _ probe: () async throws -> T?) async throws -> T
    {
        let deadline = Date().addingTimeInterval(timeout)
        var lastError: (any Error)?
        while Date() < deadline {
            do {
                if let value = try await probe() { return value }
            } catch {
                lastError = error
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        let output = (agents.values.map { $0.stdout + $0.stderr } + [controller.map { $0.stdout + $0.stderr } ?? ""])
            .joined(separator: "\n---\n")
        throw TestBedError(
            "timed out waiting for \(what)\(lastError.map { " (last error: \($0))" } ?? "")\n\(output.suffix(3000))")
    }
}

extension BedCluster {
    /// `syncctl apply` of `manifest` (written into the bed directory as `file`).
    public func apply(_ manifest: String, as file: String) async throws {
        let path = bed.report.directory + "/" + file
        try manifest.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await syncctl(["apply", "-f", path])
        guard result.status == 0 else { throw TestBedError("syncctl apply \(file): \(result.stderr)") }
    }

    /// Sets KubeVirt migration settings.
    public func setMigrations(_ settings: JSONValue) async throws {
        _ = try await admin.patch(
            Kinds.kubeVirt, namespace: "kubevirt", name: "kubevirt",
            ["spec": ["configuration": ["migrations": settings]]])
    }

    /// The migration `syncctl migrate` said it created.
    public func createdMigration(_ result: ProcessResult) async throws -> JSONValue {
        guard let line = result.stdout.split(separator: "\n").first(where: { $0.hasSuffix(" created") }),
            let name = line.split(separator: "/").last?.split(separator: " ").first
        else { throw TestBedError("syncctl migrate printed no name: \(result.stdout)\(result.stderr)") }
        return try await admin.get(Kinds.migration, name: String(name))
    }

    /// Waits until the VMI's open migration reaches `phase`; returns it.
    public func waitForMigration(of vmi: String, phase: String, timeout: TimeInterval = 60) async throws -> JSONValue {
        try await waitFor("migration of \(vmi) \(phase)", timeout: timeout) {
            let items = try await admin.list(Kinds.migration, namespace: "default")["items"]?.array ?? []
            return items.first { $0["spec"]?["vmiName"]?.string == vmi && $0["status"]?["phase"]?.string == phase }
        }
    }

    /// Waits until the VM's VMI runs; returns its node.
    /// How a domain looks on every node (`virsh domstate --reason`, and its block errors), for a failure message.
    public func guestReport(_ domain: String) async -> String {
        var lines: [String] = []
        for node in bed.report.nodes where nodeNames.contains(node.name) {
            let state = try? await TestSupport.run("/usr/bin/virsh", ["-c", node.uri, "domstate", "--reason", domain])
            let errors = try? await TestSupport.run("/usr/bin/virsh", ["-c", node.uri, "domblkerror", domain])
            let text = [state?.stdout, state?.stderr, errors?.stdout].compactMap {
                $0?.trimmingCharacters(in: .whitespacesAndNewlines)
            }.filter { !$0.isEmpty }
            lines.append("\(node.name): \(text.joined(separator: " / "))")
        }
        return lines.joined(separator: "; ")
    }

    public func waitForRunning(_ vm: String, timeout: TimeInterval = 90) async throws -> String {
        try await waitFor("\(vm) Running", timeout: timeout) {
            let vmi = try await admin.get(Kinds.virtualMachineInstance, name: vm)
            return vmi["status"]?["phase"]?.string == "Running" ? vmi["status"]?["nodeName"]?.string : nil
        }
    }
}

/// Manifests the migration tests apply.
public enum MigrationManifests {
    public static func storageClasses(sharedDirectory: String) -> String {
        """
        apiVersion: storage.k8s.io/v1
        kind: StorageClass
        metadata:
          name: local
        directory: /var/lib/vmsync/images
        shared: false
        ---
        apiVersion: storage.k8s.io/v1
        kind: StorageClass
        metadata:
          name: shared
        directory: \(sharedDirectory)
        shared: true
        """
    }

    /// A DataVolume `name` copied from the disk image `image` (64 MiB) on `storageClass`.
    public static func dataVolume(_ name: String, storageClass: String, image: String) -> String {
        """
        apiVersion: cdi.kubevirt.io/v1beta1
        kind: DataVolume
        metadata:
          name: \(name)
        spec:
          source:
            http:
              url: file://\(image)
          storage:
            storageClassName: \(storageClass)
            resources:
              requests:
                storage: 64Mi
        """
    }

    /// The seed's VirtualMachine with what it needs: a default local StorageClass and its DataVolume made from the
    /// tiny guest's bootable disk image.
    public static func seedVM(image: String) -> String {
        """
        apiVersion: storage.k8s.io/v1
        kind: StorageClass
        metadata:
          name: local
          annotations:
            storageclass.kubernetes.io/is-default-class: "true"
        directory: /var/lib/vmsync/images
        shared: false
        ---
        \(dataVolume("example-decentralized-lm-vm-dv", storageClass: "local", image: image))
        ---
        \(seedVirtualMachine)
        """
    }

    /// A VM booting the tiny guest's disk image from a DataVolume on `storageClass`.
    public static func bootableVM(_ name: String, storageClass: String, image: String, extraSpec: String = "") -> String
    {
        """
        \(dataVolume("\(name)-dv", storageClass: storageClass, image: image))
        ---
        apiVersion: kubevirt.io/v1
        kind: VirtualMachine
        metadata:
          name: \(name)
        spec:
          runStrategy: Always
          template:
            spec:
              domain:
                devices:
                  disks:
                  - name: disk0
                    disk:
                      bus: virtio
                resources:
                  requests:
                    memory: 128Mi
        \(extraSpec.split(separator: "\n", omittingEmptySubsequences: false).map { "      " + $0 }.joined(separator: "\n"))
              volumes:
              - name: disk0
                dataVolume:
                  name: \(name)-dv
        """
    }
}

/// Two clusters of one bed made peers for decentralized migration, and the seed's manifests for each side.
public enum CrossCluster {
    /// The seed's VM name (source and target keep it).
    public static let vmName = "example-decentralized-lm-vm"

    /// Both clusters enable the feature gate and trust each other: each one's `kubevirt-ca` (exported through its API
    /// by `syncctl ca export`) imported into the other's `kubevirt-external-ca` (`syncctl ca import`).
    public static func pair(_ first: BedCluster, _ second: BedCluster) async throws {
        for cluster in [first, second] { try await enableGate(cluster) }
        for (from, to) in [(first, second), (second, first)] {
            let exported = try await from.syncctl(["ca", "export"])
            guard exported.status == 0 else { throw TestBedError("syncctl ca export: \(exported.stderr)") }
            let imported = try await to.syncctl(["ca", "import", "-f", "-"], input: exported.stdout)
            guard imported.status == 0 else {
                throw TestBedError("syncctl ca import: \(imported.stdout)\(imported.stderr)")
            }
        }
    }

    /// The target side of seed 001: a StorageClass `other` (another directory), the seed's blank target DataVolume on
    /// it (its placeholder filled) and the seed's target VM (`WaitAsReceiver`, restore run strategy Always).
    public static func targetManifests(namespace: String = "default") -> String {
        let dataVolume = seedDataVolume.replacingOccurrences(of: "<other storage class>", with: "other")
            .replacingOccurrences(
                of: "  name: example-decentralized-lm-vm-dv\n",
                with: "  name: example-decentralized-lm-vm-dv\n  namespace: \(namespace)\n")
        let vm = seedVirtualMachine.replacingOccurrences(of: "runStrategy: Always", with: "runStrategy: WaitAsReceiver")
            .replacingOccurrences(
                of: "metadata:\n  name: example-decentralized-lm-vm\n",
                with:
                    "metadata:\n  name: example-decentralized-lm-vm\n  namespace: \(namespace)\n  annotations:\n    kubevirt.io/restore-run-strategy: Always\n"
            )
        return """
            apiVersion: storage.k8s.io/v1
            kind: StorageClass
            metadata:
              name: other
            directory: /var/lib/vmsync/other-images
            shared: false
            ---
            \(dataVolume)
            ---
            \(vm)
            """
    }

    /// The seed's two VirtualMachineInstanceMigrations: the target's (`receive`) and the source's (`sendTo` the target
    /// cluster's sync address).
    public static func migrations(id: String, connectURL: String, targetNamespace: String = "default") -> (
        target: String, source: String
    ) {
        (
            """
            apiVersion: kubevirt.io/v1
            kind: VirtualMachineInstanceMigration
            metadata:
              name: example-target-migration
              namespace: \(targetNamespace)
            spec:
              receive:
                migrationID: \(id)
              vmiName: \(vmName)
            """,
            """
            apiVersion: kubevirt.io/v1
            kind: VirtualMachineInstanceMigration
            metadata:
              name: example-source-migration
            spec:
              sendTo:
                connectURL: "\(connectURL)"
                migrationID: \(id)
              vmiName: \(vmName)
            """
        )
    }
}

extension CrossCluster {
    /// The feature gate on in `cluster`'s KubeVirt configuration.
    public static func enableGate(_ cluster: BedCluster) async throws {
        _ = try await cluster.admin.patch(
            Kinds.kubeVirt, namespace: "kubevirt", name: "kubevirt",
            ["spec": ["configuration": ["developerConfiguration": ["featureGates": ["DecentralizedLiveMigration"]]]]])
    }

    /// Renews `cluster`'s CA now (`syncctl ca rotate --force` on its PKI directory; the old CA stays trusted through
    /// the overlap), and waits until the controller publishes it in `kubevirt-ca` — it looks when its trust inbox
    /// changes, so `nudge` (the other cluster) exports its CA into it — then hands the new bundle to `nudge`.
    public static func rotateCA(of cluster: BedCluster, exchangingWith nudge: BedCluster) async throws {
        func ownCAs() async throws -> Int {
            let map = try await cluster.admin.get(Kinds.configMap, namespace: "kubevirt", name: "kubevirt-ca")
            return (map["data"]?["ca-bundle"]?.string ?? "").components(separatedBy: "BEGIN CERTIFICATE").count - 1
        }
        let before = try await ownCAs()
        let rotated = try await run(
            siblingBinaries.appendingPathComponent("syncctl").path,
            ["ca", "rotate", "--force", "--dir", cluster.pki.url.path])
        guard rotated.status == 0 else { throw TestBedError("syncctl ca rotate: \(rotated.stdout)\(rotated.stderr)") }
        for (from, to) in [(nudge, cluster), (cluster, nudge)] {
            if from === cluster {
                _ = try await cluster.waitFor("\(cluster.name)'s renewed CA published", timeout: 30) {
                    try await ownCAs() > before ? true : nil
                }
            }
            let exported = try await from.syncctl(["ca", "export"])
            guard exported.status == 0 else { throw TestBedError("syncctl ca export: \(exported.stderr)") }
            let imported = try await to.syncctl(["ca", "import", "-f", "-"], input: exported.stdout)
            guard imported.status == 0 else {
                throw TestBedError("syncctl ca import: \(imported.stdout)\(imported.stderr)")
            }
        }
    }

    /// `cluster` takes other clusters' migrations through its gateway (its KubeVirt `crossClusterGateway`); the cluster
    /// must have been started with a `gatewayPort`.
    public static func useGateway(_ cluster: BedCluster) async throws {
        guard let address = cluster.gatewayAddress else {
            throw TestBedError("cluster \(cluster.name) serves no gateway: start it with a gatewayPort")
        }
        _ = try await cluster.admin.patch(
            Kinds.kubeVirt, namespace: "kubevirt", name: "kubevirt",
            ["spec": ["configuration": ["crossClusterGateway": .string(address)]]])
    }

    /// A clean slate on every node of `bed` (before a test, whatever an earlier one left): no domain, no disk image.
    public static func clearNodes(_ bed: TestBed) async throws {
        for node in bed.report.nodes {
            let names = try await run("/usr/bin/virsh", ["-c", node.uri, "list", "--all", "--name"]).stdout
            for name in names.split(separator: "\n").map(String.init) where !name.isEmpty {
                _ = try? await run("/usr/bin/virsh", ["-c", node.uri, "destroy", name])
                _ = try? await run("/usr/bin/virsh", ["-c", node.uri, "undefine", name])
            }
            for directory in ["images", "other-images"] {
                try? FileManager.default.removeItem(atPath: node.localStorage + "/" + directory)
            }
        }
    }
}

extension CrossCluster {
    /// One decentralized move of `vm` (in namespace default) from `source`'s cluster to `target`'s: the target's
    /// receiving VM made first (a halted VM an earlier move left there, and its DataVolume, removed), then both VMIMs
    /// (`names`: source's, target's) created through the API. Returns when the first was created and the later of the
    /// two Succeeded timestamps the controllers stored; a failure on either side is thrown with the reason.
    public static func move(
        _ vm: String, from source: BedCluster, to target: BedCluster, id: String,
        names: (source: String, target: String)
    ) async throws -> (started: Date, ended: Date) {
        _ = try? await target.admin.delete(Kinds.virtualMachine, name: vm)
        _ = try? await target.admin.delete(Kinds.dataVolume, name: "\(vm)-dv")
        let disk = target.bed.node(target.nodeNames[0]).localStorage + "/other-images/default-\(vm)-dv.qcow2"
        _ = try await target.waitFor("the earlier VM and disk gone on \(target.name)", timeout: 60) {
            () async throws -> Bool? in
            if FileManager.default.fileExists(atPath: disk) { return nil }
            do {
                _ = try await target.admin.get(Kinds.virtualMachineInstance, name: vm)
                return nil
            } catch {
                return (error as? APIError)?.code == 404 ? true : nil
            }
        }
        try await target.apply(targetManifests(), as: "target-\(id).yaml")
        _ = try await target.waitFor("the receiving VMI on \(target.name)") {
            let vmi = try await target.admin.get(Kinds.virtualMachineInstance, name: vm)
            return vmi["status"]?["phase"] == "WaitingForSync" ? true : nil
        }
        let targetMigration: JSONValue = [
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
            "metadata": ["name": .string(names.target), "namespace": "default"],
            "spec": ["receive": ["migrationID": .string(id)], "vmiName": .string(vm)],
        ]
        let sourceMigration: JSONValue = [
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
            "metadata": ["name": .string(names.source), "namespace": "default"],
            "spec": [
                "sendTo": ["migrationID": .string(id), "connectURL": .string(target.syncAddress ?? "")],
                "vmiName": .string(vm),
            ],
        ]
        let started = Date()
        _ = try await target.admin.create(Kinds.migration, targetMigration)
        _ = try await source.admin.create(Kinds.migration, sourceMigration)
        var ended = started
        for (cluster, name) in [(source, names.source), (target, names.target)] {
            let succeeded = try await cluster.waitFor("\(name) Succeeded", timeout: 300) { () async throws -> Date? in
                let vmim = try await cluster.admin.get(Kinds.migration, name: name)
                if vmim["status"]?["phase"] == "Failed" {
                    throw TestBedError(
                        "\(name) failed: \(vmim["status"]?["migrationState"]?["failureReason"]?.string ?? "no reason")")
                }
                return (vmim["status"]?["phaseTransitionTimestamps"]?.array ?? []).first {
                    $0["phase"] == "Succeeded"
                }?["phaseTransitionTimestamp"]?.string.flatMap(Migration.parseTimestamp)
            }
            ended = max(ended, succeeded)
        }
        return (started, ended)
    }
}
