public import Foundation

/// KubeVirt's VirtualMachineInstanceMigration: one request to move a VMI (within the cluster, or to or from another).
public struct VirtualMachineInstanceMigration: Resource {
    public static let kind = Kinds.migration

    /// `status.phase`; a migration nobody has looked at yet has none (`new`).
    public enum Phase: String, LenientStringEnum {
        case new = ""
        case pending = "Pending"
        case scheduling = "Scheduling"
        case scheduled = "Scheduled"
        case preparingTarget = "PreparingTarget"
        case targetReady = "TargetReady"
        case running = "Running"
        case succeeded = "Succeeded"
        case failed = "Failed"
        /// Decentralized: the receiver waits for its source, the sender for its target.
        case waitingForSync = "WaitingForSync"
        case synchronizing = "Synchronizing"
        public static let fallback = Phase.new

        /// Phases in which a migration counts against the parallel limits.
        public var isActive: Bool {
            [.scheduling, .scheduled, .preparingTarget, .targetReady, .running].contains(self)
        }
        /// Phases a migration ends in.
        public var isFinal: Bool { self == .succeeded || self == .failed }
    }

    public var apiVersion: String? = "kubevirt.io/v1"
    public var kind: String? = "VirtualMachineInstanceMigration"
    public var metadata: ObjectMeta
    public var spec: Spec
    public var status: Status?

    public init(metadata: ObjectMeta, spec: Spec) {
        self.metadata = metadata
        self.spec = spec
    }

    public struct Spec: Codable, Sendable, Hashable {
        public var vmiName: String
        public var addedNodeSelector: [String: String]?
        /// Decentralized source: where the migration goes.
        public var sendTo: SendTo?
        /// Decentralized target: which migration this VMI receives.
        public var receive: Receive?

        public init(vmiName: String) { self.vmiName = vmiName }

        public struct SendTo: Codable, Sendable, Hashable {
            public var migrationID: String
            public var connectURL: String
        }

        public struct Receive: Codable, Sendable, Hashable {
            public var migrationID: String
        }
    }

    public struct Status: Codable, Sendable, Hashable {
        public var phase: Phase?
        public var conditions: [Condition]?
        public var migrationState: MigrationState?
        public var phaseTransitionTimestamps: [PhaseTransition]?
        /// Decentralized: where this cluster's sync endpoint listens.
        public var synchronizationAddresses: [String]?
        /// vmsync: the peer cluster this decentralized migration is bound to.
        public var synchronizationPeer: SynchronizationPeer?
        /// vmsync: what this side last delivered to its peer.
        public var synchronizationDelivery: SynchronizationDelivery?

        public init(phase: Phase? = nil, migrationState: MigrationState? = nil) {
            self.phase = phase
            self.migrationState = migrationState
        }
    }

    /// One entry of the phase history.
    public struct PhaseTransition: Codable, Sendable, Hashable {
        public var phase: Phase
        public var phaseTransitionTimestamp: String
    }

    public var phase: Phase { status?.phase ?? .new }

    /// Whether this is one half of a decentralized migration (it sends to or receives from another cluster or
    /// namespace).
    public var isDecentralized: Bool { spec.sendTo != nil || spec.receive != nil }

    /// The migrationID joining the two halves of a decentralized migration.
    public var migrationID: String? { spec.sendTo?.migrationID ?? spec.receive?.migrationID }

    /// Moves the migration to `phase`, recording when in its phase history.
    public mutating func transition(to phase: Phase) {
        var status = self.status ?? Status()
        status.phase = phase
        status.phaseTransitionTimestamps =
            (status.phaseTransitionTimestamps ?? []) + [
                PhaseTransition(phase: phase, phaseTransitionTimestamp: Migration.timestamp())
            ]
        self.status = status
    }

    /// When the migration entered its current phase.
    public var phaseSince: Date? {
        (status?.phaseTransitionTimestamps?.last?.phaseTransitionTimestamp).flatMap(Migration.parseTimestamp)
    }

    /// Oldest first (creation time, then name): the order in which waiting migrations start.
    public var creationOrder: String { (metadata.creationTimestamp ?? "") + "/" + (metadata.name ?? "") }
}
