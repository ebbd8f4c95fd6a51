import ClusterAPI
import ControllerRuntime
import Foundation
import Logging
import Metrics
import MetricsTestKit
import SyncController

/// What the controller does for one change in a large cluster: 100 Ready nodes, 1,000 VMs with their VMIs running;
/// one VMI's label changes and the controllers (`ClusterControllers`, in process, on the SQLite store) react. Reports,
/// per change, the objects they read from the store (gets, list items and watch events), the writes they make, the
/// reconciles they run and the time until they are quiet again, next to the anchor: one list of all VMIs from the same
/// store in the same round (the cost of reading the cluster once, which the whole-cluster pass of before paid several
/// times per change).
enum ReconcileScaleBenchmark {
    static func run(nodes nodeCount: Int, vms vmCount: Int, rounds: Int) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "bench-rs-\(UUID().uuidString.prefix(6))"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sqlite = try SQLiteStore(path: directory + "/cluster.sqlite", retainedChanges: 1_000_000)
        try await ClusterDefaults.ensure(in: sqlite)
        for index in 0..<nodeCount {
            let name = "n\(index)"
            _ = try await sqlite.create(
                Kinds.node,
                [
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": [
                        "name": .string(name),
                        "labels": [
                            "kubernetes.io/hostname": .string(name), "host-model-cpu.node.kubevirt.io/EPYC": "true",
                            "cpu-model.node.kubevirt.io/Westmere": "true",
                        ],
                    ],
                ])
            var ready = Resources.condition("Ready", true, reason: "AgentReady")
            ready["lastHeartbeatTime"] = .string(Resources.now())
            _ = try await sqlite.patch(
                Kinds.node, namespace: nil, name: name,
                mergePatch: [
                    "status": ["allocatable": ["memory": "64Gi"], "conditions": [ready], "printableStatus": "Ready"]
                ], subresource: .status)
        }
        for index in 0..<vmCount {
            _ = try await sqlite.create(
                Kinds.virtualMachine,
                [
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                    "metadata": ["name": .string("vm\(index)"), "namespace": "default"],
                    "spec": [
                        "runStrategy": "Always",
                        "template": ["spec": ["domain": ["resources": ["requests": ["memory": "64Mi"]]]]],
                    ],
                ])
        }
        let store = CountingStore(base: sqlite)
        var quiet = Logger(label: "vmsync.bench.controllers")
        quiet.logLevel = .error
        // Reconciles counted through the controllers' own `vmsync_reconcile_total`, read from an in-memory backend.
        let metrics = TestMetrics()
        let controllers = withMetricsFactory(metrics) {
            ClusterControllers(store: store, nodeGracePeriod: .seconds(3600), logger: quiet)
        }
        var reconcilesBefore: Int64 = 0
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await controllers.run() }
            // Settle: VMIs created and scheduled, then running on their nodes (as their agents would report).
            try await controllers.settle(timeout: .seconds(600))
            for vmi in try await sqlite.list(Kinds.virtualMachineInstance, Selection()).items {
                guard let name = vmi["metadata"]?["name"]?.string, let node = vmi["status"]?["nodeName"]?.string else {
                    continue
                }
                _ = try await sqlite.patch(
                    Kinds.virtualMachineInstance, namespace: "default", name: name,
                    mergePatch: ["status": ["phase": "Running", "nodeName": .string(node)]], subresource: .status)
            }
            try await controllers.settle(timeout: .seconds(600))
            let running = try await sqlite.list(Kinds.virtualMachineInstance, Selection()).items.filter {
                $0["status"]?["phase"] == "Running"
            }.count
            var reactionTimes: [Double] = []
            var listTimes: [Double] = []
            var reads: [Double] = []
            var writes: [Double] = []
            var runs: [Double] = []
            for round in 0..<rounds {
                store.reset()
                reconcilesBefore = metrics.counterTotal(label: "vmsync_reconcile_total")
                let start = ContinuousClock.now
                let changed = try await sqlite.patch(
                    Kinds.virtualMachineInstance, namespace: "default", name: "vm\(round % vmCount)",
                    mergePatch: ["metadata": ["labels": ["round": .string(String(round))]]], subresource: .main)
                // Quiet: every informer has seen the change and every write it led to, and no queue has work.
                var seen = [
                    Kinds.virtualMachineInstance.kind: Int64(changed["metadata"]?["resourceVersion"]?.string ?? "") ?? 0
                ]
                var calm = 0
                while calm < 2 {
                    seen.merge(store.written) { max($0, $1) }
                    calm =
                        controllers.isQuiet(after: seen)
                            && store.written.allSatisfy({ seen[$0.key, default: 0] >= $0.value }) ? calm + 1 : 0
                    try await Task.sleep(for: .microseconds(200))
                }
                reactionTimes.append(milliseconds(ContinuousClock.now - start))
                reads.append(Double(store.objectsRead))
                writes.append(Double(store.writes))
                runs.append(Double(metrics.counterTotal(label: "vmsync_reconcile_total") - reconcilesBefore))
                let listed = ContinuousClock.now
                _ = try await sqlite.list(Kinds.virtualMachineInstance, Selection())
                listTimes.append(milliseconds(ContinuousClock.now - listed))
            }
            let reaction = median(reactionTimes)
            let list = median(listTimes)
            print(
                "reconcile-scale: \(nodeCount) nodes, \(vmCount) VMs (\(running) VMIs Running); one VMI changed, median of \(rounds):"
            )
            print(
                "  controllers quiet again after \(String(format: "%.1f", reaction)) ms; \(median(reads)) objects read, \(median(writes)) writes, \(median(runs)) reconciles"
            )
            print(
                "  anchor, one list of all VMIs: \(String(format: "%.1f", list)) ms; ratio reaction/list \(String(format: "%.2f", reaction / max(list, 0.001)))"
            )
            group.cancelAll()
        }
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
    }
}

