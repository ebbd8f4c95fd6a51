public import ClusterAPI
public import Logging
import Synchronization

/// What a group of controllers needs of an informer whatever its kind: run it, wait for its first list, and tell
/// whether it has seen every change.
public protocol SharedInformer: Sendable {
    func run() async
    func waitForSync() async
    func caughtUp() async throws(APIError) -> Bool
    /// The kind it watches (`ResourceKind.kind`).
    var kindName: String { get }
    /// Whether it has applied every change up to `resourceVersion` of its kind and told its handlers.
    func hasSeen(_ resourceVersion: Int64) -> Bool
}

/// Lists and then watches one kind into a `Cache`, telling `handlers` of every change (event handlers only enqueue
/// keys; reconcilers read the cache). A watch that ends (the source restarted, the version was compacted) is followed
/// by a fresh list, and objects that disappeared meanwhile are reported deleted.
public final class Informer<R: Resource>: SharedInformer {
    /// One change: the object before (nil when added) and after (nil when deleted).
    public struct Change: Sendable {
        public var old: R?
        public var new: R?
        /// The key of the object that changed.
        public var key: ObjectKey { (new ?? old)!.key }
    }

    public typealias Handler = @Sendable (Change) async -> Void

    public let cache: Cache<R>
    private let source: any ResourceSource
    private let selection: Selection
    private let handler: Handler
    private let logger: Logger
    private let synced = SyncSignal()
    /// Events taken from the watch whose handlers have not returned yet.
    private let inFlight = Mutex(0)

    public convenience init(
        source: any ResourceSource, selection: Selection = Selection(), indexes: [String: Cache<R>.IndexFunction] = [:],
        logger: Logger = Logger(label: "vmsync.informer"), handler: @escaping Handler
    ) {
        self.init(
            source: source, cache: Cache(indexes: indexes), selection: selection, logger: logger, handler: handler)
    }

    /// An informer filling a cache made beforehand (so handlers of several informers can read each other's caches).
    public init(
        source: any ResourceSource, cache: Cache<R>, selection: Selection = Selection(),
        logger: Logger = Logger(label: "vmsync.informer"), handler: @escaping Handler
    ) {
        self.source = source
        self.selection = selection
        self.cache = cache
        self.handler = handler
        self.logger = logger
    }

    public var kindName: String { R.kind.kind }

    public func hasSeen(_ resourceVersion: Int64) -> Bool {
        cache.resourceVersion >= resourceVersion && inFlight.withLock { $0 } == 0
    }

    /// Whether the cache holds exactly the objects `source` lists now, at the versions it lists them (tests and
    /// benchmarks waiting for the controllers to see every write).
    public func caughtUp() async throws(APIError) -> Bool {
        let (items, _) = try await source.list(R.kind, selection)
        var listed: [ObjectKey: String] = [:]
        for item in items {
            guard let object = try? R(json: item) else { continue }
            listed[object.key] = object.metadata.resourceVersion ?? ""
        }
        return listed == cache.versions && inFlight.withLock { $0 } == 0
    }

    /// Waits until the first list is in the cache.
    public func waitForSync() async { await synced.wait() }

    /// Lists and watches until cancelled.
    public func run() async {
        var retry = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                try await listAndWatch()
                retry = .milliseconds(100)
            } catch {
                logger.warning(
                    "informer list or watch failed", metadata: ["kind": "\(R.kind.kind)", "error": "\(error.message)"])
                try? await Task.sleep(for: retry)
                retry = min(retry * 2, .seconds(5))
            }
        }
    }

    private func listAndWatch() async throws(APIError) {
        let (items, version) = try await source.list(R.kind, selection)
        let decoded = items.compactMap { item in decode(item).map { ($0, item) } }
        let previous = Dictionary(cache.all.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        let gone = cache.replace(decoded, resourceVersion: version)
        synced.signal()
        for object in gone { await handler(Change(old: object, new: nil)) }
        for (object, _) in decoded where previous[object.key] != object {
            await handler(Change(old: previous[object.key], new: object))
        }
        let events = try await source.watch(R.kind, selection, from: version)
        for await event in events {
            if Task.isCancelled { return }
            await apply(event)
        }
    }

    private func apply(_ event: WatchEvent) async {
        inFlight.withLock { $0 += 1 }
        defer { inFlight.withLock { $0 -= 1 } }
        guard let object = decode(event.object) else {
            // What cannot be read is out of the cache rather than stale in it.
            let key = ObjectKey(
                namespace: R.kind.namespaced ? event.object["metadata"]?["namespace"]?.string ?? "default" : nil,
                name: event.object["metadata"]?["name"]?.string ?? "")
            if let old = cache.delete(key, resourceVersion: event.resourceVersion) {
                await handler(Change(old: old, new: nil))
            }
            return
        }
        switch event.type {
        case .added, .modified:
            let old = cache.put(object, envelope: event.object, resourceVersion: event.resourceVersion)
            if old != object { await handler(Change(old: old, new: object)) }
        case .deleted:
            let old = cache.delete(object.key, resourceVersion: event.resourceVersion)
            await handler(Change(old: old ?? object, new: nil))
        }
    }

    private func decode(_ json: JSONValue) -> R? {
        do {
            return try R(json: json)
        } catch {
            logger.warning("object cannot be read", metadata: ["kind": "\(R.kind.kind)", "error": "\(error.message)"])
            return nil
        }
    }
}

/// A one-time signal: `wait` returns once `signal` was called, or at once when the waiting task is cancelled (a
/// controller stopped before its informers listed must not hang its shutdown).
final class SyncSignal: Sendable {
    private struct State {
        var done = false
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
    }
    private let state = Mutex(State())

    func signal() {
        let waiters = state.withLock { state in
            defer { state.waiters.removeAll() }
            state.done = true
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    func wait() async {
        let id = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state in
                    if state.done || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}
