import ClusterAPI
import Foundation
import SyncController
import Testing

/// Where a garbage collector runs: alone (its own informers for every kind), or in the cluster controllers, sharing
/// their typed caches for the kinds they watch.
enum CollectorHost: CaseIterable, CustomStringConvertible {
    case alone, clusterControllers
    var description: String { self == .alone ? "alone" : "in the cluster controllers" }
}

/// Runs `body` with a garbage collector working on `store` (its informers have listed before `body` starts) and stops
/// it afterwards: what tests of cascading deletion need now that the store itself no longer cascades.
func withGarbageCollector(
    _ store: any ResourceStore, host: CollectorHost = .alone, _ body: () async throws -> Void
) async throws {
    if host == .clusterControllers {
        try await ClusterControllers.running(on: store) { _ in try await body() }
        return
    }
    let collector = GarbageCollector(store: store)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await collector.run() }
        await collector.waitForSync()
        do {
            try await body()
        } catch {
            group.cancelAll()
            throw error
        }
        group.cancelAll()
    }
}

@Suite("Garbage collector (owner references) on the SQLite store")
struct GarbageCollectorTests {
    let store: SQLiteStore

    init() throws {
        store = try SQLiteStore(path: try BackendUnderTest.temporaryFile())
    }

    static func object(_ kind: ResourceKind, _ name: String, owners: [JSONValue] = [], finalizers: [String] = [])
        -> JSONValue
    {
        var metadata: JSONValue = ["name": .string(name)]
        if kind.namespaced { metadata["namespace"] = "default" }
        if !owners.isEmpty { metadata["ownerReferences"] = .array(owners) }
        if !finalizers.isEmpty { metadata["finalizers"] = JSONValue.array(finalizers.map { .string($0) }) }
        return ["apiVersion": .string(kind.apiVersion), "kind": .string(kind.kind), "metadata": metadata]
    }

    static func reference(to owner: JSONValue) -> JSONValue {
        [
            "apiVersion": owner["apiVersion"] ?? "", "kind": owner["kind"] ?? "",
            "name": owner["metadata"]?["name"] ?? "", "uid": owner["metadata"]?["uid"] ?? "",
        ]
    }

    func names(_ kind: ResourceKind) async throws -> Set<String> {
        Set(try await store.list(kind, Selection()).items.compactMap { $0["metadata"]?["name"]?.string })
    }

    /// The names of the DELETED objects among `events`, leaving out `settle`'s.
    static func deleted(_ events: [WatchEvent]) -> [String] {
        events.filter { $0.type == .deleted }.compactMap { $0.object["metadata"]?["name"]?.string }.filter {
            !$0.hasPrefix("settle-")
        }
    }

    @Test("an owner deleted: its dependents go, and theirs in turn (across kinds)", arguments: CollectorHost.allCases)
    func cascade(host: CollectorHost) async throws {
        try await withGarbageCollector(store, host: host) {
            let owner = try await store.create(Kinds.configMap, Self.object(Kinds.configMap, "owner"))
            let child = try await store.create(
                Kinds.secret, Self.object(Kinds.secret, "child", owners: [Self.reference(to: owner)]))
            _ = try await store.create(
                Kinds.configMap, Self.object(Kinds.configMap, "grandchild", owners: [Self.reference(to: child)]))
            let bystander = try await store.create(Kinds.configMap, Self.object(Kinds.configMap, "bystander"))
            let version = try #require(Int64(bystander["metadata"]?["resourceVersion"]?.string ?? ""))
            let secrets = try await store.watch(Kinds.secret, Selection(), from: version)
            let configMaps = try await store.watch(Kinds.configMap, Selection(), from: version)
            _ = try await store.delete(Kinds.configMap, namespace: "default", name: "owner", precondition: nil)
            let deletedSecrets = await collect(secrets, until: { $0.contains { $0.type == .deleted } })
            #expect(deletedSecrets.map { $0.object["metadata"]?["name"]?.string } == ["child"])
            let deletedMaps = await collect(configMaps, until: { $0.filter { $0.type == .deleted }.count == 2 }).filter
            { $0.type == .deleted }
            #expect(Self.deleted(deletedMaps) == ["owner", "grandchild"])
            #expect(try await names(Kinds.configMap) == ["bystander"])
            #expect(try await names(Kinds.secret).isEmpty)
        }
    }

    @Test(
        "a kind the cluster controllers cache (StorageClass) as owner and as dependent, through a kind only the collector watches",
        arguments: CollectorHost.allCases)
    func sharedKinds(host: CollectorHost) async throws {
        func storageClass(_ name: String, owners: [JSONValue] = []) -> JSONValue {
            var object = Self.object(Kinds.storageClass, name, owners: owners)
            object["directory"] = .string("/var/lib/vmsync/\(name)")
            return object
        }
        try await withGarbageCollector(store, host: host) {
            let owner = try await store.create(Kinds.storageClass, storageClass("class-owner"))
            let child = try await store.create(
                Kinds.storageClass, storageClass("class-child", owners: [Self.reference(to: owner)]))
            let grandchild = try await store.create(
                Kinds.configMap, Self.object(Kinds.configMap, "grandchild", owners: [Self.reference(to: child)]))
            let version = try #require(Int64(grandchild["metadata"]?["resourceVersion"]?.string ?? ""))
            let classes = try await store.watch(Kinds.storageClass, Selection(), from: version)
            let configMaps = try await store.watch(Kinds.configMap, Selection(), from: version)
            _ = try await store.delete(Kinds.storageClass, namespace: nil, name: "class-owner", precondition: nil)
            let deletedClasses = await collect(classes, until: { $0.filter { $0.type == .deleted }.count == 2 })
            #expect(Self.deleted(deletedClasses) == ["class-owner", "class-child"])
            let deletedMaps = await collect(configMaps, until: { $0.contains { $0.type == .deleted } })
            #expect(Self.deleted(deletedMaps) == ["grandchild"])
        }
    }

