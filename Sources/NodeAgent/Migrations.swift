import ClusterAPI
import ClusterClient
import ControllerRuntime
import Foundation
import Hypervisor
import Logging
import TLSTransport

#if canImport(Glibc)
    import Glibc
#endif

/// The node's side of live migration.
///
/// Target: on `Scheduled` it pre-creates the disks that will be copied (at the size the VMI reports), regenerates the
/// cloud-init seed, opens the migration's three channels on its tunnel exit — `migration/<uid>/libvirt` to its
/// libvirtd, `…/memory` and `…/disks` to the sockets where the incoming QEMU will listen — for the source node only,
/// and says `TargetReady`. After a failure (or when the migration disappears) it removes what it made and any
/// half-arrived domain.
///
/// Source: on `TargetReady` it opens local unix-socket tunnel entries at the same paths, so libvirt's peer-to-peer
/// connection, the memory stream and the NBD disk stream all travel over mutual TLS between the two agents (no
/// libvirt or QEMU port is reachable between nodes), runs the libvirt job with KubeVirt's settings and timeouts,
/// publishes its progress on the VMI, aborts it when asked, and at the end hands the VMI to the target node.
struct MigrationPaths {
    /// Where the migration's sockets go; the same path on every node (each node has its own directory there).
    let directory: String

    func socket(_ uid: String, _ stream: String) -> String { "\(directory)/\(uid)/\(stream).sock" }
    func channel(_ uid: String, _ stream: String) -> String { Migration.tunnelChannel(uid, stream) }
    static let streams = Migration.tunnelStreams
}

/// What a target made for one incoming migration, so it can be undone.
struct PreparedTarget: Codable, Sendable {
    var uid: String
    var namespace: String
    var vmiName: String
    var domainName: String
    var sourceNode: String
    /// Files created for the incoming disks.
    var files: [String]
    /// Whether it is a decentralized migration's (the guest is claimed, nobody hands it over).
    var decentralized: Bool? = nil
}

/// A migration this node is sending.
final class OutgoingMigration: @unchecked Sendable {
    let lock = NSLock()
    private var _job: MigrationJob?
    private var _abortRequested = false
    var job: MigrationJob? {
        get { lock.withLock { _job } }
        set { lock.withLock { _job = newValue } }
    }
    /// Set once; the job (now or when it exists) is aborted.
    func requestAbort() async {
        let job = lock.withLock { () -> MigrationJob? in
            _abortRequested = true
            return _job
        }
        await job?.abort(reason: "the migration was aborted by request")
    }
    var abortRequested: Bool { lock.withLock { _abortRequested } }

    private var outcome: VirtualMachineInstanceMigration??
    private var waiter: CheckedContinuation<VirtualMachineInstanceMigration?, Never>?

    /// The target is ready (the migration as it says so), or nil: the migration ended before.
    func targetReady(_ vmim: VirtualMachineInstanceMigration?) {
        let waiting = lock.withLock { () -> CheckedContinuation<VirtualMachineInstanceMigration?, Never>? in
            guard outcome == nil else { return nil }
            outcome = .some(vmim)
            defer { waiter = nil }
            return waiter
        }
        waiting?.resume(returning: vmim)
    }

    /// Waits for `targetReady`.
    func waitForTarget() async -> VirtualMachineInstanceMigration? {
        await withCheckedContinuation { continuation in
            let known = lock.withLock { () -> VirtualMachineInstanceMigration?? in
                if let outcome { return outcome }
                waiter = continuation
                return nil
            }
            if let known { continuation.resume(returning: known) }
        }
    }
}

extension NodeAgent {
    // MARK: Loop

    /// One migration this node takes part in (as source or target), as the informers last saw it. One that has not
    /// ended is looked at again every couple of seconds: a target claims a guest libvirt moved once it has run for
    /// `claimDelay`, a cleanup libvirt could not answer for is retried, a restarted agent's job is checked on.
    func syncMigration(_ key: ObjectKey) async -> ReconcileResult {
        guard let vmim = outgoingMigrations[key] ?? incomingMigrations[key] else { return .done }
        await handle(vmim)
        return vmim.phase.isFinal && prepared[vmim.metadata.uid ?? ""] == nil ? .done : .requeue(after: .seconds(2))
    }

    /// A migration this node took part in is gone (deleted, or no longer listed): what was prepared for it goes.
    func migrationGone(uid: String) async {
        await cleanupTarget(uid: uid, failed: true)
    }

