import ClusterAPI
import Foundation
import SyncController
import Synchronization
import Testing

/// A backend that lets another write land between an object store's read and its compare-and-swap, once: the race the
/// swap must lose and the store must then decide again.
final class RacingBackend: StorageBackend {
    let base: any StorageBackend
    private let race: Mutex<(@Sendable () async -> Void)?>

    init(base: any StorageBackend, race: @escaping @Sendable () async -> Void) {
        self.base = base
        self.race = Mutex(race)
    }

    private func runRace() async {
        let race = race.withLock { race in
            defer { race = nil }
            return race
        }
        await race?()
    }

    func get(_ key: String) async throws(APIError) -> StoredValue? { try await base.get(key) }
    func list(prefix: String) async throws(APIError) -> (values: [StoredValue], revision: Int64) {
        try await base.list(prefix: prefix)
    }
    func create(_ key: String, value: Data) async throws(APIError) -> SwapOutcome {
        try await base.create(key, value: value)
    }
    func update(_ key: String, value: Data, ifRevision revision: Int64) async throws(APIError) -> SwapOutcome {
        await runRace()
        return try await base.update(key, value: value, ifRevision: revision)
    }
    func delete(_ key: String, ifRevision revision: Int64) async throws(APIError) -> SwapOutcome {
        await runRace()
        return try await base.delete(key, ifRevision: revision)
    }
    func watch(prefix: String, from revision: Int64) async throws(APIError) -> AsyncStream<StorageEvent> {
        try await base.watch(prefix: prefix, from: revision)
    }
    func compact(through revision: Int64) async throws(APIError) { try await base.compact(through: revision) }
    func currentRevision() async throws(APIError) -> Int64 { try await base.currentRevision() }
    var watcherCount: Int { base.watcherCount }
}

/// Object semantics that depend on how `ObjectStore` uses its backend, over both backends (the full suite of object
/// semantics runs over the SQLite file in `StoreTests`).
@Suite("Object semantics over a storage backend")
struct ObjectStoreTests {
    static func configMap(_ name: String, labels: [String: String] = [:]) -> JSONValue {
        [
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": ["name": .string(name), "namespace": "default", "labels": JSONValue(labels)],
            "data": ["a": "1"],
        ]
    }