    @Test("a dependent with another live owner stays; it goes with its last owner", arguments: CollectorHost.allCases)
    func lastOwner(host: CollectorHost) async throws {
        try await withGarbageCollector(store, host: host) {
            let first = try await store.create(Kinds.configMap, Self.object(Kinds.configMap, "first"))
            let second = try await store.create(Kinds.node, Self.object(Kinds.node, "second"))
            let shared = try await store.create(
                Kinds.configMap,
                Self.object(Kinds.configMap, "shared", owners: [Self.reference(to: first), Self.reference(to: second)]))
            let version = try #require(Int64(shared["metadata"]?["resourceVersion"]?.string ?? ""))
            let changes = try await store.watch(Kinds.configMap, Selection(), from: version)
            _ = try await store.delete(Kinds.configMap, namespace: "default", name: "first", precondition: nil)
            // The collector looks at "shared" once "first" is gone and finds "second" alive.
            try await settle(after: "first")
            #expect(try await names(Kinds.configMap) == ["shared"])

            _ = try await store.delete(Kinds.node, namespace: nil, name: "second", precondition: nil)
            let events = await collect(
                changes, until: { $0.contains { $0.type == .deleted && $0.object["metadata"]?["name"] == "shared" } })
            #expect(Self.deleted(events) == ["first", "shared"])
        }
    }

    @Test(
        "an owner marked for deletion (a finalizer pending) still owns; released, it takes its dependent along",
        arguments: CollectorHost.allCases)
    func finalizedOwner(host: CollectorHost) async throws {
        try await withGarbageCollector(store, host: host) {
            let owner = try await store.create(
                Kinds.configMap, Self.object(Kinds.configMap, "owner", finalizers: ["vmsync.io/test"]))
            let dependent = try await store.create(
                Kinds.configMap, Self.object(Kinds.configMap, "dependent", owners: [Self.reference(to: owner)]))
            let version = try #require(Int64(dependent["metadata"]?["resourceVersion"]?.string ?? ""))
            let changes = try await store.watch(Kinds.configMap, Selection(), from: version)
            let marked = try await store.delete(Kinds.configMap, namespace: "default", name: "owner", precondition: nil)
            #expect(marked["metadata"]?["deletionTimestamp"] != nil)
            try await settle(after: "owner-marked")
            #expect(try await names(Kinds.configMap) == ["owner", "dependent"])
            _ = try await store.patch(
                Kinds.configMap, namespace: "default", name: "owner", mergePatch: ["metadata": ["finalizers": []]],
                subresource: .main)
            let events = await collect(
                changes, until: { $0.contains { $0.type == .deleted && $0.object["metadata"]?["name"] == "dependent" } }
            )
            #expect(Self.deleted(events) == ["owner", "dependent"])
        }
    }

    @Test(
        "an object whose owner was gone before the collector started is collected when it starts; an owner of an unknown kind is kept"
    )
    func goneBeforeStart() async throws {
        let owner = try await store.create(Kinds.configMap, Self.object(Kinds.configMap, "owner"))
        _ = try await store.create(
            Kinds.configMap, Self.object(Kinds.configMap, "orphan", owners: [Self.reference(to: owner)]))
        _ = try await store.create(
            Kinds.configMap,
            Self.object(
                Kinds.configMap, "foreign",
                owners: [["apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "0000"]]))
        let deleted = try await store.delete(Kinds.configMap, namespace: "default", name: "owner", precondition: nil)
        #expect(try await names(Kinds.configMap) == ["orphan", "foreign"], "the store itself no longer cascades")
        let version = try #require(Int64(deleted["metadata"]?["resourceVersion"]?.string ?? ""))
        let changes = try await store.watch(Kinds.configMap, Selection(), from: version)
        try await withGarbageCollector(store) {
            let events = await collect(changes, until: { $0.contains { $0.type == .deleted } })
            #expect(Self.deleted(events) == ["orphan"])
            try await settle(after: "start")
            #expect(try await names(Kinds.configMap) == ["foreign"])
        }
    }

    @Test("it watches every served kind")
    func everyKind() {
        #expect(GarbageCollector.watchedKinds.map(\.resource) == Kinds.all.map(\.resource))
    }

    /// Lets the collector finish what it was given so far: a ConfigMap owned by a ConfigMap deleted now reaches the
    /// collector through the same watch as every earlier ConfigMap change, so once it is collected (one worker, keys in
    /// the order they came) every earlier change has been looked at. Leaves nothing behind.
    func settle(after label: String) async throws {
        let owner = try await store.create(Kinds.configMap, Self.object(Kinds.configMap, "settle-\(label)"))
        let marker = try await store.create(
            Kinds.configMap, Self.object(Kinds.configMap, "settle-\(label)-marker", owners: [Self.reference(to: owner)])
        )
        let version = try #require(Int64(marker["metadata"]?["resourceVersion"]?.string ?? ""))
        let changes = try await store.watch(Kinds.configMap, Selection(), from: version)
        _ = try await store.delete(Kinds.configMap, namespace: "default", name: "settle-\(label)", precondition: nil)
        let events = await collect(
            changes,
            until: {
                $0.contains {
                    $0.type == .deleted && $0.object["metadata"]?["name"]?.string == "settle-\(label)-marker"
                }
            })
        try #require(
            events.contains {
                $0.type == .deleted && $0.object["metadata"]?["name"]?.string == "settle-\(label)-marker"
            }, "the collector got to the marker")
    }
}
