import ClusterAPI
import ClusterClient
import Foundation
import Hypervisor
import Logging
import Synchronization
import TLSTransport

/// The first thing that went wrong on a migration's tunnels (an exit unreachable, a channel refused): libvirt sees
/// only a closed socket, so a failure's reason names this too.
final class TunnelTrouble: Sendable {
    private let first = Mutex<String?>(nil)

    func record(_ event: TunnelEvent) {
        guard case .refused(_, let error) = event else { return }
        first.withLock { $0 = $0 ?? error.message }
    }

    /// `reason`, with what the tunnels said when they said something.
    func explain(_ reason: String) -> String {
        first.withLock { $0 }.map { "\(reason) (the migration's tunnel: \($0))" } ?? reason
    }
}

/// One migration this node sends, in named steps: `stage` everything while the target prepares (the VMI, the
/// target's tunnel endpoint, the tunnel entries, the volumes to copy, the destination XML, the libvirt job's second
/// connection); wait for `TargetReady`; `runJob` — the job, with the phase written to Running meanwhile and the
/// progress reporter and the link breaker as child tasks that end with it; then `finish` (hand the VMI over) or
/// `fail` (record why, unless the guest has left). Every step runs on the agent's actor; every task it starts is a
/// child task.
struct MigrationSender {
    let migration: OutgoingMigration
    let uid: String
    let namespace: String
    let vmiName: String
    /// The target node (for a decentralized migration, the peer cluster's node its target half names).
    private(set) var target: String
    let domainName: String
    /// The migration as last read or written.
    private var current: VirtualMachineInstanceMigration
    /// The VMI as staging read it.
    private var vmi: VirtualMachineInstance?
    /// The local ends of the migration's tunnels.
    private var entries: [TunnelEntry] = []
    private let tunnelTrouble = TunnelTrouble()
    private var staged: Staged?
    /// Whether the job has been handed to libvirt (after which where the guest runs is libvirt's to say).
    private var jobStarted = false
    private var timer = StepTimer()
    /// What names the migration's sockets and tunnel channels: its uid, or for a decentralized migration the target
    /// side's (the peer cluster's exit serves the channels, and its incoming QEMU listens, under that name).
    private var streams: String

    /// What staging made ready.
    private struct Staged {
        var vmi: VirtualMachineInstance
        var job: MigrationJob
        /// Why the guest's memory is copied while it is paused, when it must be.
        var hazard: String?
        /// The devices block-copied, whether a shared volume stays put, and the files stale here once it ran.
        var copied: [String]
        var shared: Bool
        var copiedFiles: [String]
        /// How long staging's steps took, for the log.
        var steps: String
    }

    init(_ vmim: VirtualMachineInstanceMigration, _ migration: OutgoingMigration) {
        self.migration = migration
        current = vmim
        uid = vmim.metadata.uid ?? ""
        streams = uid
        namespace = vmim.key.namespace ?? "default"
        vmiName = vmim.spec.vmiName
        target = vmim.status?.migrationState?.targetNode ?? ""
        domainName = Resources.domainName(namespace: namespace, name: vmiName)
    }

    /// Sends the migration to its end, whichever it is.
    mutating func run(on agent: isolated NodeAgent) async {
        do {
            if current.isDecentralized {
                // The peer cluster's target says where it listens only once it is ready: staging waits for that.
                guard let ready = await migration.waitForTarget() else {
                    agent.logger.info("migration ended before its target was ready", metadata: ["migration": "\(uid)"])
                    return
                }
                current = ready
                let staged = try await stage(on: agent)
                timer.mark("target")
                let result = try await runJob(staged, on: agent)
                await finish(staged, result, on: agent)
                await closeEntries(on: agent)
                return
            }
            let staged = try await stage(on: agent)
            // The target is ready (or the migration ended before it was).
            guard let ready = await migration.waitForTarget() else {
                agent.logger.info("migration ended before its target was ready", metadata: ["migration": "\(uid)"])
                await staged.job.discard()
                await closeEntries(on: agent)
                return
            }
            current = ready
            timer.mark("target")
            let result = try await runJob(staged, on: agent)
            await finish(staged, result, on: agent)
        } catch {
            await fail(error, on: agent)
        }
        await closeEntries(on: agent)
    }

