import ClusterAPI
public import ClusterClient
import ControllerRuntime
import Foundation
import Hypervisor
public import Logging
public import ServiceLifecycle
public import TLSTransport

/// The node daemon: registers its Node (capacity, addresses, CPU-model labels), renews its heartbeat, runs the VMIs
/// scheduled to it through the local libvirt, reports their status, re-adopts domains that already run, and keeps
/// DataVolume images on this node in step with their objects.
///
/// As a service it runs until the service group shuts down or the task is cancelled: outgoing migration jobs are
/// aborted (their guests stay here) and their senders waited for before the tunnel exit and libvirt connections close.
public actor NodeAgent: Service {
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
            name: String, address: String, libvirtURI: String, runDirectory: String,
            heartbeatInterval: Duration = .seconds(10), memoryBytes: UInt64? = nil,
            tunnelListen: Endpoint? = nil, migrationDirectory: String = "/var/lib/vmsync/migrations",
            tunnelNice: Int32 = 0,
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
    /// The cluster's KubeVirt configuration (filled by an informer).
    let kubeVirts = Cache<KubeVirt>()

    /// The KubeVirt configuration in force, if there is one.
    var kubeVirt: KubeVirt? { kubeVirts[ObjectKey(namespace: KubeVirt.namespace, name: KubeVirt.name)] }

    public init(
        configuration: Configuration, client: APIClient, provider: TLSContextProvider,
        logger: Logger = Logger(label: "vmsync.node-agent")
    ) {
        self.configuration = configuration
        self.client = client
        self.provider = provider
        self.logger = logger
        self.startingTrust = provider.trust
    }

    /// The trust bundle the agent started with (`--ca`); the cluster's `kubevirt-ca` is added to it.
    let startingTrust: TrustBundle

    /// The cluster's `kubevirt-ca` bundle into this node's trust, beside the bundle it started with (so a rotated or
    /// imported CA reaches the tunnels without a restart). An imported CA vouches here only where a migration paired
    /// with its cluster names it (`PeerPolicy.cluster`). A bundle that does not parse changes nothing.
    func followTrust(_ configMap: ConfigMap) {
        guard let pem = configMap.data?[ConfigMap.caBundleKey] else { return }
        do {
            let trust = TrustBundle(startingTrust.certificates + (try TrustBundle(pem: pem)).certificates)
            guard trust != provider.trust else { return }
            try provider.reload(trust: trust)
            logger.info(
                "trust bundle follows the cluster's kubevirt-ca", metadata: ["CAs": "\(trust.certificates.count)"])
        } catch {
            logger.warning("the cluster's kubevirt-ca bundle is not usable", metadata: ["error": "\(error)"])
        }
    }

    /// The local libvirtd's socket (from the URI's `socket=` parameter, else libvirt's default).
    var libvirtSocketPath: String {
        if let query = URLComponents(string: configuration.libvirtURI)?.queryItems,
            let socket = query.first(where: { $0.name == "socket" })?.value
        {
            return socket
        }
        return "/var/run/libvirt/libvirt-sock"
    }

    /// Runs until cancelled or the service group shuts down.
    public func run() async throws {
        try await cancelWhenGracefulShutdown { try await self.runUntilCancelled() }
    }

    private func runUntilCancelled() async throws {
        let libvirt = try await Connection.open(configuration.libvirtURI)
        self.libvirt = libvirt
        monitorConnection = try await Connection.open(configuration.libvirtURI)
        let threads = try await StreamThreads.start(nice: configuration.tunnelNice)
        streamThreads = threads
        if let listen = configuration.tunnelListen {
            let exit = try await TunnelExit.start(
                // Nodes (this cluster's, and a paired cluster's source nodes) and this cluster's gateway (the
                // controller carrying such a node's channel); each channel's route then decides.
                on: listen, provider: provider,
                peers: PeerPolicy(allowedRoles: [.node, .controller], importedRoles: [.node]),
                routes: TunnelRoutingTable(),
                group: threads.group, logger: logger)
            tunnelExit = exit
            if case .tcp(let host, let port) = exit.endpoint {
                configuration.tunnelEndpoint = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            }
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
            if let exit = tunnelExit { group.addTask { await exit.run() } }
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
        var node: Node
        do {
            node = try await client.create(Node(metadata: ObjectMeta(name: configuration.name, labels: labels)))
        } catch {
            guard error.code == 409 else { throw error }
            // Registered before: refresh the labels, keep what the operator set (taints, other labels).
            node = try await client.get(Node.self, name: configuration.name)
        }
        let configuration = configuration
        try await client.update(node) { node in
            var current = node.metadata.labels ?? [:]
            for key in current.keys
            where key.hasPrefix("cpu-model") || key.hasPrefix("host-model") || key.hasPrefix("cpu-feature") {
                current[key] = nil
            }
            current.merge(labels) { _, new in new }
            node.metadata.labels = current
            var status = node.status ?? Node.Status()
            let quantities: [String: JSONValue] = [
                "cpu": .string(String(cpus)), "memory": .string("\(memory >> 20)Mi"),
            ]
            status.capacity = (status.capacity ?? [:]).merging(quantities) { _, new in new }
            status.allocatable = (status.allocatable ?? [:]).merging(quantities) { _, new in new }
            status.addresses = [
                Node.Address(type: "InternalIP", address: configuration.address),
                Node.Address(type: "Hostname", address: configuration.name),
            ]
            var info = status.nodeInfo ?? [:]
            for (key, value) in [
                "kubeletVersion": "vmsync-node-agent", "architecture": "amd64", "operatingSystem": "linux",
            ] { info[key] = .string(value) }
            status.nodeInfo = info
            status.libvirtURI = configuration.libvirtURI
            status.runDirectory = configuration.runDirectory
            status.tunnelEndpoint = configuration.tunnelEndpoint
            node.status = status
        }
        try await postReady()
        logger.info("node registered", metadata: ["node": "\(configuration.name)", "labels": "\(labels.count)"])
    }

    private func readyCondition() -> Condition {
        var condition = Condition("Ready", true, reason: "AgentReady", message: "node-agent is posting ready status")
        condition.lastHeartbeatTime = Resources.now()
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
        let node = try await client.get(Node.self, name: configuration.name)
        let ready = readyCondition()
        do {
            try await client.update(node) { node in
                var conditions = (node.status?.conditions ?? []).filter { $0.type != "Ready" }
                conditions.insert(ready, at: 0)
                if node.status == nil { node.status = Node.Status() }
                node.status?.conditions = conditions
            }
        } catch  where error.code == 409 {
            throw APIError.conflict("node \(configuration.name) kept changing; its heartbeat was not written")
        }
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
        await removeOrphans(
            claimed: Set(
                instances.unordered.map {
                    Resources.domainName(namespace: $0.key.namespace ?? "default", name: $0.key.name)
                }))
    }

    /// One VMI on this node: its domain brought to what the VMI asks. A failure that may pass (the API or libvirt
    /// unreachable, a DataVolume or StorageClass not there yet) is a `Synchronized` condition and a retry with backoff;
    /// only a VMI that can never run as asked (refused input, a spec libvirt rejects) fails.
    func syncInstance(_ key: ObjectKey) async throws -> ReconcileResult {
        guard let vmi = instances[key] else {
            // Gone from this node's VMIs — deleted (maybe while this node was cut off, its deletion seen only as the
            // watch resumed or the informer listed again), or moved to another node: a domain of it still here is an
            // orphan, removed or held as `removeOrphans` decides.
            await sweepOrphans()
            return .done
        }
        do {
            try await reconcileOrThrow(vmi)
        } catch {
            let message: String =
                (error as? APIError)?.message ?? (error as? HypervisorError)?.description ?? "\(error)"
            logger.warning(
                "VMI reconcile failed",
                metadata: ["vmi": "\(key)", "error": "\(error)", "final": "\(Self.isFinal(error))"])
            if Self.isFinal(error) {
                await updateStatus(vmi) { status in
                    status.phase = .failed
                    status.reason = "DomainFailed"
                    status.message = message
                }
                return .done
            }
            await updateStatus(vmi) {
                $0.conditions.set(Condition("Synchronized", false, reason: "SyncFailed", message: message))
            }
            throw error
        }
        if vmi.status?.conditions["Synchronized"]?.status == .false {
            await updateStatus(vmi) { $0.conditions.set(Condition("Synchronized", true, reason: "Synchronized")) }
        }
        // Level-based: a VMI that has not ended is looked at again now and then, whatever the events said.
        return vmi.status?.phase?.isFinal == true ? .done : .requeue(after: .seconds(30))
    }

    /// Whether a failure to run a VMI is for good: the input is refused (400, 403, 422) or libvirt rejects the
    /// domain itself. Anything else may pass and is retried.
    static func isFinal(_ error: any Error) -> Bool {
        if let error = error as? APIError { return [400, 403, 422].contains(error.code) }
        if let error = error as? HypervisorError {
            return [.invalidSpec, .invalidConfiguration, .unsupported].contains(error.code)
        }
        return false
    }

    private func reconcileOrThrow(_ vmi: VirtualMachineInstance) async throws {
        guard let libvirt else { return }
        let namespace = vmi.metadata.namespace ?? "default"
        let name = vmi.metadata.name ?? ""
        let domainName = Resources.domainName(namespace: namespace, name: name)
        let phase = vmi.phase
        let existing = try? await libvirt.domain(named: domainName)
        let state = try? await existing?.state()

        await abortIfRequested(vmi)
        if isMigratingAway(vmi) { return }
        if await leftByDecentralizedMigration(vmi, domainPresent: existing != nil && state != .shutOff) { return }
        if migrationFromHereUnfinished(vmi), state != .running && state != .paused && state != .blocked { return }
        if vmi.metadata.isDeleting {
            if let existing {
                try? await existing.destroy()
                try? await existing.undefine()
                logger.info("domain stopped for deleted VMI", metadata: ["vmi": "\(namespace)/\(name)"])
            }
            for path in ephemeralFiles(of: vmi, domainName: domainName) {
                try? FileManager.default.removeItem(atPath: path)
            }
            if !phase.isFinal {
                await updateStatus(vmi) { status in
                    status.phase = .succeeded
                    status.reason = "Deleted"
                    status.message = "the VMI was deleted; its domain is gone"
                }
            }
            return
        }
        switch phase {
        case .scheduled, .running, .unknown:
            if let existing, state == .running || state == .paused || state == .blocked {
                // Running already (re-adopted after an agent restart, or started by the previous pass).
                if phase != .running || vmi.nodeName != configuration.name {
                    await updateStatus(vmi) { status in
                        status.phase = .running
                        status.conditions.set(Condition("Ready", true, reason: "DomainRunning"))
                    }
                }
                _ = existing
                return
            }
            if phase == .running, existing != nil {
                // It ran here and stopped on its own.
                await updateStatus(vmi) { status in
                    status.phase = state == .shutOff ? .succeeded : .failed
                    status.reason = "Domain\(state?.rawValue.capitalized ?? "Gone")"
                    status.conditions.set(Condition("Ready", false, reason: "DomainStopped"))
                }
                return
            }
            try await start(vmi, domainName: domainName, libvirt: libvirt, existing: existing)
        default:
            return
        }
    }

    private func start(_ vmi: VirtualMachineInstance, domainName: String, libvirt: Connection, existing: Domain?)
        async throws
    {
        let namespace = vmi.metadata.namespace ?? "default"
        var disks: [String: (path: String, format: String)] = [:]
        var volumeStatus: [VirtualMachineInstance.VolumeStatus] = []
        for volume in vmi.spec.volumes ?? [] {
            let volumeName = volume.name
            if let dataVolumeName = volume.claimName {
                let dataVolume = try await client.get(DataVolume.self, namespace: namespace, name: dataVolumeName)
                let disk = try await volumes.disk(for: dataVolume)
                try await volumes.ensure(disk, source: dataVolume.spec.source)
                disks[volumeName] = (disk.path, disk.format)
                volumeStatus.append(await Self.volumeStatus(volumeName, claim: dataVolumeName, disk: disk))
            } else if let capacity = Quantity(volume.emptyDisk?.capacity)?.bytes {
                let path = emptyDiskPath(domainName: domainName, volume: volumeName)
                if !FileManager.default.fileExists(atPath: path) {
                    try await Volumes.createEmpty(at: path, bytes: capacity)
                }
                disks[volumeName] = (path, "qcow2")
            } else if let cloudInit = volume.cloudInitNoCloud {
                let path = cloudInitPath(domainName: domainName, volume: volumeName)
                try await Volumes.cloudInitDisk(
                    at: path, userData: try DomainMapping.userData(of: cloudInit, volume: volumeName),
                    metaData: DomainMapping.metaData(of: vmi), networkData: cloudInit.networkData)
                disks[volumeName] = (path, "raw")
            } else if volume.containerDisk != nil {
                throw APIError.badRequest(
                    "volume \"\(volumeName)\": containerDisk volumes are not supported by vmsync nodes")
            }
        }
        // A kernel and initrd to boot directly are host files: only from an import directory.
        let container = vmi.spec.domain?.firmware?.kernelBoot?.container
        for (field, path) in [("kernelPath", container?.kernelPath), ("initrdPath", container?.initrdPath)] {
            if let path {
                _ = try configuration.hostPaths.bootFile(
                    path, field: "spec.domain.firmware.kernelBoot.container.\(field)")
            }
        }
        let spec = try DomainMapping.spec(
            for: vmi, disks: disks, serialSocket: "\(configuration.runDirectory)/\(domainName).serial",
            clusterCPUModel: kubeVirt?.spec.configuration?.cpuModel)
        try await libvirt.checkCPU(of: spec)
        if let existing { try? await existing.undefine() }
        let domain = try await libvirt.define(spec)
        try await domain.start()
        logger.info("domain started", metadata: ["domain": "\(domainName)"])
        let interfaces = Self.interfaceStatus(try DomainMapping.interfaces(of: vmi))
        await updateStatus(vmi) { status in
            status.phase = .running
            status.reason = nil
            status.message = nil
            status.conditions.set(Condition("Ready", true, reason: "DomainRunning"))
            status.volumeStatus = volumeStatus
            status.guestOSInfo = (status.guestOSInfo ?? [:]).merged(with: ["name": "vmsync tiny guest"])
            status.interfaces = interfaces
            status.launcherDomain = domainName
            status.serialConsole = spec.serialSocket ?? ""
        }
    }

    /// KubeVirt's `volumeStatus` entry of a DataVolume disk on this node (its size as the image says).
    static func volumeStatus(_ volume: String, claim: String, disk: Volumes.Disk) async
        -> VirtualMachineInstance.VolumeStatus
    {
        let bytes = (try? await Volumes.virtualSize(disk.path)) ?? disk.bytes
        return VirtualMachineInstance.VolumeStatus(
            name: volume, phase: "Ready", reason: "VolumeReady",
            persistentVolumeClaimInfo: .init(
                claimName: claim, capacity: ["storage": .string("\(bytes)")], shared: disk.shared,
                storageClass: disk.storageClass, path: disk.path))
    }

    func emptyDiskPath(domainName: String, volume: String) -> String {
        "\(configuration.runDirectory)/\(domainName)-\(volume).qcow2"
    }

    func cloudInitPath(domainName: String, volume: String) -> String {
        "\(configuration.runDirectory)/\(domainName)-\(volume)-cidata.img"
    }

    /// Files that live and die with the VMI on this node: emptyDisk images and cloud-init seeds.
    private func ephemeralFiles(of vmi: VirtualMachineInstance, domainName: String) -> [String] {
        (vmi.spec.volumes ?? []).compactMap { volume in
            if volume.emptyDisk != nil { return emptyDiskPath(domainName: domainName, volume: volume.name) }
            if volume.cloudInitNoCloud != nil { return cloudInitPath(domainName: domainName, volume: volume.name) }
            return nil
        }
    }

    /// KubeVirt's `status.interfaces` for interfaces on the masquerade network: the guest's address there is the one
    /// the node's NAT hands the first interface by DHCP.
    static func interfaceStatus(_ interfaces: [DomainMapping.PlannedInterface]) -> [VirtualMachineInstance
        .InterfaceStatus]
    {
        interfaces.enumerated().map { index, interface in
            var entry = VirtualMachineInstance.InterfaceStatus(name: interface.name, mac: interface.mac)
            entry.infoSource = "domain"
            entry.queueCount = 1
            if index == 0 {
                entry.ipAddress = DomainMapping.masqueradeNetwork.guestAddress
                entry.ipAddresses = [DomainMapping.masqueradeNetwork.guestAddress]
            }
            return entry
        }
    }

    /// Changes the VMI's status by `change` and writes what changed (`APIClient.update`): a list (conditions, volumes,
    /// interfaces) is written only over the version it was changed from (the controller writes conditions of its
    /// own), so a conflict reads the VMI again and applies the change anew. A failure is logged: the next pass writes
    /// again.
    func updateStatus(_ vmi: VirtualMachineInstance, _ change: @escaping (inout VirtualMachineInstance.Status) -> Void)
        async
    {
        do {
            try await client.update(vmi) { (vmi: inout VirtualMachineInstance) in
                var status = vmi.status ?? VirtualMachineInstance.Status()
                change(&status)
                vmi.status = status
            }
        } catch  where error.code == 409 {
            logger.warning("VMI status write failed: the VMI kept changing", metadata: ["vmi": "\(vmi.key)"])
        } catch {
            logger.warning("VMI status write failed", metadata: ["vmi": "\(vmi.key)", "error": "\(error)"])
        }
    }
}
