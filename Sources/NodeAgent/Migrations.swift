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
    func channel(_ uid: String, _ stream: String) -> String { "migration/\(uid)/\(stream)" }
    static let streams = ["libvirt", "memory", "disks"]
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

    private var outcome: JSONValue??
    private var waiter: CheckedContinuation<JSONValue?, Never>?

    /// The target is ready (the migration as it says so), or nil: the migration ended before.
    func targetReady(_ vmim: JSONValue?) {
        let waiting = lock.withLock { () -> CheckedContinuation<JSONValue?, Never>? in
            guard outcome == nil else { return nil }
            outcome = .some(vmim)
            defer { waiter = nil }
            return waiter
        }
        waiting?.resume(returning: vmim)
    }

    /// Waits for `targetReady`.
    func waitForTarget() async -> JSONValue? {
        await withCheckedContinuation { continuation in
            let known = lock.withLock { () -> JSONValue?? in
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
        guard let vmim = outgoingMigrations.envelope(key) ?? incomingMigrations.envelope(key) else { return .done }
        await handle(vmim)
        let phase = vmim["status"]?["phase"]?.string ?? ""
        return Migration.finalPhases.contains(phase) && prepared[vmim["metadata"]?["uid"]?.string ?? ""] == nil ? .done : .requeue(after: .seconds(2))
    }

    /// A migration this node took part in is gone (deleted, or no longer listed): what was prepared for it goes.
    func migrationGone(uid: String) async {
        await cleanupTarget(uid: uid, failed: true)
    }

    private func handle(_ vmim: JSONValue) async {
        guard let uid = vmim["metadata"]?["uid"]?.string else { return }
        let phase = vmim["status"]?["phase"]?.string ?? ""
        let state = vmim["status"]?["migrationState"]
        let me = configuration.name
        if state?["targetNode"]?.string == me {
            switch phase {
            case "Scheduled", "PreparingTarget", "TargetReady":
                guard !preparing.contains(uid), !routed.contains(uid), !givenUp.contains(uid) else { break }
                if phase == "Scheduled" && prepared[uid] == nil {
                    preparing.insert(uid)
                    await prepareTarget(vmim)
                    preparing.remove(uid)
                } else {
                    // Begun by this node's previous agent: its tunnel ends died with it.
                    givenUp.insert(uid)
                    logger.warning("failing a migration this node's previous agent was preparing", metadata: ["migration": "\(uid)"])
                    await cleanupTarget(uid: uid, failed: true)
                    await failMigration(vmim, vmi: nil, reason: "TargetAgentRestarted",
                                        "the target node's agent restarted while the migration was \(phase); the VM stays on \(state?["sourceNode"]?.string ?? "its node")")
                }
            case "Running":
                // Normally the source hands the guest over; if libvirt moved it and that did not happen, claim it.
                if let made = prepared[uid] { await claimIfRunningHere(made, vmim: vmim) }
            case "Failed": await cleanupTarget(uid: uid, failed: true)
            case "Succeeded":
                if let made = prepared[uid] { await recordCompletedStatistics(vmim, domainName: made.domainName) }
                await cleanupTarget(uid: uid, failed: false)
            default: break
            }
        }
        if state?["sourceNode"]?.string == me {
            let deleted = vmim["metadata"]?["deletionTimestamp"] != nil
            if ["Scheduled", "PreparingTarget", "TargetReady"].contains(phase), outgoing[uid] == nil, !deleted {
                let migration = OutgoingMigration()
                outgoing[uid] = migration
                senders?.send { await self.send(vmim, migration) }
            }
            if phase == "Running", outgoing[uid] == nil, !restartFailed.contains(uid) {
                // Running here, but not by this agent: it restarted mid-migration. Where the guest is, libvirt says.
                let namespace = vmim["metadata"]?["namespace"]?.string ?? "default"
                let vmiName = vmim["spec"]?["vmiName"]?.string ?? ""
                let domainName = Resources.domainName(namespace: namespace, name: vmiName)
                let domain = try? await libvirt?.domain(named: domainName)
                if !(await guestIsHere(domainName)) {
                    // libvirt finished the job: the guest runs on the target, whose agent claims it.
                    restartFailed.insert(uid)
                    logger.warning("the guest of a migration this node's previous agent was sending has left; the target claims it", metadata: ["migration": "\(uid)"])
                } else if let domain, (try? await domain.jobStatistics()) ?? nil != nil {
                    // libvirtd still runs the job (its streams died with the previous agent): look again next pass.
                } else {
                    // The job and its tunnels died with the previous process, and the guest stayed here.
                    restartFailed.insert(uid)
                    let vmi = try? await client.get(Kinds.virtualMachineInstance, namespace: namespace, name: vmiName)
                    logger.warning("failing a migration this node's previous agent was sending", metadata: ["migration": "\(uid)"])
                    await failMigration(vmim, vmi: vmi, reason: "SourceAgentRestarted", "the source node's agent restarted during the migration; the VM stayed on \(me)")
                }
            }
            if Migration.finalPhases.contains(phase), outgoing[uid] == nil {
                // Ended without this process's sender (the agent restarted during it): its sockets, and after a
                // success the copies the guest left here.
                let sockets = "\(migrationPaths.directory)/\(uid)"
                if FileManager.default.fileExists(atPath: sockets) { try? FileManager.default.removeItem(atPath: sockets) }
                if phase == "Succeeded" { await removeStaleCopies(vmim) }
            }
            if let migration = outgoing[uid] {
                if phase == "TargetReady" && !deleted {
                    migration.targetReady(vmim)
                } else if Migration.finalPhases.contains(phase) || deleted {
                    migration.targetReady(nil)
                    if deleted && phase == "Running" && !migration.abortRequested {
                        logger.info("migration deleted while running: aborting", metadata: ["migration": "\(uid)"])
                        await migration.requestAbort()
                    }
                }
            }
        }
    }

    /// Called for each VMI on this node: an abort requested on its migration reaches the job.
    func abortIfRequested(_ vmi: JSONValue) async {
        guard vmi["status"]?["migrationState"]?["abortRequested"]?.bool == true,
            let uid = vmi["status"]?["migrationState"]?["migrationUid"]?.string, let migration = outgoing[uid], !migration.abortRequested
        else { return }
        logger.info("migration abort requested", metadata: ["migration": "\(uid)"])
        await migration.requestAbort()
    }

    /// Whether a migration of the VMI from this node has not finished (this agent restarted during it, or its
    /// hand-over has not landed): a guest missing here then is the migration's to account for — starting it again
    /// here could make a second copy of one that runs on the target.
    func migrationFromHereUnfinished(_ vmi: JSONValue) -> Bool {
        let state = vmi["status"]?["migrationState"]
        return state?["migrationUid"]?.string != nil && state?["sourceNode"]?.string == configuration.name && state?["targetNode"]?.string != nil
            && state?["completed"]?.bool != true
    }

    /// Whether the VMI is leaving or has just left this node (its domain going away is not a stop).
    func isMigratingAway(_ vmi: JSONValue) -> Bool {
        let state = vmi["status"]?["migrationState"]
        if let uid = state?["migrationUid"]?.string, outgoing[uid] != nil { return true }

        let domainName = Resources.domainName(namespace: vmi["metadata"]?["namespace"]?.string ?? "default", name: vmi["metadata"]?["name"]?.string ?? "")
        // Just handed over (a list read before the handover may still say it is here) — unless it has come back.
        if let handed = handedOver[domainName], Date.now.timeIntervalSince(handed) < 60, state?["targetNode"]?.string != configuration.name {
            return true
        }
        return false
    }

    // MARK: Target

    private func prepareTarget(_ vmim: JSONValue) async {
        let uid = vmim["metadata"]?["uid"]?.string ?? ""
        let namespace = vmim["metadata"]?["namespace"]?.string ?? "default"
        let vmiName = vmim["spec"]?["vmiName"]?.string ?? ""
        let source = vmim["status"]?["migrationState"]?["sourceNode"]?.string ?? ""
        let domainName = Resources.domainName(namespace: namespace, name: vmiName)
        var current = vmim
        var timer = StepTimer()
        var made = PreparedTarget(uid: uid, namespace: namespace, vmiName: vmiName, domainName: domainName, sourceNode: source, files: [])
        do {
            // The phase is written while the work goes on.
            let scheduled = current
            async let marked = transition(scheduled, to: "PreparingTarget", [:])
            guard let tunnelExit, let tunnelEndpoint = configuration.tunnelEndpoint else {
                throw APIError.badRequest("node \(configuration.name) has no tunnel endpoint for migrations")
            }
            let vmi = try await client.get(Kinds.virtualMachineInstance, namespace: namespace, name: vmiName)
            timer.mark("vmi")
            if let libvirt, (try? await libvirt.domain(named: domainName)) != nil {
                throw APIError.conflict("a domain \(domainName) already exists on node \(configuration.name)")
            }
            timer.mark("libvirt")
            let reported = Dictionary((vmi["status"]?["volumeStatus"]?.array ?? []).compactMap { entry -> (String, JSONValue)? in
                guard let name = entry["name"]?.string else { return nil }
                return (name, entry)
            }, uniquingKeysWith: { first, _ in first })
            for volume in vmi["spec"]?["volumes"]?.array ?? [] {
                guard let volumeName = volume["name"]?.string else { continue }
                if let claim = volume["dataVolume"]?["name"]?.string ?? volume["persistentVolumeClaim"]?["claimName"]?.string {
                    let dataVolume = try await client.get(Kinds.dataVolume, namespace: namespace, name: claim)
                    let disk = try await volumes.disk(for: dataVolume)
                    guard !disk.shared else { continue }
                    let bytes = Quantity(reported[volumeName]?["persistentVolumeClaimInfo"]?["capacity"]?["storage"])?.bytes ?? disk.bytes
                    try await createIncomingDisk(disk.path, bytes: bytes, made: &made)
                } else if let capacity = Quantity(volume["emptyDisk"]?["capacity"])?.bytes {
                    try await createIncomingDisk(emptyDiskPath(domainName: domainName, volume: volumeName), bytes: capacity, made: &made)
                } else if let cloudInit = volume["cloudInitNoCloud"] {
                    let path = cloudInitPath(domainName: domainName, volume: volumeName)
                    made.files.append(path)
                    prepared[uid] = made
                    savePrepared()
                    try await Volumes.cloudInitDisk(
                        at: path, userData: try DomainMapping.userData(of: cloudInit, volume: volumeName), metaData: DomainMapping.metaData(of: vmi),
                        networkData: cloudInit["networkData"]?.string)
                }
            }
            timer.mark("disks")
            try FileManager.default.createDirectory(atPath: "\(migrationPaths.directory)/\(uid)", withIntermediateDirectories: true)
            let policy = PeerPolicy(allowedRoles: [.node], allowedNames: [source])
            try tunnelExit.routes.allow(channel: migrationPaths.channel(uid, "libvirt"), to: .unix(path: libvirtSocketPath), peers: policy)
            try tunnelExit.routes.allow(channel: migrationPaths.channel(uid, "memory"), to: .unix(path: migrationPaths.socket(uid, "memory")), peers: policy)
            try tunnelExit.routes.allow(channel: migrationPaths.channel(uid, "disks"), to: .unix(path: migrationPaths.socket(uid, "disks")), peers: policy)
            prepared[uid] = made
            routed.insert(uid)
            savePrepared()
            timer.mark("routes")
            current = try await marked
            timer.mark("phase")
            var state = current["status"]?["migrationState"] ?? [:]
            state["targetNodeAddress"] = .string(tunnelEndpoint)
            state["targetRunDirectory"] = .string(configuration.runDirectory)
            _ = try await transition(current, to: "TargetReady", ["migrationState": state])
            timer.mark("phase")
            logger.info("migration target ready", metadata: ["migration": "\(uid)", "vmi": "\(namespace)/\(vmiName)", "disks": "\(made.files.count)", "ms": "\(timer.description)"])
        } catch {
            logger.warning("migration target preparation failed", metadata: ["migration": "\(uid)", "error": "\(error)"])
            givenUp.insert(uid)
            prepared[uid] = made
            await cleanupTarget(uid: uid, failed: true)
            await failMigration(current, vmi: nil, reason: "TargetPreparationFailed", "node \(configuration.name) could not prepare the target: \(Self.describe(error))")
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
        try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try await Volumes.createEmpty(at: path, bytes: bytes)
    }

    /// Writes libvirt's account of the incoming job that just completed here (its downtime, the memory totals) into
    /// the migration's record and the VMI's migration state — off the switchover's path: the source hands over and
    /// reports success first. The disk mirror's figures stay as the source reported them (this copy covers memory).
    func recordCompletedStatistics(_ vmim: JSONValue, domainName: String) async {
        guard let libvirt, let domain = try? await libvirt.domain(named: domainName),
            let completed = try? await domain.jobStatistics(completed: true)
        else { return }
        let elapsed = Duration.milliseconds(Int64(clamping: completed.timeElapsedMs ?? 0))
        var progress = Self.finalProgress(completed, elapsed: elapsed)
        for key in ["diskTotalBytes", "diskProcessedBytes"] { progress[key] = nil }
        if completed.timeElapsedMs == nil { progress["elapsedMilliseconds"] = nil }
        var record: JSONValue = ["progress": progress]
        if let downtime = completed.downtimeMs {
            record["downtimeMilliseconds"] = .int(Int64(clamping: downtime))
            jobMetrics.recordDowntime(milliseconds: downtime)
        }
        let namespace = vmim["metadata"]?["namespace"]?.string ?? "default"
        do {
            _ = try await client.patch(Kinds.migration, namespace: namespace, name: vmim["metadata"]?["name"]?.string ?? "",
                                       ["status": ["migrationState": record]], status: true)
            if let vmiName = vmim["spec"]?["vmiName"]?.string {
                _ = try await client.patch(Kinds.virtualMachineInstance, namespace: namespace, name: vmiName,
                                           ["status": ["migrationState": record]], status: true)
            }
        } catch {
            logger.warning("migration statistics write failed", metadata: ["migration": "\(vmim["metadata"]?["uid"]?.string ?? "")", "error": "\(error)"])
        }
    }

    /// Undoes a target's preparation. After a failure the half-arrived domain and the pre-created disks go (unless
    /// the VMI runs here after all); after success only the channels and sockets.
    func cleanupTarget(uid: String, failed: Bool) async {
        guard let made = prepared.removeValue(forKey: uid) else { return }
        for stream in MigrationPaths.streams { tunnelExit?.routes.remove(channel: migrationPaths.channel(uid, stream)) }
        routed.remove(uid)
        try? FileManager.default.removeItem(atPath: "\(migrationPaths.directory)/\(uid)")
        if failed {
            // A guest that runs here is never removed, whatever the migration's record says: libvirt finished the job,
            // so this is the guest now (the source has at most a paused remnant). It is claimed instead.
            let (domain, presence) = await incomingDomain(made.domainName)
            if domain != nil, presence == nil {
                // libvirt cannot say what the domain is doing: nothing is removed now; the next pass looks again.
                prepared[uid] = made
                logger.warning("kept a failed migration's target for now: libvirt does not report its domain's state", metadata: ["migration": "\(uid)"])
                return
            }
            if domain != nil, presence != .inactive && presence != .pausedForMigration {
                liveSince[uid] = .now - Self.claimDelay
                let live = await claimIfRunningHere(made, vmim: nil)
                liveSince[uid] = nil
                guard live || presence == .postCopy else {
                    // It changed while it was looked at (libvirt tearing it down): the next pass looks again.
                    prepared[uid] = made
                    return
                }
                savePrepared()
                logger.warning("kept the guest of a failed or vanished migration: it runs here", metadata: ["migration": "\(uid)", "domain": "\(made.domainName)", "presence": "\(presence.map { "\($0)" } ?? "unknown")"])
                return
            }
            let vmi = try? await client.get(Kinds.virtualMachineInstance, namespace: made.namespace, name: made.vmiName)
            let runsHere = vmi?["status"]?["nodeName"]?.string == configuration.name
            if !runsHere {
                if let domain {
                    try? await domain.destroy()
                    try? await domain.undefine()
                    logger.info("removed the half-arrived domain of a failed migration", metadata: ["domain": "\(made.domainName)"])
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
            } catch where (error as HypervisorError).code == .domainNotFound {
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

    /// Sends one migration: stages everything while the target prepares (the VMI, the volumes to copy, the tunnel
    /// entries, the destination XML, the libvirt job's second connection), waits for `TargetReady`, then runs the
    /// job and hands the VMI over.
    private func send(_ vmim: JSONValue, _ migration: OutgoingMigration) async {
        let uid = vmim["metadata"]?["uid"]?.string ?? ""
        let namespace = vmim["metadata"]?["namespace"]?.string ?? "default"
        let vmiName = vmim["spec"]?["vmiName"]?.string ?? ""
        let target = vmim["status"]?["migrationState"]?["targetNode"]?.string ?? ""
        let domainName = Resources.domainName(namespace: namespace, name: vmiName)
        var current = vmim
        var entries: [TunnelEntry] = []
        var vmi: JSONValue?
        var staged: MigrationJob?
        var jobStarted = false
        var timer = StepTimer()
        defer { outgoing[uid] = nil }
        do {
            // Staging, while the target prepares.
            let fetched = try await client.get(Kinds.virtualMachineInstance, namespace: namespace, name: vmiName)
            vmi = fetched
            guard let libvirt else { throw APIError.internalError("no libvirt connection") }
            let targetNode = try await client.get(Kinds.node, name: target)
            guard let address = targetNode["status"]?["tunnelEndpoint"]?.string else {
                throw APIError.badRequest("target node \(target) publishes no tunnel endpoint")
            }
            let remote = try Endpoint(parsing: address)
            let targetRunDirectory = targetNode["status"]?["runDirectory"]?.string ?? configuration.runDirectory
            timer.mark("vmi+node")

            // The streams: a local socket per stream, each a tunnel to the target's agent.
            try FileManager.default.createDirectory(atPath: "\(migrationPaths.directory)/\(uid)", withIntermediateDirectories: true)
            guard let streamGroup = streamThreads?.group else { throw APIError.internalError("node \(configuration.name) runs no migration stream threads") }
            // Each entry dials its first tunnel connection at once, so the handshake is done by the time libvirt (and
            // then QEMU) connects; the disks' entry only when disks are copied.
            let paths = migrationPaths
            let (provider, logger) = (provider, logger)
            @Sendable func openEntry(_ stream: String, spare: Bool) async throws -> TunnelEntry {
                let path = paths.socket(uid, stream)
                try? FileManager.default.removeItem(atPath: path)
                return try await TunnelEntry.start(
                    listeningOn: .unix(path: path), remote: remote, channel: paths.channel(uid, stream), provider: provider,
                    exitPolicy: PeerPolicy(allowedRoles: [.node], allowedNames: [target]), group: streamGroup,
                    spareConnections: spare ? 1 : 0, logger: logger)
            }
            entries.append(try await openEntry("libvirt", spare: true))
            entries.append(try await openEntry("memory", spare: true))
            timer.mark("tunnels")

            let (copied, shared, copiedFiles) = try await copies(of: fetched)
            entries.append(try await openEntry("disks", spare: !copied.isEmpty))
            timer.mark("volumes")
            let domain = try await libvirt.domain(named: domainName)
            let sourceXML = try await domain.xml(migratable: true)
            let xml = DomainMapping.destinationXML(sourceXML, from: configuration.runDirectory, to: targetRunDirectory)
            let settings = Self.migrationSettings(try? await client.get(Kinds.kubeVirt, namespace: "kubevirt", name: "kubevirt"))
            // A guest whose memory this node's QEMU cannot copy live without losing writes is paused for the copy.
            let hazard = settings.allowUnsafeLiveMemoryCopy ? nil : MemoryCopy.liveCopyHazard(domainXML: sourceXML, qemu: try await libvirt.hypervisorVersion())
            let options = MigrationOptions(
                destinationURI: "qemu+unix:///system?socket=\(migrationPaths.socket(uid, "libvirt"))",
                migrationURI: "unix://\(migrationPaths.socket(uid, "memory"))",
                disksURI: copied.isEmpty ? nil : "unix://\(migrationPaths.socket(uid, "disks"))",
                destinationXML: xml, storage: copied.isEmpty ? .none : .full, disks: copied,
                bandwidthMiBPerSecond: settings.bandwidthMiB, maxDowntime: settings.maxDowntime,
                initialDowntime: settings.initialDowntime, autoConverge: settings.autoConverge,
                allowPostCopy: settings.allowPostCopy && hazard == nil, allowUnsafe: shared, parallelConnections: settings.parallelConnections,
                memoryCopy: hazard == nil ? .live : .paused)
            let job = MigrationJob(domain: domain, options: options, timeouts: settings.timeouts, pollInterval: .milliseconds(250), monitorConnection: monitorConnection)
            staged = job
            try await job.prepare()
            timer.mark("job")
            let stagedSteps = timer.description
            timer = StepTimer()

            // The target is ready (or the migration ended before it was).
            guard let ready = await migration.waitForTarget() else {
                logger.info("migration ended before its target was ready", metadata: ["migration": "\(uid)"])
                await job.discard()
                for entry in entries { await entry.close() }
                try? FileManager.default.removeItem(atPath: "\(migrationPaths.directory)/\(uid)")
                return
            }
            current = ready
            timer.mark("target")
            let started = Migration.timestamp()
            var state = current["status"]?["migrationState"] ?? [:]
            state["startTimestamp"] = .string(started)
            var changes: JSONValue = ["migrationState": state]
            if let hazard {
                state["mode"] = .string(MemoryCopy.paused.rawValue)
                changes["migrationState"] = state
                changes["conditions"] = Resources.setting(
                    Resources.condition("MemoryCopyPaused", true, reason: "LiveCopyUnsafe", message: "the guest is paused while its memory is copied: \(hazard)"),
                    in: current["status"]?["conditions"]) ?? current["status"]?["conditions"] ?? []
            }
            // The job starts at once; the phase is written meanwhile. Should the migration have moved on (failed,
            // aborted) before that write, the job is aborted.
            migration.job = job
            jobStarted = true
            if migration.abortRequested { await job.abort(reason: "the migration was aborted by request") }
            // The completed statistics (libvirt's downtime, the totals) are the target's to record after the
            // handover, off the switchover's path.
            let runner = Task { () throws -> MigrationResult in try await job.run(fetchCompletedStatistics: false) }
            do {
                // The job already runs: a controller that is briefly unreachable (restarting) is waited for.
                let ready = current
                current = try await persistently("migration \(uid) Running", for: .seconds(60)) { () async throws(APIError) -> JSONValue in
                    try await transition(ready, to: "Running", changes)
                }
            } catch {
                await job.abort(reason: "the migration changed before it ran: \(Self.describe(error))")
                _ = try? await runner.value
                throw error
            }
            timer.mark("phase")
            let reporter = Task { await self.reportProgress(of: job, vmi: fetched) }
            defer { reporter.cancel() }
            let targetAddress = state["targetNodeAddress"] ?? .null
            var vmiState: JSONValue = ["startTimestamp": .string(started), "targetNodeAddress": targetAddress]
            if hazard != nil { vmiState["mode"] = .string(MemoryCopy.paused.rawValue) }
            Task { [vmiState] in await self.patchMigrationState(fetched, vmiState) }
            // An abort that hangs (a stalled stream: QEMU waits for in-flight disk writes) is ended by breaking the
            // tunnels, which fails the streams at once. The source domain keeps running either way.
            let streams = entries
            let breaker = Task {
                var since: ContinuousClock.Instant?
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(250))
                    guard job.abortReason != nil else { continue }
                    let now = ContinuousClock.now
                    if since == nil { since = now }
                    if let since, now - since >= Self.abortGrace {
                        self.logger.warning("migration abort is stuck: breaking its tunnels", metadata: ["migration": "\(uid)"])
                        for entry in streams { await entry.close() }
                        return
                    }
                }
            }
            defer { breaker.cancel() }
            logger.info("migration started", metadata: [
                "migration": "\(uid)", "target": "\(target)", "copied": "\(copied)", "shared": "\(shared)", "staged ms": "\(stagedSteps)", "ms": "\(timer.description)",
            ])
            let result: MigrationResult
            do {
                result = try await runner.value
            } catch {
                if migration.abortRequested {
                    throw MigrationAborted(message: "the migration was aborted by request")
                }
                throw error
            }

            // Switchover done: the VMI now runs on the target.
            let jobEnded = Date()
            reporter.cancel()
            let ended = Migration.timestamp(jobEnded)
            handedOver[domainName] = .now
            var finalState: JSONValue = ["completed": true, "failed": false, "endTimestamp": .string(ended)]
            // When libvirt's migrate call ran (the control-plane latency benchmark measures around it).
            if let callStarted = job.migrateCallStarted { finalState["libvirtJobStartTimestamp"] = .string(Migration.timestamp(callStarted)) }
            finalState["libvirtJobEndTimestamp"] = .string(Migration.timestamp(jobEnded))
            // The final figures: the last sample; a migration that ended before its first sample waits for the
            // completed statistics.
            let completedEarly = result.lastProgress == nil ? await job.completedStatistics() : nil
            if let statistics = completedEarly ?? result.lastProgress {
                finalState["progress"] = Self.finalProgress(statistics, elapsed: result.duration)
            }
            if let downtime = completedEarly?.downtimeMs { finalState["downtimeMilliseconds"] = .int(Int64(downtime)) }
            jobMetrics.recordSent(duration: result.duration, statistics: completedEarly ?? result.lastProgress)
            current = await handOver(current, namespace: namespace, vmiName: vmiName, target: target, finalState: finalState)
            // libvirt's account of the finished job (its downtime) is written by the target, which has it locally.
            for file in copiedFiles { try? FileManager.default.removeItem(atPath: file) }
            logger.info("migration succeeded", metadata: ["migration": "\(uid)", "target": "\(target)", "wall": "\(result.duration)"])
        } catch {
            await staged?.discard()
            let aborted = error is MigrationAborted || migration.abortRequested
            if jobStarted, !(await guestIsHere(domainName)) {
                // libvirt reports a failure, but the guest has left this node (a step after the switchover failed): it
                // runs on the target, whose agent claims it. Recording a failure would be recording a lie.
                handedOver[domainName] = .now
                logger.error("the migration's job failed after the guest left this node; the target claims it", metadata: [
                    "migration": "\(uid)", "error": "\(error)",
                ])
            } else {
                logger.warning("migration failed", metadata: ["migration": "\(uid)", "error": "\(error)"])
                await failMigration(current, vmi: vmi, reason: aborted ? "Aborted" : "MigrationFailed", Self.describe(error), abortStatus: aborted ? "Succeeded" : nil)
            }
        }
        for entry in entries { await entry.close() }
        try? FileManager.default.removeItem(atPath: "\(migrationPaths.directory)/\(uid)")
    }

    /// What a migration of `vmi` copies from this node: the devices block-copied (local DataVolumes and empty
    /// disks), whether a shared DataVolume stays where it is, and the files on this node that are stale once the
    /// guest runs elsewhere (the copied images and the cloud-init seed, which the target rebuilds).
    func copies(of vmi: JSONValue) async throws(APIError) -> (devices: [String], shared: Bool, files: [String]) {
        let namespace = vmi["metadata"]?["namespace"]?.string ?? "default"
        let domainName = Resources.domainName(namespace: namespace, name: vmi["metadata"]?["name"]?.string ?? "")
        let targets = DomainMapping.diskTargets(of: vmi)
        var devices: [String] = []
        var shared = false
        var files: [String] = []
        for volume in vmi["spec"]?["volumes"]?.array ?? [] {
            guard let volumeName = volume["name"]?.string, let device = targets[volumeName] else { continue }
            if let claim = volume["dataVolume"]?["name"]?.string ?? volume["persistentVolumeClaim"]?["claimName"]?.string {
                let disk = try await volumes.disk(for: try await client.get(Kinds.dataVolume, namespace: namespace, name: claim))
                if disk.shared {
                    shared = true
                } else {
                    devices.append(device)
                    files.append(disk.path)
                }
            } else if volume["emptyDisk"] != nil {
                devices.append(device)
                files.append(emptyDiskPath(domainName: domainName, volume: volumeName))
            } else if volume["cloudInitNoCloud"] != nil {
                files.append(cloudInitPath(domainName: domainName, volume: volumeName))
            }
        }
        return (devices, shared, files)
    }

    /// A migration from this node that succeeded without this process sending it to the end (the agent restarted at
    /// the switchover, and the target claimed the guest): once the VMI runs on the target and no domain of it is
    /// left here, the local copies its sender would have removed are removed.
    func removeStaleCopies(_ vmim: JSONValue) async {
        guard let uid = vmim["metadata"]?["uid"]?.string, !sourceCleaned.contains(uid),
            let target = vmim["status"]?["migrationState"]?["targetNode"]?.string
        else { return }
        let namespace = vmim["metadata"]?["namespace"]?.string ?? "default"
        let vmiName = vmim["spec"]?["vmiName"]?.string ?? ""
        guard let vmi = try? await client.get(Kinds.virtualMachineInstance, namespace: namespace, name: vmiName),
            vmi["status"]?["nodeName"]?.string == target, vmi["status"]?["migrationState"]?["migrationUid"]?.string == uid,
            !(await guestIsHere(Resources.domainName(namespace: namespace, name: vmiName))),
            let files = try? await copies(of: vmi).files
        else { return }
        sourceCleaned.insert(uid)
        for file in files where FileManager.default.fileExists(atPath: file) {
            try? FileManager.default.removeItem(atPath: file)
            logger.info("removed a copy the guest left behind", metadata: ["migration": "\(uid)", "file": "\(file)"])
        }
    }

    /// Publishes the job's progress on the VMI's migration state, at most twice a second.
    private func reportProgress(of job: MigrationJob, vmi: JSONValue) async {
        var last = ContinuousClock.now - .seconds(1)
        for await sample in job.progress {
            guard ContinuousClock.now - last >= .milliseconds(500) else { continue }
            last = .now
            await patchMigrationState(vmi, ["progress": Self.progress(sample.statistics, phase: sample.phase, elapsed: sample.elapsed)])
        }
    }

    /// The `migrationState.progress` object of a finished job.
    static func finalProgress(_ statistics: JobStatistics, elapsed: Duration) -> JSONValue {
        var progress = Self.progress(statistics, phase: statistics.phase, elapsed: elapsed)
        progress["phase"] = "Completed"
        return progress
    }

    /// The `migrationState.progress` object of a statistics sample.
    static func progress(_ statistics: JobStatistics, phase: JobStatistics.Phase, elapsed: Duration) -> JSONValue {
        let parts = elapsed.components
        var progress: JSONValue = ["elapsedMilliseconds": .int(parts.seconds * 1000 + parts.attoseconds / 1_000_000_000_000_000)]
        switch phase {
        case .setup: progress["phase"] = "Setup"
        case .disks: progress["phase"] = "Disks"
        case .memory(let iteration):
            progress["phase"] = "Memory"
            progress["iteration"] = .int(Int64(iteration))
        }
        func put(_ key: String, _ value: UInt64?) { if let value { progress[key] = .int(Int64(clamping: value)) } }
        put("dataTotalBytes", statistics.dataTotal)
        put("dataProcessedBytes", statistics.dataProcessed)
        put("dataRemainingBytes", statistics.dataRemaining)
        put("memoryDirtyRateBytesPerSecond", statistics.memoryDirtyRate)
        put("memoryBytesPerSecond", statistics.memoryBytesPerSecond)
        put("diskTotalBytes", statistics.diskTotal)
        put("diskProcessedBytes", statistics.diskProcessed)
        return progress
    }

    // MARK: Status writes

    /// Moves the migration to `phase` (appending to its phase history) if it is still in one of the phases this
    /// step follows — a phase the controller wrote meanwhile (a failure, an abort) is never overwritten. A deleted
    /// migration only moves to a final phase. Returns the stored object.
    @discardableResult
    func transition(_ vmim: JSONValue, to phase: String, _ changes: JSONValue) async throws(APIError) -> JSONValue {
        let namespace = vmim["metadata"]?["namespace"]?.string ?? "default"
        let name = vmim["metadata"]?["name"]?.string ?? ""
        let expected: Set<String> = switch phase {
        case "PreparingTarget": ["Scheduled"]
        case "TargetReady": ["PreparingTarget"]
        case "Running": ["TargetReady"]
        case "Succeeded": ["Running"]
        default: ["Scheduled", "PreparingTarget", "TargetReady", "Running"]
        }
        var current = vmim
        for _ in 0..<5 {
            let now = current["status"]?["phase"]?.string ?? ""
            // Already there: an earlier attempt landed though its answer was lost.
            if now == phase { return current }
            guard expected.contains(now), Migration.finalPhases.contains(phase) || current["metadata"]?["deletionTimestamp"] == nil else {
                throw APIError.conflict("migration \(namespace)/\(name) is \(now)\(current["metadata"]?["deletionTimestamp"] == nil ? "" : " and deleted"); not moving it to \(phase)")
            }
            do {
                return try await client.patch(Kinds.migration, namespace: namespace, name: name, Migration.transitionPatch(current, to: phase, changes), status: true)
            } catch {
                guard error.code == 409 else { throw error }
            }
            current = try await client.get(Kinds.migration, namespace: namespace, name: name)
        }
        throw APIError.conflict("migration \(namespace)/\(name) kept changing; not moving it to \(phase)")
    }

    /// Fails a migration from this node: the migration says why; the VMI too when it is on this node.
    func failMigration(_ vmim: JSONValue, vmi: JSONValue?, reason: String, _ message: String, abortStatus: String? = nil) async {
        let ended = Migration.timestamp()
        var state = vmim["status"]?["migrationState"] ?? [:]
        state["failed"] = true
        state["completed"] = true
        state["failureReason"] = .string(message)
        state["endTimestamp"] = .string(ended)
        if let abortStatus { state["abortStatus"] = .string(abortStatus) }
        let conditions = Resources.setting(Resources.condition("Failed", true, reason: reason, message: message), in: vmim["status"]?["conditions"])
            ?? vmim["status"]?["conditions"] ?? []
        do {
            // Retried for a while: the controller may be restarting; until this lands the migration looks unfinished.
            try await persistently("migration failure", for: .seconds(60)) { () async throws(APIError) in
                try await transition(vmim, to: "Failed", ["migrationState": state, "conditions": conditions])
            }
        } catch {
            logger.warning("could not record the failed migration", metadata: ["error": "\(error)"])
        }
        if let vmi {
            var changes: JSONValue = ["failed": true, "completed": true, "failureReason": .string(message), "endTimestamp": .string(ended)]
            if let abortStatus { changes["abortStatus"] = .string(abortStatus) }
            await patchMigrationState(vmi, changes)
        }
    }

    func patchMigrationState(_ vmi: JSONValue, _ changes: JSONValue) async {
        let namespace = vmi["metadata"]?["namespace"]?.string ?? "default"
        let name = vmi["metadata"]?["name"]?.string ?? ""
        do {
            _ = try await client.patch(Kinds.virtualMachineInstance, namespace: namespace, name: name, ["status": ["migrationState": changes]], status: true)
        } catch {
            logger.warning("VMI migration state write failed", metadata: ["vmi": "\(namespace)/\(name)", "error": "\(error)"])
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
    static func migrationSettings(_ kubeVirt: JSONValue?) -> MigrationSettings {
        let migrations = kubeVirt?["spec"]?["configuration"]?["migrations"]
        var settings = MigrationSettings()
        if let bandwidth = Quantity(migrations?["bandwidthPerMigration"])?.bytes, bandwidth > 0 { settings.bandwidthMiB = max(1, bandwidth >> 20) }
        settings.autoConverge = migrations?["allowAutoConverge"]?.bool ?? false
        settings.allowPostCopy = migrations?["allowPostCopy"]?.bool ?? false
        let perGiB = migrations?["completionTimeoutPerGiB"]?.int ?? 150
        let progress = migrations?["progressTimeout"]?.int ?? 150
        settings.timeouts = MigrationTimeouts(completionPerGiB: .seconds(perGiB), progress: .seconds(progress))
        settings.maxDowntime = (migrations?["maxDowntimeMilliseconds"]?.int).map { .milliseconds($0) }
        let ceiling = settings.maxDowntime ?? MigrationOptions.qemuDefaultDowntime
        settings.initialDowntime = min((migrations?["initialDowntimeMilliseconds"]?.int).map { .milliseconds($0) } ?? defaultInitialDowntime, ceiling)
        settings.parallelConnections = (migrations?["parallelMigrationConnections"]?.int).map { Int($0) }
        settings.allowUnsafeLiveMemoryCopy = migrations?["allowUnsafeLiveMemoryCopy"]?.bool ?? false
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