    private func handle(_ vmim: VirtualMachineInstanceMigration) async {
        guard let uid = vmim.metadata.uid else { return }
        let phase = vmim.phase
        let state = vmim.status?.migrationState
        let me = configuration.name
        // One VMIM of a decentralized migration is one side's: the receiving one is its target node's, the sending one
        // its source node's (the other node it names is the peer cluster's, whatever this cluster calls its nodes).
        let asTarget = state?.targetNode == me && vmim.spec.sendTo == nil
        let asSource = state?.sourceNode == me && vmim.spec.receive == nil
        if asTarget, vmim.isDecentralized, let made = prepared[uid], [.targetReady, .running].contains(phase) {
            // No source hands a received guest over: once libvirt runs it here, this node claims it — and then it is
            // this node's guest whatever else this pass finds (a restarted agent does not fail it).
            if await claimReceived(made) { return }
        }
        if asTarget {
            switch phase {
            case .scheduled, .preparingTarget, .targetReady:
                guard !preparing.contains(uid), !routed.contains(uid), !givenUp.contains(uid) else { break }
                if phase == .scheduled && prepared[uid] == nil {
                    preparing.insert(uid)
                    await prepareTarget(vmim)
                    preparing.remove(uid)
                } else {
                    // Begun by this node's previous agent: its tunnel ends died with it.
                    givenUp.insert(uid)
                    logger.warning(
                        "failing a migration this node's previous agent was preparing",
                        metadata: ["migration": "\(uid)"])
                    await cleanupTarget(uid: uid, failed: true)
                    await failMigration(
                        vmim, vmi: nil, reason: "TargetAgentRestarted",
                        "the target node's agent restarted while the migration was \(phase.rawValue); the VM stays on \(state?.sourceNode ?? "its node")"
                    )
                }
            case .running:
                // Normally the source hands the guest over; if libvirt moved it and that did not happen, claim it.
                if let made = prepared[uid], !vmim.isDecentralized { await claimIfRunningHere(made, vmim: vmim) }
            case .failed: await cleanupTarget(uid: uid, failed: true)
            case .succeeded:
                if let made = prepared[uid] { await recordCompletedStatistics(vmim, domainName: made.domainName) }
                await cleanupTarget(uid: uid, failed: false)
            default: break
            }
        }
        if asSource {
            let deleted = vmim.metadata.isDeleting
            if [.scheduled, .preparingTarget, .targetReady].contains(phase), outgoing[uid] == nil, !deleted {
                let migration = OutgoingMigration()
                outgoing[uid] = migration
                senders?.send { await self.send(vmim, migration) }
            }
            if phase == .running, outgoing[uid] == nil, !restartFailed.contains(uid) {
                // Running here, but not by this agent: it restarted mid-migration. Where the guest is, libvirt says.
                let namespace = vmim.key.namespace ?? "default"
                let vmiName = vmim.spec.vmiName
                let domainName = Resources.domainName(namespace: namespace, name: vmiName)
                let domain = try? await libvirt?.domain(named: domainName)
                if !(await guestIsHere(domainName)) {
                    // libvirt finished the job: the guest runs on the target, whose agent claims it.
                    restartFailed.insert(uid)
                    if vmim.isDecentralized,
                        let vmi = try? await client.get(
                            VirtualMachineInstance.self, namespace: namespace, name: vmiName)
                    {
                        await retire(vmi, final: { _ in })
                    }
                    logger.warning(
                        "the guest of a migration this node's previous agent was sending has left; the target claims it",
                        metadata: ["migration": "\(uid)"])
                } else if let domain, (try? await domain.jobStatistics()) ?? nil != nil {
                    // libvirtd still runs the job (its streams died with the previous agent): look again next pass.
                } else {
                    // The job and its tunnels died with the previous process, and the guest stayed here.
                    restartFailed.insert(uid)
                    let vmi = try? await client.get(VirtualMachineInstance.self, namespace: namespace, name: vmiName)
                    logger.warning(
                        "failing a migration this node's previous agent was sending", metadata: ["migration": "\(uid)"])
                    await failMigration(
                        vmim, vmi: vmi, reason: "SourceAgentRestarted",
                        "the source node's agent restarted during the migration; the VM stayed on \(me)")
                }
            }
            if phase.isFinal, outgoing[uid] == nil {
                // Ended without this process's sender (the agent restarted during it): its sockets, and after a
                // success the copies the guest left here.
                let sockets = "\(migrationPaths.directory)/\(uid)"
                if FileManager.default.fileExists(atPath: sockets) {
                    try? FileManager.default.removeItem(atPath: sockets)
                }
                if phase == .succeeded { await removeStaleCopies(vmim) }
            }
            if let migration = outgoing[uid] {
                if phase == .targetReady && !deleted {
                    migration.targetReady(vmim)
                } else if phase.isFinal || deleted {
                    migration.targetReady(nil)
                    if deleted && phase == .running && !migration.abortRequested {
                        logger.info("migration deleted while running: aborting", metadata: ["migration": "\(uid)"])
                        await migration.requestAbort()
                    }
                }
            }
        }
    }