    /// Staging, while the target prepares.
    private mutating func stage(on agent: isolated NodeAgent) async throws -> Staged {
        let vmi = try await agent.client.get(VirtualMachineInstance.self, namespace: namespace, name: vmiName)
        self.vmi = vmi
        guard let libvirt = agent.libvirt else { throw APIError.internalError("no libvirt connection") }
        let decentralized = current.isDecentralized
        // Inside the cluster the target node's record says where it listens; a decentralized target's half (mirrored
        // from the peer cluster) says it, and only that cluster's node of that name is accepted at the other end.
        let address: String?
        let targetRunDirectory: String
        // Whom the tunnels' far end must be: the target node, or the peer cluster's gateway that carries them there.
        var farEnd = PeerPolicy(allowedRoles: [.node], allowedNames: [target])
        let targetHalf = vmi.status?.migrationState?.targetState
        if decentralized {
            guard let cluster = current.status?.synchronizationPeer?.cluster else {
                throw APIError.conflict("migration \(uid) is bound to no peer cluster")
            }
            // The node is the one the target half names now (the VMIM seen earlier may still show another).
            if let node = targetHalf?.node { target = node }
            if let gateway = targetHalf?.gateway {
                address = gateway
                farEnd = PeerPolicy(allowedRoles: [.controller], cluster: cluster)
            } else {
                address = targetHalf?.nodeAddress
                farEnd = PeerPolicy(allowedRoles: [.node], allowedNames: [target], cluster: cluster)
            }
            targetRunDirectory = targetHalf?.runDirectory ?? agent.configuration.runDirectory
            guard let targetUID = targetHalf?.migrationUID, !targetUID.isEmpty else {
                throw APIError.badRequest("the target's half names no migration uid")
            }
            streams = targetUID
        } else {
            let targetNode = try await agent.client.get(Node.self, name: target)
            address = targetNode.status?.tunnelEndpoint
            targetRunDirectory = targetNode.status?.runDirectory ?? agent.configuration.runDirectory
        }
        guard let address else {
            throw APIError.badRequest("target node \(target) publishes no tunnel endpoint")
        }
        let remote = try Endpoint(parsing: address)
        timer.mark("vmi+node")

        // The streams: a local socket per stream, each a tunnel to the target's agent.
        let paths = agent.migrationPaths
        try FileManager.default.createDirectory(
            atPath: "\(paths.directory)/\(streams)", withIntermediateDirectories: true)
        guard let streamGroup = agent.streamThreads?.group else {
            throw APIError.internalError("node \(agent.configuration.name) runs no migration stream threads")
        }
        // Each entry dials its first tunnel connection at once, so the handshake is done by the time libvirt (and
        // then QEMU) connects; the disks' entry only when disks are copied.
        let (provider, logger, streams, exitPolicy, trouble) = (
            agent.provider, agent.logger, streams, farEnd, tunnelTrouble
        )
        @Sendable func openEntry(_ stream: String, spare: Bool) async throws -> TunnelEntry {
            let path = paths.socket(streams, stream)
            try? FileManager.default.removeItem(atPath: path)
            return try await TunnelEntry.start(
                listeningOn: .unix(path: path), remote: remote, channel: paths.channel(streams, stream),
                provider: provider,
                exitPolicy: exitPolicy,
                group: streamGroup,
                spareConnections: spare ? 1 : 0, logger: logger, onEvent: trouble.record)
        }
        entries.append(try await openEntry("libvirt", spare: true))
        entries.append(try await openEntry("memory", spare: true))
        timer.mark("tunnels")

        let (copied, shared, copiedFiles) = try await agent.copies(of: vmi, decentralized: decentralized)
        entries.append(try await openEntry("disks", spare: !copied.isEmpty))
        timer.mark("volumes")
        let domain = try await libvirt.domain(named: domainName)
        let sourceXML = try await domain.xml(migratable: true)
        let xml: String
        var destinationName: String?
        if decentralized {
            // The guest becomes the target VM's: its disks on the target's volumes, its name in the target namespace.
            let targetDomain = Resources.domainName(
                namespace: targetHalf?.domainNamespace ?? namespace, name: targetHalf?.domainName ?? vmiName)
            destinationName = targetDomain == domainName ? nil : targetDomain
            // Every disk copied must land where the target VM keeps it: a device it did not name is refused, never
            // written to whatever path the source uses.
            if let missing = copied.first(where: { targetHalf?.disks?[$0] == nil }) {
                throw APIError.badRequest(
                    "the target VM has no disk for guest device \(missing) (the target VM needs the source's disks)")
            }
            xml = DomainMapping.decentralizedDestinationXML(
                sourceXML, disks: targetHalf?.disks ?? [:],
                serial: (
                    "\(agent.configuration.runDirectory)/\(domainName).serial",
                    "\(targetRunDirectory)/\(targetDomain).serial"
                ), from: agent.configuration.runDirectory, to: targetRunDirectory)
        } else {
            xml = DomainMapping.destinationXML(
                sourceXML, from: agent.configuration.runDirectory, to: targetRunDirectory)
        }
        // The configuration the controller stamped when it scheduled the migration (the cluster's as of then); the
        // informer's copy only for a migration scheduled without one.
        let state = vmi.status?.migrationState
        let stamped = (state?.migrationUid == uid ? state?.migrationConfiguration : nil).flatMap {
            try? $0.decode(KubeVirt.Migrations.self)
        }
        let settings = NodeAgent.migrationSettings(stamped ?? agent.kubeVirt?.migrations)
        // A guest whose memory this node's QEMU cannot copy live without losing writes is paused for the copy.
        let hazard =
            settings.allowUnsafeLiveMemoryCopy
            ? nil : MemoryCopy.liveCopyHazard(domainXML: sourceXML, qemu: try await libvirt.hypervisorVersion())
        let options = MigrationOptions(
            destinationURI: "qemu+unix:///system?socket=\(paths.socket(streams, "libvirt"))",
            migrationURI: "unix://\(paths.socket(streams, "memory"))",
            disksURI: copied.isEmpty ? nil : "unix://\(paths.socket(streams, "disks"))",
            // A decentralized move copies as KubeVirt's does (NON_SHARED_INC: each disk's top image onto the target's
            // pre-created one); inside the cluster the whole disk (NON_SHARED_DISK).
            destinationXML: xml, destinationName: destinationName,
            storage: copied.isEmpty ? .none : decentralized ? .incremental : .full,
            disks: copied,
            bandwidthMiBPerSecond: settings.bandwidthMiB, maxDowntime: settings.maxDowntime,
            initialDowntime: settings.initialDowntime, autoConverge: settings.autoConverge,
            allowPostCopy: settings.allowPostCopy && hazard == nil, allowUnsafe: shared && !decentralized,
            parallelConnections: settings.parallelConnections,
            memoryCopy: hazard == nil ? .live : .paused)
        let job = MigrationJob(
            domain: domain, options: options, timeouts: settings.timeouts, pollInterval: .milliseconds(250),
            monitorConnection: agent.monitorConnection)
        staged = Staged(
            vmi: vmi, job: job, hazard: hazard, copied: copied, shared: shared, copiedFiles: copiedFiles, steps: "")
        try await job.prepare()
        timer.mark("job")
        staged?.steps = timer.description
        timer = StepTimer()
        return staged!
    }