/// A store that counts what its users read (gets, list items, watch events) and write, and remembers the newest
/// resourceVersion it wrote per kind.
final class CountingStore: ResourceStore, @unchecked Sendable {
    let base: any ResourceStore
    private let lock = NSLock()
    private var read = 0
    private var writeCount = 0
    private var versions: [String: Int64] = [:]

    init(base: any ResourceStore) { self.base = base }

    var objectsRead: Int { lock.withLock { read } }
    var writes: Int { lock.withLock { writeCount } }
    /// The newest resourceVersion written per kind since the last reset.
    var written: [String: Int64] { lock.withLock { versions } }
    func reset() {
        lock.withLock {
            read = 0
            writeCount = 0
            versions = [:]
        }
    }
    private func count(read objects: Int = 0) { lock.withLock { read += objects } }

    private func wrote(_ kind: ResourceKind, _ object: JSONValue) -> JSONValue {
        let version = Int64(object["metadata"]?["resourceVersion"]?.string ?? "") ?? 0
        lock.withLock {
            writeCount += 1
            versions[kind.kind] = max(versions[kind.kind] ?? 0, version)
        }
        return object
    }

    func get(_ kind: ResourceKind, namespace: String?, name: String) async throws(APIError) -> JSONValue {
        count(read: 1)
        return try await base.get(kind, namespace: namespace, name: name)
    }
    func list(_ kind: ResourceKind, _ selection: Selection) async throws(APIError) -> (
        items: [JSONValue], resourceVersion: Int64
    ) {
        let result = try await base.list(kind, selection)
        count(read: result.items.count)
        return result
    }
    func create(_ kind: ResourceKind, _ object: JSONValue) async throws(APIError) -> JSONValue {
        wrote(kind, try await base.create(kind, object))
    }
    func update(_ kind: ResourceKind, _ object: JSONValue, subresource: Subresource, admit: Admission?)
        async throws(APIError) -> JSONValue
    {
        wrote(kind, try await base.update(kind, object, subresource: subresource, admit: admit))
    }
    func patch(
        _ kind: ResourceKind, namespace: String?, name: String, mergePatch: JSONValue, subresource: Subresource,
        admit: Admission?
    )
        async throws(APIError) -> JSONValue
    {
        wrote(
            kind,
            try await base.patch(
                kind, namespace: namespace, name: name, mergePatch: mergePatch, subresource: subresource, admit: admit))
    }
    func delete(_ kind: ResourceKind, namespace: String?, name: String, precondition: DeletePrecondition?)
        async throws(APIError) -> JSONValue
    {
        wrote(kind, try await base.delete(kind, namespace: namespace, name: name, precondition: precondition))
    }
    func watch(_ kind: ResourceKind, _ selection: Selection, from resourceVersion: Int64?) async throws(APIError)
        -> AsyncStream<WatchEvent>
    {
        let events = Iterator(try await base.watch(kind, selection, from: resourceVersion).makeAsyncIterator())
        return AsyncStream { [self] in
            let event = await events.next()
            if event != nil { count(read: 1) }
            return event
        }
    }

    /// The base stream's iterator, used by one consumer at a time (the informer).
    private final class Iterator: @unchecked Sendable {
        var iterator: AsyncStream<WatchEvent>.Iterator
        init(_ iterator: AsyncStream<WatchEvent>.Iterator) { self.iterator = iterator }
        func next() async -> WatchEvent? { await iterator.next() }
    }
}