    /// Called for each VMI on this node: an abort requested on its migration reaches the job.
    func abortIfRequested(_ vmi: VirtualMachineInstance) async {
        guard let state = vmi.status?.migrationState, state.abortRequested == true, let uid = state.migrationUid,
            let migration = outgoing[uid], !migration.abortRequested
        else { return }
        logger.info("migration abort requested", metadata: ["migration": "\(uid)"])
        await migration.requestAbort()
    }

    /// Whether a migration of the VMI from this node has not finished (this agent restarted during it, or its
    /// hand-over has not landed): a guest missing here then is the migration's to account for — starting it again
    /// here could make a second copy of one that runs on the target.
    func migrationFromHereUnfinished(_ vmi: VirtualMachineInstance) -> Bool {
        let state = vmi.status?.migrationState
        return state?.migrationUid != nil && state?.sourceNode == configuration.name && state?.targetNode != nil
            && state?.completed != true
    }

    /// Whether the VMI is leaving or has just left this node (its domain going away is not a stop).
    func isMigratingAway(_ vmi: VirtualMachineInstance) -> Bool {
        let state = vmi.status?.migrationState
        if let uid = state?.migrationUid, outgoing[uid] != nil { return true }

        let domainName = Resources.domainName(
            namespace: vmi.metadata.namespace ?? "default", name: vmi.metadata.name ?? "")
        // Just handed over (a list read before the handover may still say it is here) — unless it has come back.
        if let handed = handedOver[domainName], Date.now.timeIntervalSince(handed) < 60,
            state?.targetNode != configuration.name
        {
            return true
        }
        return false
    }

    // MARK: Target

