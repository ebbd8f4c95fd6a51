import ClusterAPI
import ControllerRuntime
import Metrics

/// `vmsync_migrations_total{result}`: every migration of the cluster counted once, by the controller, when its
/// migrations informer sees it move into a final phase — whoever wrote that phase (the source agent a success, an
/// agent or a reconciler a failure or an abort), and whether or not any agent ever took part (a migration refused
/// or aborted before it was scheduled counts too).
///
/// Only the controller counts migrations; the agents record the figures only they have (the source the libvirt job's
/// duration and bytes, the target libvirt's downtime, `MigrationJobMetrics` in NodeAgent), each once per job, so no
/// `sum()` over the cluster's processes counts a migration twice. A migration that ended while no controller watched
/// (the controller restarting) is not counted: an informer's first list shows the final phase without a transition.
struct MigrationOutcomeMetrics: Sendable {
    /// The `result` label.
    enum Result: String, CaseIterable {
        case succeeded, failed, aborted
    }

    private let counters: [Result: Counter]

    init() {
        counters = Dictionary(
            uniqueKeysWithValues: Result.allCases.map { result in
                (result, Counter(label: "vmsync_migrations_total", dimensions: [("result", result.rawValue)]))
            })
    }

    /// Counts the migration if this change is its move into a final phase.
    func record(_ change: Informer<VirtualMachineInstanceMigration>.Change) {
        guard let old = change.old, let new = change.new, let result = Self.result(ending: old, as: new) else { return }
        counters[result]?.increment()
    }

    /// How the migration ended, if `new` is `old` moved into a final phase.
    static func result(ending old: VirtualMachineInstanceMigration, as new: VirtualMachineInstanceMigration) -> Result?
    {
        guard !old.phase.isFinal, new.phase.isFinal else { return nil }
        if new.phase == .succeeded { return .succeeded }
        // An abort (deletion, `syncctl abort`) that took: KubeVirt's `abortStatus: Succeeded`.
        return new.status?.migrationState?.abortStatus == "Succeeded" ? .aborted : .failed
    }
}
