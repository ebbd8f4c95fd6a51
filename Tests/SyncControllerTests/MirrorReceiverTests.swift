import ClusterAPI
import ControllerRuntime
import Foundation
import Logging
import StateMirror
import Testing

@testable import SyncController

/// The receiver of a peer's half on its own: a store, the two caches the controllers keep, no network.
@Suite("Mirror receiver: a peer's half onto the VMI")
struct MirrorReceiverTests {
    let store: SQLiteStore
    let migrations = Cache<VirtualMachineInstanceMigration>(indexes: [
        ClusterControllers.Index.migrationID: { $0.migrationIDIndexValues }
    ])
    let instances = Cache<VirtualMachineInstance>()
    var receiver: MirrorReceiver {
        MirrorReceiver(
            store: store, migrations: migrations, instances: instances, logger: Logger(label: "test.receiver")
        ) { _ in }
    }

    init() throws {
        store = try SQLiteStore(
            path: FileManager.default.temporaryDirectory.appendingPathComponent(
                "receiver-\(UUID().uuidString.prefix(8)).sqlite"
            ).path)
    }

    /// A receiving VMIM for migrationID `m` past admission, and its VMI carrying it; both in the store and the caches.
    func receivingMigration() async throws -> (vmim: JSONValue, vmi: JSONValue) {
        var vmim = try await store.create(
            Kinds.migration,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                "metadata": ["name": "receive", "namespace": "default"],
                "spec": ["vmiName": "vm", "receive": ["migrationID": "m"]],
            ])
        let uid = vmim["metadata"]?["uid"] ?? .null
        vmim = try await store.patch(
            Kinds.migration, namespace: "default", name: "receive",
            mergePatch: ["status": ["phase": "WaitingForSync"]], subresource: .status)
        _ = try await store.create(
            Kinds.virtualMachineInstance,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "metadata": ["name": "vm", "namespace": "default"],
                "spec": ["domain": ["resources": ["requests": ["memory": "16Mi"]]]],
            ])
        let vmi = try await store.patch(
            Kinds.virtualMachineInstance, namespace: "default", name: "vm",
            mergePatch: ["status": ["phase": "WaitingForSync", "migrationState": ["migrationUid": uid]]],
            subresource: .status)
        migrations.record(written: vmim)
        instances.record(written: vmi)
        return (vmim, vmi)
    }

    static func sourceHalf(pod: String) -> PeerStatus {
        var status = VirtualMachineInstance.Status()
        status.phase = .running
        var state = MigrationState()
        state.sourceState = MigrationState.SourceState()
        state.sourceState?.node = "a1"
        state.sourceState?.pod = pod
        status.migrationState = state
        return PeerStatus(migrationID: "m", status: status, envelope: (try? JSONValue(encoding: status)) ?? .null)
    }

    static let peer = SyncPeer(cluster: "alpha", caFingerprint: "ab", host: "127.0.0.1")

    @Test("the half lands from the cache's copy of the VMI")
    func fromCache() async throws {
        _ = try await receivingMigration()
        #expect(try await receiver.applySourceStatus(Self.sourceHalf(pod: "p1"), from: Self.peer) == "success")
        let stored = try await store.get(Kinds.virtualMachineInstance, namespace: "default", name: "vm")
        #expect(stored["status"]?["migrationState"]?["sourceState"]?["pod"] == "p1")
        #expect(stored["status"]?["migrationState"]?["sourceNode"] == "a1")
    }

    @Test("a cached VMI the store has moved past is read again: the half lands and the newer change stays")
    func staleCache() async throws {
        _ = try await receivingMigration()
        // Someone else's write the cache has not seen yet.
        _ = try await store.patch(
            Kinds.virtualMachineInstance, namespace: "default", name: "vm",
            mergePatch: ["status": ["reason": "SomebodyElse"]], subresource: .status)
        #expect(try await receiver.applySourceStatus(Self.sourceHalf(pod: "p2"), from: Self.peer) == "success")
        let stored = try await store.get(Kinds.virtualMachineInstance, namespace: "default", name: "vm")
        #expect(stored["status"]?["migrationState"]?["sourceState"]?["pod"] == "p2")
        #expect(stored["status"]?["reason"] == "SomebodyElse")
    }

    @Test("a cached VMI that the store has since given to another migration is not written: the half is not for it")
    func staleCacheOtherMigration() async throws {
        _ = try await receivingMigration()
        _ = try await store.patch(
            Kinds.virtualMachineInstance, namespace: "default", name: "vm",
            mergePatch: ["status": ["migrationState": ["migrationUid": "another-migration"]]], subresource: .status)
        #expect(try await receiver.applySourceStatus(Self.sourceHalf(pod: "p3"), from: Self.peer) == "success")
        let stored = try await store.get(Kinds.virtualMachineInstance, namespace: "default", name: "vm")
        #expect(stored["status"]?["migrationState"]?["sourceState"] == nil)
        #expect(stored["status"]?["migrationState"]?["migrationUid"] == "another-migration")
    }

    @Test("a cached VMI older than the migration (it does not carry it yet) does not drop the half: the store decides")
    func cacheOlderThanMigration() async throws {
        let (_, vmi) = try await receivingMigration()
        // The cache still holds the VMI as it was before the migration was put on it.
        var older = vmi
        older["status"]?["migrationState"] = nil
        older["metadata"]?["resourceVersion"] = .string(
            String((Int(vmi["metadata"]?["resourceVersion"]?.string ?? "") ?? 1) - 1))
        let stale = Cache<VirtualMachineInstance>()
        stale.record(written: older)
        let receiver = MirrorReceiver(
            store: store, migrations: migrations, instances: stale, logger: Logger(label: "test.receiver")
        ) { _ in }
        #expect(try await receiver.applySourceStatus(Self.sourceHalf(pod: "p4"), from: Self.peer) == "success")
        let stored = try await store.get(Kinds.virtualMachineInstance, namespace: "default", name: "vm")
        #expect(stored["status"]?["migrationState"]?["sourceState"]?["pod"] == "p4")
    }

    @Test(
        "a VMI gone from the store but still cached is refused as not found (the peer's outbox says refused, not unreachable)"
    )
    func cachedButDeleted() async throws {
        _ = try await receivingMigration()
        _ = try await store.delete(Kinds.virtualMachineInstance, namespace: "default", name: "vm", precondition: nil)
        do {
            _ = try await receiver.applySourceStatus(Self.sourceHalf(pod: "p5"), from: Self.peer)
            Issue.record("a half for a deleted VMI was taken")
        } catch {
            #expect(error.code == .notFound)
            #expect(error.description.contains("unable to locate VMI"))
        }
    }
}
