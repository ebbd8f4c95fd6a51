import ClusterAPI
import Foundation
import SyncController
import Testing

@Suite("SQLite resource store (object semantics over the SQLite backend)")
struct StoreTests {
    let directory: String
    let store: SQLiteStore

    init() throws {
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("store-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        store = try SQLiteStore(path: directory + "/cluster.sqlite")
    }

    static func configMap(_ name: String, data: [String: String] = ["a": "1"], labels: [String: String] = [:])
        -> JSONValue
    {
        [
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": ["name": .string(name), "namespace": "default", "labels": JSONValue(labels)],
            "data": JSONValue(data),
        ]
    }

    static func vm(_ name: String, runStrategy: String = "Always") -> JSONValue {
        [
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": ["name": .string(name), "namespace": "default"],
            "spec": ["runStrategy": .string(runStrategy), "template": ["spec": ["domain": ["devices": [:]]]]],
        ]
    }

    @Test("create sets uid, creationTimestamp, generation and an increasing resourceVersion; duplicates are refused")
    func create() async throws {
        let first = try await store.create(Kinds.configMap, Self.configMap("one"))
        let second = try await store.create(Kinds.configMap, Self.configMap("two"))
        let meta = try #require(first["metadata"])
        #expect(meta["uid"]?.string?.count == 36)
        #expect(meta["creationTimestamp"]?.string?.hasSuffix("Z") == true)
        #expect(meta["generation"] == 1)
        let v1 = try #require(Int(meta["resourceVersion"]?.string ?? ""))
        let v2 = try #require(Int(second["metadata"]?["resourceVersion"]?.string ?? ""))
        #expect(v2 > v1)
        let error = await #expect(throws: APIError.self) {
            try await store.create(Kinds.configMap, Self.configMap("one"))
        }
        #expect(error?.reason == .alreadyExists && error?.code == 409)
        #expect(error?.message == "configmaps \"one\" already exists")
        #expect(try await store.get(Kinds.configMap, namespace: "default", name: "one") == first)
    }

