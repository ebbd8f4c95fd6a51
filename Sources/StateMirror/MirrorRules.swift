public import ClusterAPI

/// How one side of a decentralized migration takes the other side's VMI status: each side owns its half of the
/// migration state and takes only the peer's half (and what derives from it). Pure functions: nil means nothing
/// changes, so a duplicate or stale message writes nothing.
public enum MirrorRules {
    /// The target side takes the source's status into its receiving VMI's `local` status: `sourceState` and the flat
    /// fields derived from it (source node and pod), the migration method and transport, the start and end timestamps
    /// when the source set them, the source half of the migrated volumes; failure and abort fields only with
    /// `abortRequested` or an end timestamp. Nothing once the local side completed.
    public static func takeSource(
        _ remote: VirtualMachineInstance.Status, into local: VirtualMachineInstance.Status
    ) -> VirtualMachineInstance.Status? {
        guard local.migrationState?.completed != true, let theirs = remote.migrationState else { return nil }
        var status = local
        var state = local.migrationState ?? MigrationState()
        if let source = theirs.sourceState {
            state.sourceState = source
            state.sourceNode = source.node ?? state.sourceNode
            state.sourcePod = source.pod ?? state.sourcePod
        }
        if let method = remote.migrationMethod { status.migrationMethod = method }
        if let transport = remote.migrationTransport { status.migrationTransport = transport }
        if let start = theirs.startTimestamp { state.startTimestamp = start }
        if let end = theirs.endTimestamp { state.endTimestamp = end }
        takeEnding(theirs, into: &state)
        status.migratedVolumes = merge(local.migratedVolumes, remote.migratedVolumes, theirs: "sourcePVCInfo")
        status.migrationState = state
        return status == local ? nil : status
    }

    /// The source side takes the target's status into its VMI's `local` status: `targetState` and the flat fields
    /// derived from it (target node, address, ports, pod, domain detected and ready), `completed` and `failed` always,
    /// the target half of the migrated volumes; failure and abort fields only with `abortRequested` or an end timestamp.
    /// Nothing once the local side completed.
    public static func takeTarget(
        _ remote: VirtualMachineInstance.Status, into local: VirtualMachineInstance.Status
    ) -> VirtualMachineInstance.Status? {
        guard local.migrationState?.completed != true, let theirs = remote.migrationState else { return nil }
        var status = local
        var state = local.migrationState ?? MigrationState()
        if let target = theirs.targetState {
            state.targetState = target
            state.targetNode = target.node ?? state.targetNode
            state.targetPod = target.pod ?? state.targetPod
            state.targetNodeAddress = target.nodeAddress ?? state.targetNodeAddress
            state.targetDirectMigrationNodePorts =
                target.directMigrationNodePorts ?? state.targetDirectMigrationNodePorts
            state.targetNodeDomainDetected = target.domainDetected ?? state.targetNodeDomainDetected
            state.targetNodeDomainReadyTimestamp = target.domainReadyTimestamp ?? state.targetNodeDomainReadyTimestamp
            state.targetRunDirectory = target.runDirectory ?? state.targetRunDirectory
        }
        if let completed = theirs.completed { state.completed = completed }
        if let failed = theirs.failed { state.failed = failed }
        takeEnding(theirs, into: &state)
        status.migratedVolumes = merge(local.migratedVolumes, remote.migratedVolumes, theirs: "destinationPVCInfo")
        status.migrationState = state
        return status == local ? nil : status
    }

    /// What of `status` the peer of `side` takes by these rules (`side` is the sender: "source" or "target"): the part
    /// whose change is worth a message. A status that changed only in the half the sender took from its peer is not
    /// sent back.
    public static func peerView(of status: VirtualMachineInstance.Status, sentBySource: Bool) -> JSONValue {
        let state = status.migrationState
        var view: JSONValue = [
            "completed": state?.completed.map(JSONValue.bool) ?? .null,
            "failed": state?.failed.map(JSONValue.bool) ?? .null,
            "abortRequested": state?.abortRequested.map(JSONValue.bool) ?? .null,
            "abortStatus": state?.abortStatus.map(JSONValue.string) ?? .null,
            "failureReason": state?.failureReason.map(JSONValue.string) ?? .null,
            "endTimestamp": state?.endTimestamp.map(JSONValue.string) ?? .null,
            "migratedVolumes": status.migratedVolumes.map(JSONValue.array) ?? .null,
        ]
        if sentBySource {
            view["sourceState"] = (try? JSONValue(encoding: state?.sourceState)) ?? .null
            view["startTimestamp"] = state?.startTimestamp.map(JSONValue.string) ?? .null
            view["migrationMethod"] = status.migrationMethod.map(JSONValue.string) ?? .null
            view["migrationTransport"] = status.migrationTransport.map(JSONValue.string) ?? .null
        } else {
            view["targetState"] = (try? JSONValue(encoding: state?.targetState)) ?? .null
        }
        return view
    }

    /// Failure and abort cross only when the peer asked for the abort or its side ended.
    private static func takeEnding(_ theirs: MigrationState, into state: inout MigrationState) {
        guard theirs.abortRequested == true || theirs.endTimestamp != nil else { return }
        if theirs.abortRequested == true { state.abortRequested = true }
        if let status = theirs.abortStatus { state.abortStatus = status }
        if let reason = theirs.failureReason { state.failureReason = reason }
        if theirs.failed == true {
            state.failed = true
            state.completed = true
            state.endTimestamp = theirs.endTimestamp ?? state.endTimestamp
        }
    }

    /// The migrated volumes by `volumeName`: the peer's half (`theirs`) of each entry from the peer, the rest kept.
    public static func merge(_ local: [JSONValue]?, _ remote: [JSONValue]?, theirs key: String) -> [JSONValue]? {
        guard let remote, !remote.isEmpty else { return local }
        var merged = local ?? []
        for entry in remote {
            guard let name = entry["volumeName"]?.string else { continue }
            if let index = merged.firstIndex(where: { $0["volumeName"]?.string == name }) {
                if let half = entry[key] { merged[index][key] = half }
            } else {
                var added: JSONValue = ["volumeName": .string(name)]
                if let half = entry[key] { added[key] = half }
                merged.append(added)
            }
        }
        return merged
    }
}