    /// Runs the job: it starts at once (the completed statistics — libvirt's downtime, the totals — are the target's
    /// to record after the hand-over, off the switchover's path) while the phase is written to Running; should the
    /// migration have moved on (failed, aborted) before that write, the job is aborted. The progress reporter and the
    /// link breaker run beside the job as child tasks and end with it.
    private mutating func runJob(_ staged: Staged, on agent: isolated NodeAgent) async throws -> MigrationResult {
        let job = staged.job
        let started = Migration.timestamp()
        let hazard = staged.hazard
        migration.job = job
        jobStarted = true
        if migration.abortRequested { await job.abort(reason: "the migration was aborted by request") }
        let (uid, ready, migration, entries, vmi) = (uid, current, migration, entries, staged.vmi)
        let logger = agent.logger
        return try await withThrowingTaskGroup(of: MigrationResult?.self) { group in
            group.addTask { try await job.run(fetchCompletedStatistics: false) }
            do {
                // The job already runs: a controller that is briefly unreachable (restarting) is waited for.
                current = try await agent.persistently("migration \(uid) Running", for: .seconds(60)) {
                    () async throws(APIError) -> VirtualMachineInstanceMigration in
                    try await agent.transition(ready, to: .running) { vmim in
                        var state = vmim.status?.migrationState ?? MigrationState()
                        state.startTimestamp = started
                        if let hazard {
                            state.mode = MemoryCopy.paused.rawValue
                            vmim.status?.conditions.set(
                                Condition(
                                    "MemoryCopyPaused", true, reason: "LiveCopyUnsafe",
                                    message: "the guest is paused while its memory is copied: \(hazard)"))
                        }
                        vmim.status?.migrationState = state
                    }
                }
            } catch {
                await job.abort(reason: "the migration changed before it ran: \(NodeAgent.describe(error))")
                _ = try? await group.next()
                throw error
            }
            timer.mark("phase")
            group.addTask {
                await agent.reportProgress(of: job, vmi: vmi)
                return nil
            }
            group.addTask {
                await Self.breakStuckAbort(of: job, entries: entries, uid: uid, logger: logger)
                return nil
            }
            // The VMI's record of the start is written beside the job, as one of the agent's own child tasks (the
            // hand-over does not wait for it).
            var vmiState = MigrationState()
            vmiState.startTimestamp = started
            vmiState.targetNodeAddress = ready.status?.migrationState?.targetNodeAddress
            if hazard != nil { vmiState.mode = MemoryCopy.paused.rawValue }
            agent.senders?.send { [vmiState] in await agent.setMigrationState(of: vmi, vmiState) }
            logger.info(
                "migration started",
                metadata: [
                    "migration": "\(uid)", "target": "\(target)", "copied": "\(staged.copied)",
                    "shared": "\(staged.shared)",
                    "staged ms": "\(staged.steps)", "ms": "\(timer.description)",
                ])
            do {
                while let outcome = try await group.next() {
                    guard let result = outcome else { continue }
                    // Switchover done: the reporter and the breaker end.
                    group.cancelAll()
                    return result
                }
            } catch {
                group.cancelAll()
                if migration.abortRequested { throw MigrationAborted(message: "the migration was aborted by request") }
                throw error
            }
            throw APIError.internalError("migration \(uid): the job ended without a result")
        }
    }

