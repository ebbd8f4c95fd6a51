import ClusterAPI
public import ClusterClient
import ControllerRuntime
import Foundation
import Hypervisor
public import Logging
public import TLSTransport

/// The node daemon: registers its Node (capacity, addresses, CPU-model labels), renews its heartbeat, runs the VMIs
/// scheduled to it through the local libvirt, reports their status, re-adopts domains that already run, and keeps
/// DataVolume images on this node in step with their objects.
public actor NodeAgent {
    /// What the agent needs to know about its node.
    public struct Configuration: Sendable {
        public var name: String
        public var address: String
        public var libvirtURI: String
        /// Where serial console sockets of the guests go.
        public var runDirectory: String
        public var heartbeatInterval: Duration
        /// Memory offered to VMs (default: the machine's).
        public var memoryBytes: UInt64?
        /// Where the migration tunnel exit listens (nil: this node takes no incoming migrations).
        public var tunnelListen: Endpoint?
        /// Where migration sockets go: the same path on every node.
        public var migrationDirectory: String
        /// The nice value of the threads that carry migration streams (0, the default: the agent's own): above 0
        /// guests come first when the node's CPUs are busy (on 2 cores, 10 measured no better than 0).
        public var tunnelNice: Int32
        /// Where API input may make this node read and write (storage roots, import directories).
        public var hostPaths: HostPaths

        public init(
            name: String, address: String, libvirtURI: String, runDirectory: String, heartbeatInterval: Duration = .seconds(10), memoryBytes: UInt64? = nil,
            tunnelListen: Endpoint? = nil, migrationDirectory: String = "/var/lib/vmsync/migrations", tunnelNice: Int32 = 0,
            hostPaths: HostPaths = HostPaths()
        ) {
            self.hostPaths = hostPaths
            self.name = name
            self.address = address
            self.libvirtURI = libvirtURI
            self.runDirectory = runDirectory
            self.heartbeatInterval = heartbeatInterval
            self.memoryBytes = memoryBytes
            self.tunnelListen = tunnelListen
            self.migrationDirectory = migrationDirectory
            self.tunnelNice = tunnelNice
        }

        /// The advertised tunnel endpoint, once bound ("host:port").
        var tunnelEndpoint: String?
    }

    var configuration: Configuration
    let client: APIClient
    /// The node's identity and trust, for the migration tunnels.
    let provider: TLSContextProvider
    let logger: Logger
    var libvirt: Connection?
    /// A second libvirt connection migration jobs poll and abort through (their migrate calls run on `libvirt`).
    var monitorConnection: Connection?
    var volumes: Volumes { Volumes(client: client, hostPaths: configuration.hostPaths) }
    var tunnelExit: TunnelExit?
    /// The threads migration streams run on (entries and exit), at `configuration.tunnelNice`.
    var streamThreads: StreamThreads?
    var migrationPaths: MigrationPaths { MigrationPaths(directory: configuration.migrationDirectory) }
    /// Incoming migrations prepared here, by migration uid.
    var prepared: [String: PreparedTarget] = [:]
    var preparing: Set<String> = []
    /// Outgoing migrations running here, by migration uid.
    var outgoing: [String: OutgoingMigration] = [:]
    /// Migrations found Running after a restart of this agent and failed.
    var restartFailed: Set<String> = []
    /// Domains that just left this node by migration, and when.
    var handedOver: [String: Date] = [:]
    /// Incoming migrations whose tunnel routes this process opened (a restarted agent has none).
    var routed: Set<String> = []
    /// Migrations from this node whose stale local copies this process has looked after.
    var sourceCleaned: Set<String> = []
    /// Incoming migrations this process failed (its preparation failed, or its previous process had begun it).
    var givenUp: Set<String> = []
    /// Since when the guest of an incoming migration has been seen running here, by migration uid.
    var liveSince: [String: ContinuousClock.Instant] = [:]

    /// Where outgoing migrations run: child tasks of the agent's controllers.
    var senders: Senders?
    /// The migration figures this node records (made at init, from the metrics factory in force).
    let jobMetrics = MigrationJobMetrics()

    func setSenders(_ senders: Senders) { self.senders = senders }

    /// The VMIs on this node, as the cluster API last said (filled by an informer).
    let instances = Cache<VirtualMachineInstance>()
    /// Migrations from this node and to it.
    let outgoingMigrations = Cache<VirtualMachineInstanceMigration>()
    let incomingMigrations = Cache<VirtualMachineInstanceMigration>()

    public init(configuration: Configuration, client: APIClient, provider: TLSContextProvider, logger: Logger = Logger(label: "vmsync.node-agent")) {
        self.configuration = configuration
        self.client = client
        self.provider = provider
        self.logger = logger
    }

    /// The local libvirtd's socket (from the URI's `socket=` parameter, else libvirt's default).
    var libvirtSocketPath: String {
        if let query = URLComponents(string: configuration.libvirtURI)?.queryItems, let socket = query.first(where: { $0.name == "socket" })?.value {
            return socket
        }
        return "/var/run/libvirt/libvirt-sock"
    }

    /// Runs until cancelled.
    public func run() async throws {
        let libvirt = try await Connection.open(configuration.libvirtURI)
        self.libvirt = libvirt
        monitorConnection = try await Connection.open(configuration.libvirtURI)
        let threads = try await StreamThreads.start(nice: configuration.tunnelNice)
        streamThreads = threads
        if let listen = configuration.tunnelListen {
            let exit = try await TunnelExit.start(
                on: listen, provider: provider, peers: PeerPolicy(allowedRoles: [.node]), routes: TunnelRoutingTable(), group: threads.group, logger: logger)
            tunnelExit = exit
            if case .tcp(let host, let port) = exit.endpoint { configuration.tunnelEndpoint = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
        }
        // A controller that is not up yet (or restarting) is waited for, as a kubelet waits for its API server.
        var delay = Duration.milliseconds(200)
        while true {
            do {
                try await register(libvirt)
                break
            } catch let error as APIError where Self.isTransient(error) && !Task.isCancelled {
                logger.warning("registration failed; retrying", metadata: ["error": "\(error)"])
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
            }
        }
        try FileManager.default.createDirectory(atPath: configuration.runDirectory, withIntermediateDirectories: true)
        loadPrepared()
        let controllers = try AgentControllers(agent: self, client: client, node: configuration.name, logger: logger)
        let events = try await libvirt.lifecycleEvents()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.heartbeatLoop() }
            group.addTask { await controllers.run() }
            group.addTask {
                // What libvirt says happened to a domain brings its VMI back to the reconciler; a domain no VMI here
                // knows is looked at as a possible orphan.
                for await event in events { await controllers.domainChanged(event.domain) }
            }
            await group.next()
            // Outgoing jobs are aborted (the guests stay here) before their senders are waited for.
            for migration in outgoing.values { await migration.requestAbort() }
            group.cancelAll()
        }
        for migration in outgoing.values { await migration.requestAbort() }
        await tunnelExit?.close()
        await threads.shutdown()
        await monitorConnection?.close()
        await libvirt.close()
    }

    // MARK: Node

    private func register(_ libvirt: Connection) async throws {
        let capabilities = try await libvirt.cpuCapabilities()
        var labels = capabilities.nodeLabels()
        labels[Resources.hostnameLabel] = configuration.name
        labels["kubevirt.io/schedulable"] = "true"
        let memory = configuration.memoryBytes ?? Self.machineMemory()
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        let node: JSONValue = ["apiVersion": "v1", "kind": "Node", "metadata": ["name": .string(configuration.name), "labels": JSONValue(labels)]]
        var registered = false
        do {
            _ = try await client.create(Kinds.node, node)
        } catch {
            guard error.code == 409 else { throw error }
            registered = true
        }
        if registered {
            // Registered before: refresh the labels, keep what the operator set (taints, other labels).
            let existing = try await client.get(Kinds.node, name: configuration.name)
            let stale = (existing["metadata"]?["labels"]?.stringMap ?? [:]).keys.filter {
                $0.hasPrefix("cpu-model") || $0.hasPrefix("host-model") || $0.hasPrefix("cpu-feature")
            }
            var patch: [String: JSONValue] = [:]
            for key in stale { patch[key] = .null }
            for (key, value) in labels { patch[key] = .string(value) }
            _ = try await client.patch(Kinds.node, name: configuration.name, ["metadata": ["labels": .object(patch)]])
        }
        let status: JSONValue = [
            "capacity": ["cpu": .string(String(cpus)), "memory": .string("\(memory >> 20)Mi")],
            "allocatable": ["cpu": .string(String(cpus)), "memory": .string("\(memory >> 20)Mi")],
            "addresses": [["type": "InternalIP", "address": .string(configuration.address)], ["type": "Hostname", "address": .string(configuration.name)]],
            "nodeInfo": ["kubeletVersion": "vmsync-node-agent", "architecture": "amd64", "operatingSystem": "linux"],
            "libvirtURI": .string(configuration.libvirtURI),
            "runDirectory": .string(configuration.runDirectory),
            "tunnelEndpoint": configuration.tunnelEndpoint.map(JSONValue.string) ?? .null,
        ]
        _ = try await client.patch(Kinds.node, name: configuration.name, ["status": status], status: true)
        try await postReady()
        logger.info("node registered", metadata: ["node": "\(configuration.name)", "labels": "\(labels.count)"])
    }

    private func readyCondition() -> JSONValue {
        var condition = Resources.condition("Ready", true, reason: "AgentReady", message: "node-agent is posting ready status")
        condition["lastHeartbeatTime"] = .string(Resources.now())
        return condition
    }

    private func heartbeatLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.heartbeatInterval)
            do {
                try await postReady()
            } catch {
                logger.warning("heartbeat failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Puts a fresh Ready condition among the node's conditions (the controller keeps others there, e.g. a drain's
    /// `Drained`): read, merged by type, and written only over the version read.
    private func postReady() async throws(APIError) {
        for _ in 0..<5 {
            let node = try await client.get(Kinds.node, name: configuration.name)
            var conditions = (node["status"]?["conditions"]?.array ?? []).filter { $0["type"]?.string != "Ready" }
            conditions.insert(readyCondition(), at: 0)
            do {
                _ = try await client.patch(Kinds.node, name: configuration.name, [
                    "metadata": ["resourceVersion": node["metadata"]?["resourceVersion"] ?? .null],
                    "status": ["conditions": .array(conditions)],
                ], status: true)
                return
            } catch where error.code == 409 {
                continue
            }
        }
        throw APIError.conflict("node \(configuration.name) kept changing; its heartbeat was not written")
    }

    static func machineMemory() -> UInt64 {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemTotal:") }),
            let kib = UInt64(line.split(separator: " ").dropFirst().first ?? "")
        else { return 4 << 30 }
        return kib * 1024
    }

    // MARK: VMIs

    /// Once the informers have listed: prepared targets whose migrations are gone are undone, and domains no VMI
    /// here claims are looked at.
    func afterSync() async {
        let present = Set((outgoingMigrations.unordered + incomingMigrations.unordered).compactMap { $0.metadata.uid })
        for uid in prepared.keys where !present.contains(uid) { await cleanupTarget(uid: uid, failed: true) }
        await sweepOrphans()
    }

    /// Removes or holds domains that no VMI on this node claims (`removeOrphans`).
    func sweepOrphans() async {
        await removeOrphans(claimed: Set(instances.unordered.map { Resources.domainName(namespace: $0.key.namespace ?? "default", name: $0.key.name) }))
    }

    /// One VMI on this node: its domain brought to what the VMI asks. A failure that may pass (the API or libvirt
    /// unreachable, a DataVolume or StorageClass not there yet) is a `Synchronized` condition and a retry with backoff;
    /// only a VMI that can never run as asked (refused input, a spec libvirt rejects) fails.
    func syncInstance(_ key: ObjectKey) async throws -> ReconcileResult {
        guard let vmi = instances.envelope(key) else { return .done }
        do {
            try await reconcileOrThrow(vmi)
        } catch {
            let message: String = (error as? APIError)?.message ?? (error as? HypervisorError)?.description ?? "\(error)"
            logger.warning("VMI reconcile failed", metadata: ["vmi": "\(key)", "error": "\(error)", "final": "\(Self.isFinal(error))"])
            if Self.isFinal(error) {
                await patchStatus(vmi, ["phase": "Failed", "reason": "DomainFailed", "message": .string(message)])
                return .done
            }
            await patchStatus(vmi, ["conditions": [Resources.condition("Synchronized", false, reason: "SyncFailed", message: message)]])
            throw error
        }
        let conditions = vmi["status"]?["conditions"]?.array ?? []
        let unsynchronized = conditions.contains { (condition: JSONValue) -> Bool in
            condition["type"]?.string == "Synchronized" && condition["status"]?.string == "False"
        }
        if unsynchronized {
            await patchStatus(vmi, ["conditions": [Resources.condition("Synchronized", true, reason: "Synchronized")]])
        }
        // Level-based: a VMI that has not ended is looked at again now and then, whatever the events said.
        let phase = vmi["status"]?["phase"]?.string
        return phase == "Succeeded" || phase == "Failed" ? .done : .requeue(after: .seconds(30))
    }

    /// Whether a failure to run a VMI is for good: the input is refused (400, 403, 422) or libvirt rejects the
    /// domain itself. Anything else may pass and is retried.
    static func isFinal(_ error: any Error) -> Bool {
        if let error = error as? APIError { return [400, 403, 422].contains(error.code) }
        if let error = error as? HypervisorError { return [.invalidSpec, .invalidConfiguration, .unsupported].contains(error.code) }
        return false
    }

    private func reconcileOrThrow(_ vmi: JSONValue) async throws {
        guard let libvirt else { return }
        let namespace = vmi["metadata"]?["namespace"]?.string ?? "default"
        let name = vmi["metadata"]?["name"]?.string ?? ""
        let domainName = Resources.domainName(namespace: namespace, name: name)
        let phase = vmi["status"]?["phase"]?.string ?? "Pending"
        let existing = try? await libvirt.domain(named: domainName)
        let state = try? await existing?.state()

        await abortIfRequested(vmi)
        if isMigratingAway(vmi) { return }
        if migrationFromHereUnfinished(vmi), state != .running && state != .paused && state != .blocked { return }
        if vmi["metadata"]?["deletionTimestamp"] != nil {
            if let existing {
                try? await existing.destroy()
                try? await existing.undefine()
                logger.info("domain stopped for deleted VMI", metadata: ["vmi": "\(namespace)/\(name)"])
            }
            for path in ephemeralFiles(of: vmi, domainName: domainName) { try? FileManager.default.removeItem(atPath: path) }
            if phase != "Succeeded" && phase != "Failed" {
                await patchStatus(vmi, ["phase": "Succeeded", "reason": "Deleted", "message": "the VMI was deleted; its domain is gone"])
            }
            return
        }
        switch phase {
        case "Scheduled", "Running", "Unknown":
            if let existing, state == .running || state == .paused || state == .blocked {
                // Running already (re-adopted after an agent restart, or started by the previous pass).
                if phase != "Running" || vmi["status"]?["nodeName"]?.string != configuration.name {
                    await patchStatus(vmi, ["phase": "Running", "conditions": [Resources.condition("Ready", true, reason: "DomainRunning")]])
                }
                _ = existing
                return
            }
            if phase == "Running", existing != nil {
                // It ran here and stopped on its own.
                await patchStatus(vmi, ["phase": state == .shutOff ? "Succeeded" : "Failed", "reason": .string("Domain\(state?.rawValue.capitalized ?? "Gone")"),
                                        "conditions": [Resources.condition("Ready", false, reason: "DomainStopped")]])
                return
            }
            try await start(vmi, domainName: domainName, libvirt: libvirt, existing: existing)
        default:
            return
        }
    }

    private func start(_ vmi: JSONValue, domainName: String, libvirt: Connection, existing: Domain?) async throws {
        let namespace = vmi["metadata"]?["namespace"]?.string ?? "default"
        var disks: [String: (path: String, format: String)] = [:]
        var volumeStatus: [JSONValue] = []
        for volume in vmi["spec"]?["volumes"]?.array ?? [] {
            guard let volumeName = volume["name"]?.string else { continue }
            let dataVolumeName = volume["dataVolume"]?["name"]?.string ?? volume["persistentVolumeClaim"]?["claimName"]?.string
            if let dataVolumeName {
                let dataVolume = try await client.get(Kinds.dataVolume, namespace: namespace, name: dataVolumeName)
                let disk = try await volumes.disk(for: dataVolume)
                try await volumes.ensure(disk, source: dataVolume["spec"]?["source"])
                disks[volumeName] = (disk.path, disk.format)
                let bytes = (try? await Volumes.virtualSize(disk.path)) ?? disk.bytes
                volumeStatus.append([
                    "name": .string(volumeName), "phase": "Ready", "reason": "VolumeReady",
                    "persistentVolumeClaimInfo": ["claimName": .string(dataVolumeName), "capacity": ["storage": .string("\(bytes)")],
                                                  "storageClass": .string(disk.storageClass), "shared": .bool(disk.shared), "path": .string(disk.path)],
                ])
            } else if let capacity = Quantity(volume["emptyDisk"]?["capacity"])?.bytes {
                let path = emptyDiskPath(domainName: domainName, volume: volumeName)
                if !FileManager.default.fileExists(atPath: path) { try await Volumes.createEmpty(at: path, bytes: capacity) }
                disks[volumeName] = (path, "qcow2")
            } else if let cloudInit = volume["cloudInitNoCloud"] {
                let path = cloudInitPath(domainName: domainName, volume: volumeName)
                try await Volumes.cloudInitDisk(
                    at: path, userData: try DomainMapping.userData(of: cloudInit, volume: volumeName),
                    metaData: DomainMapping.metaData(of: vmi), networkData: cloudInit["networkData"]?.string)
                disks[volumeName] = (path, "raw")
            } else if volume["containerDisk"] != nil {
                throw APIError.badRequest("volume \"\(volumeName)\": containerDisk volumes are not supported by vmsync nodes")
            }
        }
        // A kernel and initrd to boot directly are host files: only from an import directory.
        let container = vmi["spec"]?["domain"]?["firmware"]?["kernelBoot"]?["container"]
        for field in ["kernelPath", "initrdPath"] {
            if let path = container?[field]?.string { _ = try configuration.hostPaths.bootFile(path, field: "spec.domain.firmware.kernelBoot.container.\(field)") }
        }
        let kubeVirt = try? await client.get(Kinds.kubeVirt, namespace: "kubevirt", name: "kubevirt")
        let spec = try DomainMapping.spec(
            for: vmi, disks: disks, serialSocket: "\(configuration.runDirectory)/\(domainName).serial",
            clusterCPUModel: kubeVirt?["spec"]?["configuration"]?["cpuModel"]?.string)
        try await libvirt.checkCPU(of: spec)
        if let existing { try? await existing.undefine() }
        let domain = try await libvirt.define(spec)
        try await domain.start()
        logger.info("domain started", metadata: ["domain": "\(domainName)"])
        await patchStatus(vmi, [
            "phase": "Running", "reason": .null, "message": .null,
            "conditions": [Resources.condition("Ready", true, reason: "DomainRunning")],
            "volumeStatus": .array(volumeStatus),
            "guestOSInfo": ["name": "vmsync tiny guest"],
            "interfaces": .array(Self.interfaceStatus(try DomainMapping.interfaces(of: vmi))),
            "launcherDomain": .string(domainName),
            "serialConsole": .string(spec.serialSocket ?? ""),
        ])
    }

    func emptyDiskPath(domainName: String, volume: String) -> String {
        "\(configuration.runDirectory)/\(domainName)-\(volume).qcow2"
    }

    func cloudInitPath(domainName: String, volume: String) -> String {
        "\(configuration.runDirectory)/\(domainName)-\(volume)-cidata.img"
    }

    /// Files that live and die with the VMI on this node: emptyDisk images and cloud-init seeds.
    private func ephemeralFiles(of vmi: JSONValue, domainName: String) -> [String] {
        (vmi["spec"]?["volumes"]?.array ?? []).compactMap { volume in
            guard let name = volume["name"]?.string else { return nil }
            if volume["emptyDisk"] != nil { return emptyDiskPath(domainName: domainName, volume: name) }
            if volume["cloudInitNoCloud"] != nil { return cloudInitPath(domainName: domainName, volume: name) }
            return nil
        }
    }

    /// KubeVirt's `status.interfaces` for interfaces on the masquerade network: the guest's address there is the one
    /// the node's NAT hands the first interface by DHCP.
    static func interfaceStatus(_ interfaces: [DomainMapping.PlannedInterface]) -> [JSONValue] {
        interfaces.enumerated().map { index, interface in
            var entry: JSONValue = ["name": .string(interface.name), "mac": .string(interface.mac), "infoSource": "domain", "queueCount": 1]
            if index == 0 {
                entry["ipAddress"] = .string(DomainMapping.masqueradeNetwork.guestAddress)
                entry["ipAddresses"] = [.string(DomainMapping.masqueradeNetwork.guestAddress)]
            }
            return entry
        }
    }

    /// Writes `changes` into the VMI's status. Conditions are merged into the VMI's own by type and the list is
    /// written only over the version it was merged into (a merge patch writes the list whole, and the controller
    /// writes conditions of its own): a conflict reads the VMI again and merges anew.
    private func patchStatus(_ vmi: JSONValue, _ changes: JSONValue) async {
        let namespace = vmi["metadata"]?["namespace"]?.string ?? "default"
        let name = vmi["metadata"]?["name"]?.string ?? ""
        var current = vmi
        for _ in 0..<5 {
            var patch: JSONValue = ["status": changes]
            if let conditions = changes["conditions"]?.array {
                var merged = current["status"]?["conditions"]
                for condition in conditions { merged = Resources.setting(condition, in: merged) ?? merged }
                patch["status"]?["conditions"] = merged
                patch["metadata"] = ["resourceVersion": current["metadata"]?["resourceVersion"] ?? .null]
            }
            do {
                _ = try await client.patch(Kinds.virtualMachineInstance, namespace: namespace, name: name, patch, status: true)
                return
            } catch where error.code == 409 {
                guard let fresh = try? await client.get(Kinds.virtualMachineInstance, namespace: namespace, name: name) else { break }
                current = fresh
            } catch {
                logger.warning("VMI status write failed", metadata: ["vmi": "\(namespace)/\(name)", "error": "\(error)"])
                return
            }
        }
        logger.warning("VMI status write failed: the VMI kept changing", metadata: ["vmi": "\(namespace)/\(name)"])
    }
}