    private func prepareTarget(_ vmim: VirtualMachineInstanceMigration) async {
        let uid = vmim.metadata.uid ?? ""
        let namespace = vmim.key.namespace ?? "default"
        let vmiName = vmim.spec.vmiName
        let source = vmim.status?.migrationState?.sourceNode ?? ""
        let domainName = Resources.domainName(namespace: namespace, name: vmiName)
        // A decentralized migration's source node is the peer cluster's (the one bound to the migration): its tunnels
        // admit that cluster's node of that name, vouched for by the imported CA — nobody else.
        let decentralized = vmim.isDecentralized
        let peerCluster = decentralized ? vmim.status?.synchronizationPeer?.cluster : nil
        /// Where each disk of the destination domain lives here, by guest device (the source writes them into the
        /// destination XML of a decentralized migration).
        var diskPaths: [String: String] = [:]
        var current = vmim
        var timer = StepTimer()
        var made = PreparedTarget(
            uid: uid, namespace: namespace, vmiName: vmiName, domainName: domainName, sourceNode: source, files: [],
            decentralized: vmim.isDecentralized)
        do {
            // The phase is written while the work goes on.
            let scheduled = current
            async let marked = transition(scheduled, to: .preparingTarget)
            guard let tunnelExit, let tunnelEndpoint = configuration.tunnelEndpoint else {
                throw APIError.badRequest("node \(configuration.name) has no tunnel endpoint for migrations")
            }
            let vmi = try await client.get(VirtualMachineInstance.self, namespace: namespace, name: vmiName)
            if decentralized, peerCluster == nil {
                throw APIError.conflict("migration \(uid) is bound to no peer cluster yet")
            }
            let devices = DomainMapping.diskTargets(of: vmi)
            timer.mark("vmi")
            if let libvirt, (try? await libvirt.domain(named: domainName)) != nil {
                throw APIError.conflict("a domain \(domainName) already exists on node \(configuration.name)")
            }
            timer.mark("libvirt")
            let reported = Dictionary(
                (vmi.status?.volumeStatus ?? []).map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
            for volume in vmi.spec.volumes ?? [] {
                let volumeName = volume.name
                if let claim = volume.claimName {
                    let dataVolume = try await client.get(DataVolume.self, namespace: namespace, name: claim)
                    let disk = try await volumes.disk(for: dataVolume)
                    diskPaths[devices[volumeName] ?? volumeName] = disk.path
                    // Another cluster's (or namespace's) guest brings all its disks: this VM's own volumes are new.
                    guard !disk.shared || decentralized else { continue }
                    // Inside the cluster the VMI reports its disks' sizes; a decentralized source sends them in
                    // migratedVolumes. The copy is as large as the guest's disk, whatever this DataVolume asks for.
                    let sent = (vmi.status?.migratedVolumes ?? []).first { $0["volumeName"]?.string == volumeName }?[
                        "sourcePVCInfo"]?["capacity"]?["storage"]
                    let bytes =
                        Quantity(reported[volumeName]?.persistentVolumeClaimInfo?.capacity?["storage"])?.bytes
                        ?? (decentralized ? Quantity(sent)?.bytes : nil) ?? disk.bytes
                    try await createIncomingDisk(disk.path, bytes: bytes, made: &made)
                } else if let capacity = Quantity(volume.emptyDisk?.capacity)?.bytes {
                    let path = emptyDiskPath(domainName: domainName, volume: volumeName)
                    diskPaths[devices[volumeName] ?? volumeName] = path
                    try await createIncomingDisk(path, bytes: capacity, made: &made)
                } else if let cloudInit = volume.cloudInitNoCloud {
                    let path = cloudInitPath(domainName: domainName, volume: volumeName)
                    diskPaths[devices[volumeName] ?? volumeName] = path
                    made.files.append(path)
                    prepared[uid] = made
                    savePrepared()
                    try await Volumes.cloudInitDisk(
                        at: path, userData: try DomainMapping.userData(of: cloudInit, volume: volumeName),
                        metaData: DomainMapping.metaData(of: vmi),
                        networkData: cloudInit.networkData)
                }
            }
            timer.mark("disks")
            try FileManager.default.createDirectory(
                atPath: "\(migrationPaths.directory)/\(uid)", withIntermediateDirectories: true)
            // The source node itself, and — when this cluster takes other clusters' migrations through its gateway —
            // this cluster's controller carrying that node's channels (the gateway admits only that node).
            let gateway = decentralized ? kubeVirt?.spec.configuration?.crossClusterGateway : nil
            let policies =
                [PeerPolicy(allowedRoles: [.node], allowedNames: [source], cluster: peerCluster)]
                + (gateway == nil ? [] : [PeerPolicy(allowedRoles: [.controller])])
            // libvirt's connection goes to this node's libvirtd; the memory and disk streams to the sockets the
            // incoming QEMU listens on.
            for stream in MigrationPaths.streams {
                let target = stream == "libvirt" ? libvirtSocketPath : migrationPaths.socket(uid, stream)
                try tunnelExit.routes.allow(
                    channel: migrationPaths.channel(uid, stream), to: .unix(path: target), anyOf: policies)
            }
            prepared[uid] = made
            routed.insert(uid)
            savePrepared()
            timer.mark("routes")
            current = try await marked
            timer.mark("phase")
            let runDirectory = configuration.runDirectory
            if decentralized {
                // The target's half says where and when: the peer's source reads it from the mirror.
                var ready = MigrationState()
                var half = MigrationState.TargetState()
                half.node = configuration.name
                half.nodeAddress = tunnelEndpoint
                half.gateway = gateway
                half.runDirectory = runDirectory
                half.disks = diskPaths
                half.domainDetected = false
                half.domainReadyTimestamp = Migration.timestamp()
                ready.targetState = half
                try await persistently("migration \(uid) target half") { () async throws(APIError) in
                    try await client.set(\.status, of: vmi, to: VirtualMachineInstance.Status(migrationState: ready))
                }
            }
            _ = try await transition(current, to: .targetReady) { vmim in
                var state = vmim.status?.migrationState ?? MigrationState()
                state.targetNodeAddress = tunnelEndpoint
                state.targetRunDirectory = runDirectory
                vmim.status?.migrationState = state
            }
            timer.mark("phase")
            logger.info(
                "migration target ready",
                metadata: [
                    "migration": "\(uid)", "vmi": "\(namespace)/\(vmiName)", "disks": "\(made.files.count)",
                    "ms": "\(timer.description)",
                ])
        } catch {
            logger.warning(
                "migration target preparation failed", metadata: ["migration": "\(uid)", "error": "\(error)"])
            givenUp.insert(uid)
            prepared[uid] = made
            await cleanupTarget(uid: uid, failed: true)
            await failMigration(
                current, vmi: nil, reason: "TargetPreparationFailed",
                "node \(configuration.name) could not prepare the target: \(Self.describe(error))")
        }
    }

    /// Creates a disk for an incoming migration — recorded (on disk too) before it exists, so an agent killed while
    /// it is made still removes it.
    private func createIncomingDisk(_ path: String, bytes: UInt64, made: inout PreparedTarget) async throws(APIError) {
        guard !FileManager.default.fileExists(atPath: path) else {
            throw APIError.conflict("disk \(path) already exists on node \(configuration.name)")
        }
        made.files.append(path)
        prepared[made.uid] = made
        savePrepared()
        try? FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try await Volumes.createEmpty(at: path, bytes: bytes)
    }

    /// Writes libvirt's account of the incoming job that just completed here (its downtime, the memory totals) into
    /// the migration's record and the VMI's migration state — off the switchover's path: the source hands over and
    /// reports success first. The disk mirror's figures stay as the source reported them (this copy covers memory).
    func recordCompletedStatistics(_ vmim: VirtualMachineInstanceMigration, domainName: String) async {
        guard let libvirt, let domain = try? await libvirt.domain(named: domainName),
            let completed = try? await domain.jobStatistics(completed: true)
        else { return }
        let elapsed = Duration.milliseconds(Int64(clamping: completed.timeElapsedMs ?? 0))
        var progress = Self.finalProgress(completed, elapsed: elapsed)
        progress.diskTotalBytes = nil
        progress.diskProcessedBytes = nil
        if completed.timeElapsedMs == nil { progress.elapsedMilliseconds = nil }
        var record = MigrationState()
        record.progress = progress
        record.downtimeMilliseconds = completed.downtimeMs.map { Int64(clamping: $0) }
        if let downtime = completed.downtimeMs { jobMetrics.recordDowntime(milliseconds: downtime) }
        do {
            try await client.set(\.status, of: vmim, to: VirtualMachineInstanceMigration.Status(migrationState: record))
            let vmi = VirtualMachineInstance(
                metadata: ObjectMeta(name: vmim.spec.vmiName, namespace: vmim.key.namespace),
                spec: VirtualMachineInstanceSpec())
            try await client.set(\.status, of: vmi, to: VirtualMachineInstance.Status(migrationState: record))
        } catch {
            logger.warning(
                "migration statistics write failed",
                metadata: ["migration": "\(vmim.metadata.uid ?? "")", "error": "\(error)"])
        }
    }

    /// Undoes a target's preparation. After a failure the half-arrived domain and the pre-created disks go (unless
    /// the VMI runs here after all); after success only the channels and sockets.
    func cleanupTarget(uid: String, failed: Bool) async {
        guard let made = prepared.removeValue(forKey: uid) else { return }
        // After a success the streams end by themselves (the source may still be confirming over its libvirt
        // connection when the target's side is done); after a failure nothing stays open.
        for stream in MigrationPaths.streams {
            tunnelExit?.routes.remove(channel: migrationPaths.channel(uid, stream), closingOpen: failed)
        }
        routed.remove(uid)
        try? FileManager.default.removeItem(atPath: "\(migrationPaths.directory)/\(uid)")
        if failed {
            // A guest that runs here is never removed, whatever the migration's record says: libvirt finished the job,
            // so this is the guest now (the source has at most a paused remnant). It is claimed instead.
            let (domain, presence) = await incomingDomain(made.domainName)
            if domain != nil, presence == nil {
                // libvirt cannot say what the domain is doing: nothing is removed now; the next pass looks again.
                prepared[uid] = made
                logger.warning(
                    "kept a failed migration's target for now: libvirt does not report its domain's state",
                    metadata: ["migration": "\(uid)"])
                return
            }
            if domain != nil, presence != .inactive && presence != .pausedForMigration {
                liveSince[uid] = .now - Self.claimDelay
                // A received guest (no source hands it over) is claimed as the decentralized flow does: Running here.
                let live =
                    made.decentralized == true
                    ? await claimReceived(made) || presence == .postCopy : await claimIfRunningHere(made, vmim: nil)
                liveSince[uid] = nil
                guard live || presence == .postCopy else {
                    // It changed while it was looked at (libvirt tearing it down): the next pass looks again.
                    prepared[uid] = made
                    return
                }
                savePrepared()
                logger.warning(
                    "kept the guest of a failed or vanished migration: it runs here",
                    metadata: [
                        "migration": "\(uid)", "domain": "\(made.domainName)",
                        "presence": "\(presence.map { "\($0)" } ?? "unknown")",
                    ])
                return
            }
            let vmi = try? await client.get(VirtualMachineInstance.self, namespace: made.namespace, name: made.vmiName)
            let runsHere = vmi?.nodeName == configuration.name
            if !runsHere {
                if let domain {
                    try? await domain.destroy()
                    try? await domain.undefine()
                    logger.info(
                        "removed the half-arrived domain of a failed migration",
                        metadata: ["domain": "\(made.domainName)"])
                }
                for file in made.files { try? FileManager.default.removeItem(atPath: file) }
            }
        }
        liveSince[uid] = nil
        savePrepared()
        logger.info("migration target cleaned up", metadata: ["migration": "\(uid)", "failed": "\(failed)"])
    }

    /// The domain of an incoming migration and whether it holds a live guest. A domain that vanishes while it is
    /// looked at (libvirt tearing down a failed incoming migration) is gone; one whose state libvirt does not report
    /// after a few tries comes back without a presence — unknown, so nothing may be removed.
    func incomingDomain(_ name: String) async -> (Domain?, GuestPresence?) {
        guard let libvirt else { return (nil, nil) }
        for attempt in 0..<3 {
            if attempt > 0 { try? await Task.sleep(for: .milliseconds(200)) }
            let domain: Domain
            do {
                domain = try await libvirt.domain(named: name)
            } catch  where (error as HypervisorError).code == .domainNotFound {
                return (nil, nil)
            } catch {
                continue
            }
            if let presence = try? await domain.presence() { return (domain, presence) }
        }
        return ((try? await libvirt.domain(named: name)), nil)
    }

    private var preparedFile: String { "\(migrationPaths.directory)/prepared.json" }

    /// Remembers prepared targets on disk, so an agent restarted mid-migration still cleans up.
    func savePrepared() {
        try? FileManager.default.createDirectory(atPath: migrationPaths.directory, withIntermediateDirectories: true)
        if let data = try? JSONEncoder().encode(Array(prepared.values)) {
            try? data.write(to: URL(fileURLWithPath: preparedFile), options: .atomic)
        }
    }

    func loadPrepared() {
        guard let data = FileManager.default.contents(atPath: preparedFile),
            let saved = try? JSONDecoder().decode([PreparedTarget].self, from: data)
        else { return }
        for entry in saved { prepared[entry.uid] = entry }
    }

    // MARK: Source

    /// Sends one migration (`MigrationSender`'s steps); the migration is no longer this process's to send afterwards.
    func send(_ vmim: VirtualMachineInstanceMigration, _ migration: OutgoingMigration) async {
        var sender = MigrationSender(vmim, migration)
        await sender.run(on: self)
        outgoing[sender.uid] = nil
    }

    /// What a migration of `vmi` copies from this node: the devices block-copied (local DataVolumes and empty
    /// disks), whether a shared DataVolume stays where it is, and the files on this node that are stale once the
    /// guest runs elsewhere (the copied images and the cloud-init seed, which the target rebuilds).
    func copies(of vmi: VirtualMachineInstance, decentralized: Bool = false) async throws(APIError) -> (
        devices: [String], shared: Bool, files: [String]
    ) {
        let namespace = vmi.metadata.namespace ?? "default"
        let domainName = Resources.domainName(namespace: namespace, name: vmi.metadata.name ?? "")
        let targets = DomainMapping.diskTargets(of: vmi)
        var devices: [String] = []
        var shared = false
        var files: [String] = []
        for volume in vmi.spec.volumes ?? [] {
            guard let device = targets[volume.name] else { continue }
            if let claim = volume.claimName {
                let disk = try await volumes.disk(
                    for: try await client.get(DataVolume.self, namespace: namespace, name: claim))
                if decentralized {
                    // Copied whatever its class (the peer's volumes are its own), and kept: the source VM's
                    // DataVolume stays with it.
                    devices.append(device)
                } else if disk.shared {
                    shared = true
                } else {
                    devices.append(device)
                    files.append(disk.path)
                }
            } else if volume.emptyDisk != nil {
                devices.append(device)
                files.append(emptyDiskPath(domainName: domainName, volume: volume.name))
            } else if volume.cloudInitNoCloud != nil {
                files.append(cloudInitPath(domainName: domainName, volume: volume.name))
            }
        }
        return (devices, shared, files)
    }

    /// A migration from this node that succeeded without this process sending it to the end (the agent restarted at
    /// the switchover, and the target claimed the guest): once the VMI runs on the target and no domain of it is
    /// left here, the local copies its sender would have removed are removed.
    func removeStaleCopies(_ vmim: VirtualMachineInstanceMigration) async {
        guard let uid = vmim.metadata.uid, !sourceCleaned.contains(uid),
            let target = vmim.status?.migrationState?.targetNode
        else { return }
        let namespace = vmim.key.namespace ?? "default"
        let vmiName = vmim.spec.vmiName
        guard let vmi = try? await client.get(VirtualMachineInstance.self, namespace: namespace, name: vmiName),
            vmi.nodeName == target, vmi.status?.migrationState?.migrationUid == uid,
            !(await guestIsHere(Resources.domainName(namespace: namespace, name: vmiName))),
            let files = try? await copies(of: vmi).files
        else { return }
        sourceCleaned.insert(uid)
        for file in files where FileManager.default.fileExists(atPath: file) {
            try? FileManager.default.removeItem(atPath: file)
            logger.info("removed a copy the guest left behind", metadata: ["migration": "\(uid)", "file": "\(file)"])
        }
    }

    /// Publishes the job's progress on the VMI's migration state, at most twice a second, until the job's progress
    /// ends or the task is cancelled.
    func reportProgress(of job: MigrationJob, vmi: VirtualMachineInstance) async {
        var last = ContinuousClock.now - .seconds(1)
        for await sample in job.progress {
            guard ContinuousClock.now - last >= .milliseconds(500) else { continue }
            last = .now
            var state = MigrationState()
            state.progress = Self.progress(sample.statistics, phase: sample.phase, elapsed: sample.elapsed)
            await setMigrationState(of: vmi, state)
        }
    }

    /// The `migrationState.progress` of a finished job.
    static func finalProgress(_ statistics: JobStatistics, elapsed: Duration) -> MigrationState.Progress {
        var progress = Self.progress(statistics, phase: statistics.phase, elapsed: elapsed)
        progress.phase = "Completed"
        return progress
    }

    /// The `migrationState.progress` of a statistics sample.
    static func progress(_ statistics: JobStatistics, phase: JobStatistics.Phase, elapsed: Duration)
        -> MigrationState.Progress
    {
        let parts = elapsed.components
        var progress = MigrationState.Progress()
        progress.elapsedMilliseconds = parts.seconds * 1000 + parts.attoseconds / 1_000_000_000_000_000
        switch phase {
        case .setup: progress.phase = "Setup"
        case .disks: progress.phase = "Disks"
        case .memory(let iteration):
            progress.phase = "Memory"
            progress.iteration = Int64(iteration)
        }
        func bytes(_ value: UInt64?) -> Int64? { value.map { Int64(clamping: $0) } }
        progress.dataTotalBytes = bytes(statistics.dataTotal)
        progress.dataProcessedBytes = bytes(statistics.dataProcessed)
        progress.dataRemainingBytes = bytes(statistics.dataRemaining)
        progress.memoryDirtyRateBytesPerSecond = bytes(statistics.memoryDirtyRate)
        progress.memoryBytesPerSecond = bytes(statistics.memoryBytesPerSecond)
        progress.diskTotalBytes = bytes(statistics.diskTotal)
        progress.diskProcessedBytes = bytes(statistics.diskProcessed)
        return progress
    }

    // MARK: Status writes

    /// Moves the migration to `phase` (`VirtualMachineInstanceMigration.transition`, with what `change` sets) if it
    /// is still in one of the phases this step follows — a phase the controller wrote meanwhile (a failure, an abort)
    /// is never overwritten, and the write lands only on the version it was computed from (a conflict reads the
    /// migration again and looks anew). A deleted migration only moves to a final phase. Returns the stored object.
    @discardableResult
    func transition(
        _ vmim: VirtualMachineInstanceMigration, to phase: VirtualMachineInstanceMigration.Phase,
        _ change: (inout VirtualMachineInstanceMigration) -> Void = { _ in }
    ) async throws(APIError) -> VirtualMachineInstanceMigration {
        let expected: Set<VirtualMachineInstanceMigration.Phase> =
            switch phase {
            case .preparingTarget: [.scheduled]
            case .targetReady: [.preparingTarget]
            case .running: [.targetReady]
            case .succeeded: [.running]
            default: [.scheduled, .preparingTarget, .targetReady, .running]
            }
        let key = vmim.key
        var current = vmim
        // Already there: an earlier attempt landed though its answer was lost.
        if current.phase == phase { return current }
        return try await client.update(current, guarded: true) {
            (vmim: inout VirtualMachineInstanceMigration) throws(APIError) in
            current = vmim
            guard current.phase != phase else { return }
            guard expected.contains(current.phase), phase.isFinal || !current.metadata.isDeleting else {
                throw APIError.conflict(
                    "migration \(key) is \(current.phase.rawValue)\(current.metadata.isDeleting ? " and deleted" : ""); not moving it to \(phase.rawValue)"
                )
            }
            change(&vmim)
            vmim.transition(to: phase)
        }
    }

    /// Fails a migration from this node: the migration says why; the VMI too when it is on this node.
    func failMigration(
        _ vmim: VirtualMachineInstanceMigration, vmi: VirtualMachineInstance?, reason: String, _ message: String,
        abortStatus: String? = nil
    ) async {
        let ended = Migration.timestamp()
        @Sendable func failed(_ state: inout MigrationState) {
            state.failed = true
            state.completed = true
            state.failureReason = message
            state.endTimestamp = ended
            if let abortStatus { state.abortStatus = abortStatus }
        }
        do {
            // Retried for a while: the controller may be restarting; until this lands the migration looks unfinished.
            _ = try await persistently("migration failure", for: .seconds(60)) { () async throws(APIError) in
                try await transition(vmim, to: .failed) { vmim in
                    var state = vmim.status?.migrationState ?? MigrationState()
                    failed(&state)
                    vmim.status?.migrationState = state
                    vmim.status?.conditions.set(Condition("Failed", true, reason: reason, message: message))
                }
            }
        } catch {
            logger.warning("could not record the failed migration", metadata: ["error": "\(error)"])
        }
        if let vmi {
            var changes = MigrationState()
            failed(&changes)
            await setMigrationState(of: vmi, changes)
        }
    }

    /// Sets the fields `changes` holds in the VMI's migration state (`APIClient.set`: whatever it says meanwhile).
    func setMigrationState(of vmi: VirtualMachineInstance, _ changes: MigrationState) async {
        do {
            try await client.set(\.status, of: vmi, to: VirtualMachineInstance.Status(migrationState: changes))
        } catch {
            logger.warning("VMI migration state write failed", metadata: ["vmi": "\(vmi.key)", "error": "\(error)"])
        }
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? APIError { return error.message }
        if let error = error as? HypervisorError { return error.description }
        if let error = error as? TransportError { return "\(error)" }
        if let error = error as? MigrationAborted { return error.message }
        return "\(error)"
    }

    /// How long an abort may take before the tunnels are broken.
    static let abortGrace: Duration = .seconds(3)

    // MARK: Settings

    struct MigrationSettings {
        var bandwidthMiB: UInt64?
        var autoConverge = false
        var allowPostCopy = false
        var timeouts = MigrationTimeouts.kubeVirtDefaults
        var maxDowntime: Duration?
        var initialDowntime: Duration?
        var parallelConnections: Int?
        /// Copy memory live even where this node's QEMU would lose guest writes doing so (`MemoryCopy.liveCopyHazard`).
        var allowUnsafeLiveMemoryCopy = false
    }

    /// The downtime limit a migration starts with when the configuration names none (raised per memory pass up to
    /// `maxDowntimeMilliseconds`, QEMU's 300 ms by default).
    static let defaultInitialDowntime: Duration = .milliseconds(50)

    /// The KubeVirt configuration's migration settings (KubeVirt's defaults where unset).
    static func migrationSettings(_ migrations: KubeVirt.Migrations?) -> MigrationSettings {
        var settings = MigrationSettings()
        if let bandwidth = Quantity(migrations?.bandwidthPerMigration)?.bytes, bandwidth > 0 {
            settings.bandwidthMiB = max(1, bandwidth >> 20)
        }
        settings.autoConverge = migrations?.allowAutoConverge ?? false
        settings.allowPostCopy = migrations?.allowPostCopy ?? false
        let perGiB = migrations?.completionTimeoutPerGiB ?? 150
        let progress = migrations?.progressTimeout ?? 150
        settings.timeouts = MigrationTimeouts(completionPerGiB: .seconds(perGiB), progress: .seconds(progress))
        settings.maxDowntime = migrations?.maxDowntimeMilliseconds.map { .milliseconds($0) }
        let ceiling = settings.maxDowntime ?? MigrationOptions.qemuDefaultDowntime
        settings.initialDowntime = min(
            migrations?.initialDowntimeMilliseconds.map { .milliseconds($0) } ?? defaultInitialDowntime, ceiling)
        settings.parallelConnections = migrations?.parallelMigrationConnections.map { Int($0) }
        settings.allowUnsafeLiveMemoryCopy = migrations?.allowUnsafeLiveMemoryCopy ?? false
        return settings
    }
}

struct MigrationAborted: Error {
    let message: String
}

/// Where the time of a migration step goes: "vmi 2, disks 14, routes 0" (milliseconds), for the logs.
struct StepTimer {
    private var last = ContinuousClock.now
    private(set) var steps: [String] = []

    mutating func mark(_ name: String) {
        let now = ContinuousClock.now
        let elapsed = (now - last).components
        steps.append("\(name) \(elapsed.seconds * 1000 + elapsed.attoseconds / 1_000_000_000_000_000)")
        last = now
    }

    var description: String { steps.joined(separator: ", ") }
}
