import ClusterAPI
import Foundation
import GRDB
import Testing

@testable import SyncController

/// A store file as the object schema (migration `2026-11-21-objects-changes-counters`, before the backend split) left
/// it — that released migration run alone (released migrations are never edited), rows written with raw SQL as that
/// code wrote them — then opened by today's code.
@Suite("Upgrading a store written by the object schema")
struct StoreUpgradeTests {
    static func configMap(_ name: String, uid: String, version: Int64, data: String, owner: String? = nil) -> JSONValue
    {
        var metadata: JSONValue = [
            "name": .string(name), "namespace": "default", "uid": .string(uid),
            "resourceVersion": .string(String(version)),
            "generation": 1, "creationTimestamp": "2026-11-22T10:00:00Z",
        ]
        if let owner {
            metadata["ownerReferences"] = [
                ["apiVersion": "v1", "kind": "Node", "name": "node-1", "uid": .string(owner)]
            ]
        }
        return ["apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": ["a": .string(data)]]
    }

    static let node: JSONValue = [
        "apiVersion": "v1", "kind": "Node",
        "metadata": [
            "name": "node-1", "uid": "node-uid", "resourceVersion": "2", "generation": 1,
            "creationTimestamp": "2026-11-22T10:00:00Z",
        ],
    ]

    /// Five changes as the old store recorded them: cm-a created (1), node-1 created (2), cm-a modified (3), cm-gone
    /// created (4) and deleted (5); cm-a is owned by node-1.
    static func writeObjectSchemaStore(at path: String) throws {
        let queue = try DatabaseQueue(path: path)
        try StoreMigrations.migrator.migrate(queue, upTo: "2026-11-21-objects-changes-counters")
        try queue.write { db in
            let rows: [(Int64, String, String, String, String, JSONValue)] = [
                (
                    1, "ADDED", "configmaps", "default", "cm-a",
                    configMap("cm-a", uid: "a-uid", version: 1, data: "1", owner: "node-uid")
                ),
                (2, "ADDED", "nodes", "", "node-1", node),
                (
                    3, "MODIFIED", "configmaps", "default", "cm-a",
                    configMap("cm-a", uid: "a-uid", version: 3, data: "2", owner: "node-uid")
                ),
                (
                    4, "ADDED", "configmaps", "default", "cm-gone",
                    configMap("cm-gone", uid: "gone-uid", version: 4, data: "x")
                ),
                (
                    5, "DELETED", "configmaps", "default", "cm-gone",
                    configMap("cm-gone", uid: "gone-uid", version: 5, data: "x")
                ),
            ]
            for (version, type, resource, namespace, name, body) in rows {
                try db.execute(
                    sql:
                        "INSERT INTO changes (resource_version, type, resource, namespace, name, body) VALUES (?, ?, ?, ?, ?, ?)",
                    arguments: [version, type, resource, namespace, name, body.jsonString()])
            }
            let objects: [(String, String, String, String, Int64, JSONValue)] = [
                (
                    "configmaps", "default", "cm-a", "a-uid", 3,
                    configMap("cm-a", uid: "a-uid", version: 3, data: "2", owner: "node-uid")
                ),
                ("nodes", "", "node-1", "node-uid", 2, node),
            ]
            for (resource, namespace, name, uid, version, body) in objects {
                try db.execute(
                    sql:
                        "INSERT INTO objects (resource, namespace, name, uid, resource_version, body) VALUES (?, ?, ?, ?, ?, ?)",
                    arguments: [resource, namespace, name, uid, version, body.jsonString()])
            }
            try db.execute(sql: "INSERT INTO owner_references (owner_uid, dependent_uid) VALUES ('node-uid', 'a-uid')")
            try db.execute(sql: "UPDATE counters SET value = 5 WHERE name = 'resourceVersion'")
        }
    }

    @Test(
        "objects, resourceVersions, uids and the change history are carried over; writes and watches go on from there")
    func upgrade() async throws {
        let path = try BackendUnderTest.temporaryFile()
        try Self.writeObjectSchemaStore(at: path)
        let store = try SQLiteStore(path: path)

        let a = try await store.get(Kinds.configMap, namespace: "default", name: "cm-a")
        #expect(a["metadata"]?["resourceVersion"] == "3" && a["metadata"]?["uid"] == "a-uid" && a["data"]?["a"] == "2")
        #expect(try await store.get(Kinds.node, namespace: nil, name: "node-1")["metadata"]?["resourceVersion"] == "2")
        let list = try await store.list(Kinds.configMap, Selection())
        #expect(list.items.map { $0["metadata"]?["name"]?.string } == ["cm-a"] && list.resourceVersion == 5)
        let encoded = try await store.listEncoded(Kinds.configMap, Selection()).items.map { try JSONValue.parse($0) }
        #expect(encoded == list.items, "stored text of the old schema is listed with the same content")

        // A watch from a version the old store handed out resumes from its history.
        let history = await collect(
            try await store.watch(Kinds.configMap, Selection(namespace: "default"), from: 1), count: 3)
        #expect(
            history.map { "\($0.type.rawValue) \($0.object["metadata"]?["name"]?.string ?? "") \($0.resourceVersion)" }
                == ["MODIFIED cm-a 3", "ADDED cm-gone 4", "DELETED cm-gone 5"])

        // Optimistic concurrency against the carried-over version, and new versions after the old ones.
        var changed = a
        changed["data"] = ["a": "3"]
        let updated = try await store.update(Kinds.configMap, changed, subresource: .main)
        #expect(updated["metadata"]?["resourceVersion"] == "6")
        let stale = await #expect(throws: APIError.self) {
            try await store.update(Kinds.configMap, changed, subresource: .main)
        }
        #expect(stale?.code == 409)
        let created = try await store.create(
            Kinds.configMap, ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": "cm-new"]])
        #expect(created["metadata"]?["resourceVersion"] == "7")

        // The owner_references table went with the cascade: deleting the owner leaves the dependent to the collector.
        _ = try await store.delete(Kinds.node, namespace: nil, name: "node-1", precondition: nil)
        #expect(try await store.get(Kinds.configMap, namespace: "default", name: "cm-a")["data"]?["a"] == "3")
        try await withGarbageCollector(store) {
            let changes = try await store.watch(Kinds.configMap, Selection(), from: 8)
            let events = await collect(changes, until: { $0.contains { $0.type == .deleted } })
            #expect(
                events.map { "\($0.type.rawValue) \($0.object["metadata"]?["name"]?.string ?? "")" } == ["DELETED cm-a"]
            )
        }

        // Reopened: the migration is not run again, and everything is as left.
        let reopened = try SQLiteStore(path: path)
        #expect(try await reopened.currentResourceVersion() == 9)
        #expect(
            try await reopened.list(Kinds.configMap, Selection()).items.map { $0["metadata"]?["name"]?.string } == [
                "cm-new"
            ])
    }
}