    /// An abort that hangs (a stalled stream: QEMU waits for in-flight disk writes) is ended by breaking the tunnels,
    /// which fails the streams at once. The source domain keeps running either way. Runs until cancelled.
    private static func breakStuckAbort(of job: MigrationJob, entries: [TunnelEntry], uid: String, logger: Logger) async
    {
        var since: ContinuousClock.Instant?
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(250))
            guard job.abortReason != nil else { continue }
            let now = ContinuousClock.now
            if since == nil { since = now }
            if let since, now - since >= NodeAgent.abortGrace {
                logger.warning("migration abort is stuck: breaking its tunnels", metadata: ["migration": "\(uid)"])
                for entry in entries { await entry.close() }
                return
            }
        }
    }

    /// Switchover done: the VMI now runs on the target. It is handed over with the job's final figures, and the
    /// copies the guest left here go.
    private mutating func finish(_ staged: Staged, _ result: MigrationResult, on agent: isolated NodeAgent) async {
        let job = staged.job
        let jobEnded = Date()
        let ended = Migration.timestamp(jobEnded)
        agent.handedOver[domainName] = .now
        // When libvirt's migrate call ran (the control-plane latency benchmark measures around it).
        let callStarted = job.migrateCallStarted
        // The final figures: the last sample; a migration that ended before its first sample waits for the
        // completed statistics.
        let completedEarly = result.lastProgress == nil ? await job.completedStatistics() : nil
        let progress = (completedEarly ?? result.lastProgress).map {
            NodeAgent.finalProgress($0, elapsed: result.duration)
        }
        let downtime = completedEarly?.downtimeMs
        agent.jobMetrics.recordSent(duration: result.duration, statistics: completedEarly ?? result.lastProgress)
        let final: @Sendable (inout MigrationState) -> Void = { state in
            state.completed = true
            state.failed = false
            state.endTimestamp = ended
            if let callStarted { state.libvirtJobStartTimestamp = Migration.timestamp(callStarted) }
            state.libvirtJobEndTimestamp = Migration.timestamp(jobEnded)
            if let progress { state.progress = progress }
            if let downtime { state.downtimeMilliseconds = Int64(downtime) }
        }
        if current.isDecentralized {
            // The guest runs in the peer cluster: this VMI is Succeeded (its VM halts), the migration too.
            await agent.retire(staged.vmi, final: final)
            current = await agent.complete(current, final: final)
        } else {
            current = await agent.handOver(current, vmi: staged.vmi, target: target, final: final)
        }
        // libvirt's account of the finished job (its downtime) is written by the target, which has it locally.
        for file in staged.copiedFiles { try? FileManager.default.removeItem(atPath: file) }
        agent.logger.info(
            "migration succeeded",
            metadata: ["migration": "\(uid)", "target": "\(target)", "wall": "\(result.duration)"])
    }

    /// The migration failed (or was aborted): recorded as such — unless the guest has left this node.
    private func fail(_ error: any Error, on agent: isolated NodeAgent) async {
        await staged?.job.discard()
        let aborted = error is MigrationAborted || migration.abortRequested
        if jobStarted, !(await agent.guestIsHere(domainName)) {
            // libvirt reports a failure, but the guest has left this node (a step after the switchover failed): it
            // runs on the target, whose agent claims it. Recording a failure would be recording a lie.
            agent.handedOver[domainName] = .now
            if current.isDecentralized, let vmi {
                // Nobody hands this VMI over: it is Succeeded here (its guest runs in the peer cluster), never restarted.
                await agent.retire(vmi, final: { _ in })
            }
            agent.logger.error(
                "the migration's job failed after the guest left this node; the target claims it",
                metadata: [
                    "migration": "\(uid)", "error": "\(error)",
                ])
        } else {
            agent.logger.warning("migration failed", metadata: ["migration": "\(uid)", "error": "\(error)"])
            await agent.failMigration(
                current, vmi: vmi, reason: aborted ? "Aborted" : "MigrationFailed",
                aborted ? NodeAgent.describe(error) : tunnelTrouble.explain(NodeAgent.describe(error)),
                abortStatus: aborted ? "Succeeded" : nil)
        }
    }

    /// The tunnel entries and the migration's socket directory go.
    private func closeEntries(on agent: isolated NodeAgent) async {
        for entry in entries { await entry.close() }
        try? FileManager.default.removeItem(atPath: "\(agent.migrationPaths.directory)/\(streams)")
    }
}
