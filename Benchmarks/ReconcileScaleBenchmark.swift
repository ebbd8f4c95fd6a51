import ClusterAPI
import Foundation
import Logging
import SyncController

/// What the controller does for one change in a large cluster: 100 Ready nodes, 1,000 VMs with their VMIs running;
/// one VMI's label changes and the reconciler reacts. Reports the objects it reads and the writes it makes for that
/// change and the time it takes, next to the anchor: one list of all VMIs from the same store (the cost of reading
/// the cluster once). The figure that a per-object controller runtime must bring down to O(1).
enum ReconcileScaleBenchmark {
    static func run(nodes nodeCount: Int, vms vmCount: Int, rounds: Int) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bench-rs-\(UUID().uuidString.prefix(6))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sqlite = try SQLiteStore(path: directory + "/cluster.sqlite", retainedChanges: 1_000_000)
        try await ClusterDefaults.ensure(in: sqlite)
        for index in 0..<nodeCount {
            let name = "n\(index)"
            _ = try await sqlite.create(Kinds.node, ["apiVersion": "v1", "kind": "Node", "metadata": ["name": .string(name), "labels": ["kubernetes.io/hostname": .string(name), "host-model-cpu.node.kubevirt.io/EPYC": "true", "cpu-model.node.kubevirt.io/Westmere": "true"]]])
        }
        for index in 0..<vmCount {
            _ = try await sqlite.create(Kinds.virtualMachine, [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": ["name": .string("vm\(index)"), "namespace": "default"],
                "spec": ["runStrategy": "Always", "template": ["spec": ["domain": ["resources": ["requests": ["memory": "64Mi"]]]]]],
            ])
        }
        let store = CountingStore(base: sqlite)
        var quiet = Logger(label: "vmsync.bench.reconciler")
        quiet.logLevel = .error
        let reconciler = ClusterReconciler(store: store, logger: quiet)
        func heartbeat() async throws {
            for index in 0..<nodeCount {
                var ready = Resources.condition("Ready", true, reason: "AgentReady")
                ready["lastHeartbeatTime"] = .string(Resources.now())
                _ = try await sqlite.patch(Kinds.node, namespace: nil, name: "n\(index)", mergePatch: ["status": ["allocatable": ["memory": "64Gi"], "conditions": [ready], "printableStatus": "Ready"]], subresource: .status)
            }
        }
        try await heartbeat()
        // Settle: VMIs created, scheduled, and running on their nodes (as their agents would report).
        for _ in 0..<4 { await reconciler.pass() }
        for vmi in try await sqlite.list(Kinds.virtualMachineInstance, Selection()).items {
            guard let name = vmi["metadata"]?["name"]?.string, let node = vmi["status"]?["nodeName"]?.string else { continue }
            _ = try await sqlite.patch(Kinds.virtualMachineInstance, namespace: "default", name: name, mergePatch: ["status": ["phase": "Running", "nodeName": .string(node)]], subresource: .status)
        }
        for _ in 0..<2 { await reconciler.pass() }
        let running = try await sqlite.list(Kinds.virtualMachineInstance, Selection()).items.filter { $0["status"]?["phase"] == "Running" }.count
        var passTimes: [Double] = []
        var listTimes: [Double] = []
        var reads: [Int] = []
        var writes: [Int] = []
        for round in 0..<rounds {
            _ = try await sqlite.patch(Kinds.virtualMachineInstance, namespace: "default", name: "vm\(round % vmCount)", mergePatch: ["metadata": ["labels": ["round": .string(String(round))]]], subresource: .main)
            store.reset()
            let start = ContinuousClock.now
            await reconciler.pass()
            passTimes.append(milliseconds(ContinuousClock.now - start))
            reads.append(store.objectsRead)
            writes.append(store.writes)
            let listed = ContinuousClock.now
            _ = try await sqlite.list(Kinds.virtualMachineInstance, Selection())
            listTimes.append(milliseconds(ContinuousClock.now - listed))
        }
        let pass = median(passTimes), list = median(listTimes)
        print("reconcile-scale: \(nodeCount) nodes, \(vmCount) VMs (\(running) VMIs Running); one VMI changed, median of \(rounds):")
        print("  reconcile pass: \(String(format: "%.1f", pass)) ms, \(median(reads.map(Double.init))) objects read, \(median(writes.map(Double.init))) writes")
        print("  anchor, one list of all VMIs: \(String(format: "%.1f", list)) ms; ratio pass/list \(String(format: "%.1f", pass / max(list, 0.001)))")
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
    }
}

/// A store that counts what its users read and write.
final class CountingStore: ResourceStore, @unchecked Sendable {
    let base: any ResourceStore
    private let lock = NSLock()
    private var read = 0
    private var written = 0

    init(base: any ResourceStore) { self.base = base }

    var objectsRead: Int { lock.withLock { read } }
    var writes: Int { lock.withLock { written } }
    func reset() { lock.withLock { read = 0; written = 0 } }
    private func count(read objects: Int = 0, writes: Int = 0) { lock.withLock { read += objects; written += writes } }

    func get(_ kind: ResourceKind, namespace: String?, name: String) async throws(APIError) -> JSONValue {
        count(read: 1)
        return try await base.get(kind, namespace: namespace, name: name)
    }
    func list(_ kind: ResourceKind, _ selection: Selection) async throws(APIError) -> (items: [JSONValue], resourceVersion: Int64) {
        let result = try await base.list(kind, selection)
        count(read: result.items.count)
        return result
    }
    func create(_ kind: ResourceKind, _ object: JSONValue) async throws(APIError) -> JSONValue {
        count(writes: 1)
        return try await base.create(kind, object)
    }
    func update(_ kind: ResourceKind, _ object: JSONValue, subresource: Subresource, admit: Admission?) async throws(APIError) -> JSONValue {
        count(writes: 1)
        return try await base.update(kind, object, subresource: subresource, admit: admit)
    }
    func patch(_ kind: ResourceKind, namespace: String?, name: String, mergePatch: JSONValue, subresource: Subresource, admit: Admission?)
        async throws(APIError) -> JSONValue
    {
        count(writes: 1)
        return try await base.patch(kind, namespace: namespace, name: name, mergePatch: mergePatch, subresource: subresource, admit: admit)
    }
    func delete(_ kind: ResourceKind, namespace: String?, name: String, precondition: DeletePrecondition?) async throws(APIError) -> JSONValue {
        count(writes: 1)
        return try await base.delete(kind, namespace: namespace, name: name, precondition: precondition)
    }
    func watch(_ kind: ResourceKind, _ selection: Selection, from resourceVersion: Int64?) async throws(APIError) -> AsyncStream<WatchEvent> {
        try await base.watch(kind, selection, from: resourceVersion)
    }
}
