import ClusterAPI
import Foundation

/// How this cluster takes part in decentralized migrations: where its sync endpoint is reached, and how long a
/// migration may wait for its peer.
public struct SyncSettings: Sendable, Hashable {
    /// The addresses peers dial (`host:port`), published as `synchronizationAddresses`; the first is the one this
    /// cluster's half names as its `syncAddress`.
    public var advertisedAddresses: [String]
    /// How long a migration may wait in WaitingForSync or Synchronizing (or for its peer's next step, or for the
    /// peer to hear of a cancel) before it fails naming the peer it waited for.
    public var deadline: Duration

    public init(advertisedAddresses: [String], deadline: Duration = .seconds(300)) {
        self.advertisedAddresses = advertisedAddresses
        self.deadline = deadline
    }

    var deadlineSeconds: Double { Double(deadline.components.seconds) + Double(deadline.components.attoseconds) / 1e18 }

    /// The address this cluster's half of a migration names as its own.
    var syncAddress: String? { advertisedAddresses.first }
}

/// Which half of a decentralized migration a VMIM is.
enum SyncSide: String, Sendable {
    /// `spec.sendTo`: this cluster runs the VM and sends it.
    case source
    /// `spec.receive`: this cluster receives it.
    case target

    init?(_ vmim: VirtualMachineInstanceMigration) {
        if vmim.spec.sendTo != nil {
            self = .source
        } else if vmim.spec.receive != nil {
            self = .target
        } else {
            return nil
        }
    }

    /// The other side's name, as KubeVirt's messages say it.
    var peer: SyncSide { self == .source ? .target : .source }

    /// The migration index's value for `migrationID` on this side.
    func indexValue(_ migrationID: String) -> String { "\(rawValue)/\(migrationID)" }
}

extension VirtualMachineInstanceMigration {
    /// The migration index's values: `source/ID` for a sender, `target/ID` for a receiver.
    var migrationIDIndexValues: [String] {
        guard let side = SyncSide(self), let id = migrationID else { return [] }
        return [side.indexValue(id)]
    }
}

extension MigrationState {
    /// The uid of the peer's VMIM, as its half says (the uid `CancelMigration` names).
    func peerMigrationUID(of side: SyncSide) -> String? {
        side == .source ? targetState?.migrationUID : sourceState?.migrationUID
    }
}
