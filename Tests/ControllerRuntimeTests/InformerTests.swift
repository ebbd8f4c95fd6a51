import ClusterAPI
import ControllerRuntime
import Foundation
import SyncController
import Synchronization
import Testing

/// Informers against the real SQLite store: list, then watch, into an indexed cache.
@Suite("Informer and cache")
struct InformerTests {
    let store: SQLiteStore

    init() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "informer-\(UUID().uuidString.prefix(8)).sqlite"
        ).path
        store = try SQLiteStore(path: path)
    }

    func vmi(_ name: String, node: String?) async throws {
        _ = try await store.create(
            Kinds.virtualMachineInstance,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": ["name": .string(name)],
                "spec": [:],
            ])
        if let node {
            _ = try await store.patch(
                Kinds.virtualMachineInstance, namespace: "default", name: name,
                mergePatch: ["status": ["nodeName": .string(node), "phase": "Running"]], subresource: .status)
        }
    }

    /// Waits until `condition` holds (the informer applies watch events asynchronously).
    func eventually(_ what: String, _ condition: () -> Bool) async {
        let deadline = ContinuousClock.now + .seconds(10)
        while !condition() && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
        #expect(condition(), "\(what)")
    }

    @Test("list fills the cache and the index; watched changes move objects between index entries; deletes leave")
    func listAndWatch() async throws {
        try await vmi("a", node: "n1")
        try await vmi("b", node: "n2")
        try await vmi("c", node: nil)
        let changes = Mutex<[ObjectKey]>([])
        let informer = Informer<VirtualMachineInstance>(
            source: store, indexes: ["node": { [$0.nodeName].compactMap { $0 } }]
        ) { change in
            changes.withLock { $0.append(change.key) }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await informer.run() }
            await informer.waitForSync()
            #expect(informer.cache.count == 3)
            #expect(informer.cache.objects(in: "node", "n1").map(\.metadata.name) == ["a"])
            _ = try await store.patch(
                Kinds.virtualMachineInstance, namespace: "default", name: "c",
                mergePatch: ["status": ["nodeName": "n1"]], subresource: .status)
            await eventually("c filed under n1") { informer.cache.keys(in: "node", "n1").count == 2 }
            _ = try await store.patch(
                Kinds.virtualMachineInstance, namespace: "default", name: "a",
                mergePatch: ["status": ["nodeName": "n2"]], subresource: .status)
            await eventually("a moved to n2") {
                informer.cache.keys(in: "node", "n2") == [
                    ObjectKey(namespace: "default", name: "a"), ObjectKey(namespace: "default", name: "b"),
                ]
            }
            #expect(informer.cache.keys(in: "node", "n1") == [ObjectKey(namespace: "default", name: "c")])
            _ = try await store.delete(Kinds.virtualMachineInstance, namespace: "default", name: "b", precondition: nil)
            await eventually("b gone") { informer.cache[ObjectKey(namespace: "default", name: "b")] == nil }
            #expect(informer.cache.keys(in: "node", "n2") == [ObjectKey(namespace: "default", name: "a")])
            #expect(informer.cache.resourceVersion > 0)
            let seen = changes.withLock { $0 }
            #expect(seen.filter { $0.name == "b" }.count == 2, "added by the list, then deleted: \(seen)")
            group.cancelAll()
        }
    }

    @Test(
        "waiting for an informer's first list ends when the waiting task is cancelled (a stop before the list must not hang)"
    )
    func waitForSyncCancelled() async throws {
        // Never run: it never lists.
        let informer = Informer<VirtualMachineInstance>(source: store) { _ in }
        final class Count: Sendable { let value = Mutex(0) }
        let ended = Count()
        let waiters = (0..<2).map { index in
            Task {
                if index == 1 { withUnsafeCurrentTask { $0?.cancel() } }  // cancelled before it waits
                await informer.waitForSync()
                ended.value.withLock { $0 += 1 }
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        waiters[0].cancel()
        await eventually("both cancelled waits ended") { ended.value.withLock { $0 } == 2 }
    }

    @Test("the envelope keeps what the typed view does not model")
    func envelope() async throws {
        _ = try await store.create(
            Kinds.virtualMachineInstance,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": ["name": "e"],
                "spec": ["domain": ["clock": ["timer": ["hpet": ["present": false]]]]],
            ])
        let informer = Informer<VirtualMachineInstance>(source: store) { _ in }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await informer.run() }
            await informer.waitForSync()
            let key = ObjectKey(namespace: "default", name: "e")
            #expect(
                informer.cache.envelope(key)?["spec"]?["domain"]?["clock"]?["timer"] == ["hpet": ["present": false]])
            #expect(
                informer.cache[key]?.json["spec"]?["domain"]?["clock"] == nil, "not modelled, so not in the typed view")
            group.cancelAll()
        }
        // A cache that keeps no envelopes (the garbage collector's metadata) holds the typed view alone.
        let bare = Informer<VirtualMachineInstance>(source: store, cache: Cache(keepsEnvelopes: false)) { _ in }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await bare.run() }
            await bare.waitForSync()
            let key = ObjectKey(namespace: "default", name: "e")
            #expect(bare.cache[key]?.metadata.name == "e")
            #expect(bare.cache.envelope(key) == nil)
            group.cancelAll()
        }
    }

    @Test(
        "a recorded write is read at once; an older watch event does not replace it; handlers still hear every change; caughtUp tells when the cache holds what the store lists"
    )
    func recordedWrites() async throws {
        try await vmi("w", node: nil)
        let changes = Mutex<[String?]>([])
        let informer = Informer<VirtualMachineInstance>(
            source: store, indexes: ["node": { [$0.nodeName].compactMap { $0 } }]
        ) { change in
            changes.withLock { $0.append(change.new?.nodeName) }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await informer.run() }
            await informer.waitForSync()
            let key = ObjectKey(namespace: "default", name: "w")
            #expect(try await informer.caughtUp())
            // Two writes back to back; the first is recorded only after the second, as a slow writer would.
            let first = try await store.patch(
                Kinds.virtualMachineInstance, namespace: "default", name: "w",
                mergePatch: ["status": ["nodeName": "n1"]], subresource: .status)
            let second = try await store.patch(
                Kinds.virtualMachineInstance, namespace: "default", name: "w",
                mergePatch: ["status": ["nodeName": "n2"]], subresource: .status)
            informer.cache.record(written: second)
            #expect(informer.cache[key]?.nodeName == "n2", "the write is read before its watch event arrives")
            #expect(informer.cache.keys(in: "node", "n2") == [key])
            informer.cache.record(written: first)
            #expect(informer.cache[key]?.nodeName == "n2", "an older version does not replace a newer one")
            // The recorded write already moved the cache's resourceVersion; the watch's delivery is what the handler
            // hears (waiting on the version alone read the handlers' log before the second event reached it).
            await eventually("the watch delivered both changes") {
                informer.cache.resourceVersion >= Int64(second["metadata"]?["resourceVersion"]?.string ?? "") ?? .max
                    && changes.withLock { $0.last == "n2" }
            }
            #expect(informer.cache[key]?.nodeName == "n2")
            #expect(informer.cache.keys(in: "node", "n1").isEmpty && informer.cache.keys(in: "node", "n2") == [key])
            let seen = changes.withLock { $0 }
            #expect(seen.suffix(2) == ["n1", "n2"], "handlers hear the changes as the watch delivers them: \(seen)")
            #expect(try await informer.caughtUp())
            // A write the cache has not seen yet: not caught up until the watch brings it.
            let third = try await store.patch(
                Kinds.virtualMachineInstance, namespace: "default", name: "w",
                mergePatch: ["status": ["nodeName": "n3"]], subresource: .status)
            let version = Int64(third["metadata"]?["resourceVersion"]?.string ?? "") ?? .max
            await eventually("n3 seen") { informer.hasSeen(version) }
            #expect(try await informer.caughtUp())
            // The answer to a write that released the last finalizer of a deleted object is not taken in.
            var gone = third
            gone["metadata"]?["deletionTimestamp"] = "2026-12-07T00:00:00Z"
            gone["metadata"]?["resourceVersion"] = .string(String(version + 100))
            gone["status"]?["nodeName"] = "ghost"
            informer.cache.record(written: gone)
            #expect(informer.cache[key]?.nodeName == "n3")
            group.cancelAll()
        }
    }
}