    @Test(
        "keys and values: an object is stored at /<resource>/<namespace>/<name> without its resourceVersion, which is the key's revision",
        arguments: BackendUnderTest.allCases)
    func layout(_ backend: BackendUnderTest) async throws {
        let storage = try backend.make()
        let store = ObjectStore(backend: storage)
        let created = try await store.create(Kinds.configMap, Self.configMap("one"))
        let node = try await store.create(Kinds.node, ["apiVersion": "v1", "kind": "Node", "metadata": ["name": "n1"]])
        let stored = try #require(try await storage.get("/configmaps/default/one"))
        #expect(String(stored.revision) == created["metadata"]?["resourceVersion"]?.string)
        let value = try JSONValue.parse(stored.value)
        #expect(
            value["metadata"]?["resourceVersion"] == nil && value["metadata"]?["uid"] == created["metadata"]?["uid"])
        #expect(
            try await storage.get("/nodes/n1")?.revision == Int64(node["metadata"]?["resourceVersion"]?.string ?? ""))
        let encoded = try await store.listEncoded(Kinds.configMap, Selection()).items.map { try JSONValue.parse($0) }
        #expect(encoded == [created], "a listed document carries its resourceVersion, spliced in without parsing")
    }

    @Test(
        "a write that loses the swap is decided again from the stored object: admission sees what the write replaces",
        arguments: BackendUnderTest.allCases)
    func admissionRetries(_ backend: BackendUnderTest) async throws {
        let base = try backend.make()
        let writer = ObjectStore(backend: base)
        _ = try await writer.create(Kinds.configMap, Self.configMap("cm"))
        let store = ObjectStore(
            backend: RacingBackend(base: base) {
                _ = try? await writer.patch(
                    Kinds.configMap, namespace: "default", name: "cm",
                    mergePatch: ["metadata": ["labels": ["owner": "b"]]], subresource: .main)
            })
        let seen = Mutex<[String]>([])
        let error = await #expect(throws: APIError.self) {
            try await store.patch(
                Kinds.configMap, namespace: "default", name: "cm", mergePatch: ["data": ["a": "2"]], subresource: .main
            ) { existing throws(APIError) in
                let owner = existing["metadata"]?["labels"]?["owner"]?.string ?? "none"
                seen.withLock { $0.append(owner) }
                guard owner == "none" else { throw APIError.forbidden("cm now belongs to \(owner)") }
            }
        }
        #expect(error?.code == 403)
        #expect(
            seen.withLock { $0 } == ["none", "b"],
            "checked against the first read, then again against what was stored when the swap failed")
        let stored = try await writer.get(Kinds.configMap, namespace: "default", name: "cm")
        #expect(
            stored["data"]?["a"] == "1" && stored["metadata"]?["labels"]?["owner"] == "b",
            "nothing of the refused write stored")
    }

    @Test(
        "a retried write keeps the user's preconditions: a stale resourceVersion is 409 even when the race changed only status",
        arguments: BackendUnderTest.allCases)
    func preconditionsSurviveRetry(_ backend: BackendUnderTest) async throws {
        let base = try backend.make()
        let writer = ObjectStore(backend: base)
        let created = try await writer.create(Kinds.configMap, Self.configMap("cm"))
        let store = ObjectStore(
            backend: RacingBackend(base: base) {
                _ = try? await writer.patch(
                    Kinds.configMap, namespace: "default", name: "cm", mergePatch: ["metadata": ["labels": ["x": "y"]]],
                    subresource: .main)
            })
        var changed = created
        changed["data"] = ["a": "2"]
        let error = await #expect(throws: APIError.self) {
            try await store.update(Kinds.configMap, changed, subresource: .main)
        }
        #expect(error?.code == 409)
        // Without a resourceVersion the write is applied on top of the racing one.
        let deleted = try await store.delete(
            Kinds.configMap, namespace: "default", name: "cm",
            precondition: DeletePrecondition(uid: created["metadata"]?["uid"]?.string))
        #expect(deleted["metadata"]?["labels"]?["x"] == "y")
    }

    @Test(
        "releasing the last finalizer of a deleted object: watchers see it MODIFIED without finalizers, then DELETED",
        arguments: BackendUnderTest.allCases)
    func finalizerRelease(_ backend: BackendUnderTest) async throws {
        let store = ObjectStore(backend: try backend.make())
        var object = Self.configMap("held")
        object["metadata"]?["finalizers"] = ["vmsync.io/test"]
        let created = try await store.create(Kinds.configMap, object)
        let version = try #require(Int64(created["metadata"]?["resourceVersion"]?.string ?? ""))
        let events = try await store.watch(Kinds.configMap, Selection(), from: version)
        _ = try await store.delete(Kinds.configMap, namespace: "default", name: "held", precondition: nil)
        let gone = try await store.patch(
            Kinds.configMap, namespace: "default", name: "held", mergePatch: ["metadata": ["finalizers": []]],
            subresource: .main)
        let seen = await collect(events, count: 3)
        #expect(seen.map(\.type) == [.modified, .modified, .deleted])
        #expect(
            seen.last?.object["metadata"]?["finalizers"] == []
                && seen.last?.object["metadata"]?["deletionTimestamp"] != nil)
        #expect(
            gone["metadata"]?["resourceVersion"]?.string == String(seen.last?.resourceVersion ?? 0),
            "the answer is the object as it went")
        await #expect(throws: APIError.self) {
            try await store.get(Kinds.configMap, namespace: "default", name: "held")
        }
    }

    @Test(
        "watches filter by namespace and labels, start with the current objects without a version, and share one encoding",
        arguments: BackendUnderTest.allCases)
    func watchSelections(_ backend: BackendUnderTest) async throws {
        let store = ObjectStore(backend: try backend.make())
        _ = try await store.create(Kinds.configMap, Self.configMap("web-1", labels: ["app": "web"]))
        _ = try await store.create(Kinds.configMap, Self.configMap("db-1", labels: ["app": "db"]))
        var other = Self.configMap("web-other", labels: ["app": "web"])
        other["metadata"]?["namespace"] = "other"
        _ = try await store.create(Kinds.configMap, other)
        let selection = Selection(namespace: "default", labels: try LabelSelector("app=web"))
        let first = try await store.watch(Kinds.configMap, selection, from: nil)
        let second = try await store.watch(Kinds.configMap, selection, from: nil)
        _ = try await store.create(Kinds.configMap, Self.configMap("db-2", labels: ["app": "db"]))
        _ = try await store.create(Kinds.configMap, Self.configMap("web-2", labels: ["app": "web"]))
        let a = await collect(first, count: 2)
        let b = await collect(second, count: 2)
        #expect(
            a.map { "\($0.type.rawValue) \($0.object["metadata"]?["name"]?.string ?? "")" } == [
                "ADDED web-1", "ADDED web-2",
            ])
        #expect(a == b)
        let line = try JSONValue.parse(try #require(a.last).line)
        #expect(line == ["type": "ADDED", "object": a.last!.object], "the shared line is the event as JSON")
    }

    @Test("a namespace that could run into another key is refused", arguments: BackendUnderTest.allCases)
    func namespaceChecked(_ backend: BackendUnderTest) async throws {
        let store = ObjectStore(backend: try backend.make())
        var object = Self.configMap("x")
        object["metadata"]?["namespace"] = "a/b"
        let error = await #expect(throws: APIError.self) { try await store.create(Kinds.configMap, object) }
        #expect(error?.code == 422 && error?.message.contains("metadata.namespace") == true)
    }

    @Test(
        "a watch with a field selection hears DELETED when an object leaves it and ADDED when it comes in",
        arguments: BackendUnderTest.allCases)
    func leavingTheSelection(_ backend: BackendUnderTest) async throws {
        let store = ObjectStore(backend: try backend.make())
        for name in ["v1", "v2"] {
            _ = try await store.create(
                Kinds.virtualMachineInstance,
                [
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                    "metadata": ["name": .string(name)], "spec": [:],
                ])
            _ = try await store.patch(
                Kinds.virtualMachineInstance, namespace: "default", name: name,
                mergePatch: ["status": ["nodeName": "a"]], subresource: .status)
        }
        // As an informer does it: list, then watch from the list's version.
        let selection = Selection(fields: try FieldSelector("status.nodeName=a"))
        let listed = try await store.list(Kinds.virtualMachineInstance, selection)
        #expect(listed.items.count == 2)
        let events = try await store.watch(Kinds.virtualMachineInstance, selection, from: listed.resourceVersion)
        for (name, node) in [("v1", "b"), ("v2", "a"), ("v1", "a")] {
            _ = try await store.patch(
                Kinds.virtualMachineInstance, namespace: "default", name: name,
                mergePatch: ["status": ["nodeName": .string(node), "reason": .string("moved \(node)")]],
                subresource: .status)
        }
        var seen: [String] = []
        for await event in events {
            seen.append(
                "\(event.type.rawValue) \(event.object["metadata"]?["name"]?.string ?? "") \(event.object["status"]?["nodeName"]?.string ?? "")"
            )
            if seen.count == 3 { break }
        }
        #expect(seen == ["DELETED v1 b", "MODIFIED v2 a", "ADDED v1 a"], "\(seen)")
    }
}