    @Test("a stale resourceVersion is refused with 409; spec changes bump generation, status writes do not")
    func optimisticConcurrency() async throws {
        let created = try await store.create(Kinds.virtualMachine, Self.vm("vm1"))
        var changed = created
        changed["spec"]?["runStrategy"] = "Halted"
        let updated = try await store.update(Kinds.virtualMachine, changed, subresource: .main)
        #expect(updated["metadata"]?["generation"] == 2)
        // The same stale body again: conflict, nothing stored.
        changed["spec"]?["runStrategy"] = "Manual"
        let error = await #expect(throws: APIError.self) {
            try await store.update(Kinds.virtualMachine, changed, subresource: .main)
        }
        #expect(error?.code == 409 && error?.reason == .conflict)
        #expect(error?.message.contains("the object has been modified") == true)
        #expect(
            try await store.get(Kinds.virtualMachine, namespace: "default", name: "vm1")["spec"]?["runStrategy"]
                == "Halted")

        var status = updated
        status["status"] = ["printableStatus": "Stopped"]
        status["spec"]?["runStrategy"] = "Always"  // ignored by a status write
        let afterStatus = try await store.update(Kinds.virtualMachine, status, subresource: .status)
        #expect(afterStatus["status"]?["printableStatus"] == "Stopped")
        #expect(afterStatus["spec"]?["runStrategy"] == "Halted")
        #expect(afterStatus["metadata"]?["generation"] == 2)
        // A main write cannot touch status.
        var main = afterStatus
        main["status"] = ["printableStatus": "Hacked"]
        main["metadata"]?["labels"] = ["x": "y"]
        let afterMain = try await store.update(Kinds.virtualMachine, main, subresource: .main)
        #expect(afterMain["status"]?["printableStatus"] == "Stopped")
        #expect(afterMain["metadata"]?["generation"] == 2, "a label change is not a spec change")
    }

    @Test("merge patch applies to the latest version; invalid results are refused and nothing is stored")
    func mergePatch() async throws {
        _ = try await store.create(Kinds.virtualMachine, Self.vm("vm2"))
        let patched = try await store.patch(
            Kinds.virtualMachine, namespace: "default", name: "vm2",
            mergePatch: ["spec": ["runStrategy": "Manual"], "metadata": ["labels": ["a": "b"]]],
            subresource: .main)
        #expect(patched["spec"]?["runStrategy"] == "Manual")
        #expect(patched["metadata"]?["labels"]?["a"] == "b")
        let error = await #expect(throws: APIError.self) {
            try await store.patch(
                Kinds.virtualMachine, namespace: "default", name: "vm2",
                mergePatch: ["spec": ["runStrategy": "Sometimes"]], subresource: .main)
        }
        #expect(error?.code == 422)
        #expect(
            error?.message.contains("spec.runStrategy: Unsupported value: \"Sometimes\"") == true,
            "\(String(describing: error))")
        #expect(
            try await store.get(Kinds.virtualMachine, namespace: "default", name: "vm2")["spec"]?["runStrategy"]
                == "Manual")
    }

    @Test(
        "finalizers hold a deleted object until the last one is removed; owners take their dependents along (the garbage collector running)"
    )
    func finalizersAndOwners() async throws {
        try await withGarbageCollector(store) {
            var owner = Self.configMap("owner")
            owner["metadata"]?["finalizers"] = ["vmsync.io/test"]
            let created = try await store.create(Kinds.configMap, owner)
            var dependent = Self.configMap("dependent")
            dependent["metadata"]?["ownerReferences"] = [
                [
                    "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": created["metadata"]!["uid"]!,
                ]
            ]
            let stored = try await store.create(Kinds.configMap, dependent)
            let version = try #require(Int64(stored["metadata"]?["resourceVersion"]?.string ?? ""))

            let marked = try await store.delete(Kinds.configMap, namespace: "default", name: "owner", precondition: nil)
            #expect(marked["metadata"]?["deletionTimestamp"] != nil)
            #expect(
                try await store.list(Kinds.configMap, Selection(namespace: "default")).items.count == 2,
                "still there while finalized")

            var release = marked
            release["metadata"]?["finalizers"] = []
            let changes = try await store.watch(Kinds.configMap, Selection(namespace: "default"), from: version)
            _ = try await store.update(Kinds.configMap, release, subresource: .main)
            let events = await collect(changes, until: { $0.filter { $0.type == .deleted }.count == 2 })
            let deleted = events.filter { $0.type == .deleted }.map { $0.object["metadata"]?["name"]?.string ?? "" }
            #expect(deleted == ["owner", "dependent"], "the owner goes, then the collector takes its dependent")
            #expect(
                try await store.list(Kinds.configMap, Selection(namespace: "default")).items.isEmpty,
                "owner and dependent gone")
            let error = await #expect(throws: APIError.self) {
                try await store.get(Kinds.configMap, namespace: "default", name: "dependent")
            }
            #expect(error?.code == 404)
            #expect(error?.message == "configmaps \"dependent\" not found")
        }
    }

    @Test(
        "watches resume from a resourceVersion, see ADDED/MODIFIED/DELETED in order, filter by label; compacted history is 410"
    )
    func watch() async throws {
        let first = try await store.create(Kinds.configMap, Self.configMap("w1", labels: ["app": "web"]))
        let from = try #require(Int64(first["metadata"]?["resourceVersion"]?.string ?? ""))
        _ = try await store.create(Kinds.configMap, Self.configMap("w2", labels: ["app": "db"]))
        let stream = try await store.watch(
            Kinds.configMap, Selection(namespace: "default", labels: try LabelSelector("app=web")), from: from - 1)
        var changed = try await store.get(Kinds.configMap, namespace: "default", name: "w1")
        changed["data"] = ["a": "2"]
        _ = try await store.update(Kinds.configMap, changed, subresource: .main)
        _ = try await store.delete(Kinds.configMap, namespace: "default", name: "w1", precondition: nil)
        var seen: [String] = []
        for await event in stream {
            seen.append("\(event.type.rawValue) \(event.object["metadata"]?["name"]?.string ?? "")")
            if seen.count == 3 { break }
        }
        #expect(seen == ["ADDED w1", "MODIFIED w1", "DELETED w1"])

        let small = try SQLiteStore(path: directory + "/small.sqlite", retainedChanges: 10)
        for index in 0..<1001 { _ = try await small.create(Kinds.configMap, Self.configMap("c\(index)")) }
        let error = await #expect(throws: APIError.self) {
            try await small.watch(Kinds.configMap, Selection(), from: 5)
        }
        #expect(error?.code == 410 && error?.reason == .gone)
    }

    @Test("what was acknowledged is there after reopening")
    func durable() async throws {
        for index in 0..<20 { _ = try await store.create(Kinds.configMap, Self.configMap("d\(index)")) }
        let version = try await store.currentResourceVersion()
        let reopened = try SQLiteStore(path: directory + "/cluster.sqlite")
        #expect(try await reopened.list(Kinds.configMap, Selection()).items.count == 20)
        #expect(try await reopened.currentResourceVersion() == version)
    }

    @Test("bad input: unknown field, wrong type, missing required field, bad name — each precise, nothing stored")
    func validation() async throws {
        var unknown = Self.vm("bad1")
        unknown["spec"]?["runStrateggy"] = "Always"
        var wrongType = Self.vm("bad2")
        wrongType["spec"]?["template"]?["spec"]?["domain"]?["cpu"] = ["cores": "four"]
        var missing = Self.vm("bad3")
        missing["spec"]?["template"] = ["metadata": [:]]
        let cases: [(JSONValue, String)] = [
            (unknown, "unknown field \"spec.runStrateggy\""),
            (wrongType, "spec.template.spec.domain.cpu.cores in body must be of type integer"),
            (missing, "spec.template.spec: Required value"),
            (Self.vm("Bad_Name"), "a lowercase RFC 1123 subdomain"),
        ]
        for (body, expected) in cases {
            let error = await #expect(throws: APIError.self) { try await store.create(Kinds.virtualMachine, body) }
            #expect(error?.code == 422)
            #expect(error?.message.contains(expected) == true, "\(String(describing: error))")
        }
        #expect(try await store.list(Kinds.virtualMachine, Selection()).items.isEmpty)
    }
}
