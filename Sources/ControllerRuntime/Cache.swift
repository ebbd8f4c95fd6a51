public import ClusterAPI
import Synchronization

/// The objects of one kind an informer holds, with named indexes (VMI by node, migration by VMI, …): what
/// reconcilers read instead of the store. Reads are synchronous and never touch the store.
///
/// A reconciler that wrote an object records what the store answered (`record(written:)`), so its next reconcile
/// reads its own write even before the watch delivers it (client-go's mutation cache): decisions that count objects
/// (capacity, parallel limits) never act twice on a stale view. A watch event older than what is held does not
/// replace it; the informer's handlers still see every change in the order the watch delivers them.
public final class Cache<R: Resource>: Sendable {
    /// An index: the values an object is filed under (an object may be under none or several).
    public typealias IndexFunction = @Sendable (R) -> [String]

    private struct Entry {
        var object: R
        var envelope: JSONValue
        var version: Int64
    }

    private struct State {
        var entries: [ObjectKey: Entry] = [:]
        /// The object as the watch last delivered it: what a change is compared with.
        var observed: [ObjectKey: R] = [:]
        var indexed: [String: [String: Set<ObjectKey>]] = [:]
        var resourceVersion: Int64 = 0
    }

    private let indexes: [String: IndexFunction]
    private let keepsEnvelopes: Bool
    private let state = Mutex(State())

    /// `keepsEnvelopes: false` holds the typed view alone (`envelope(_:)` answers nil): for a cache of metadata
    /// only, which would otherwise keep every object whole.
    public init(indexes: [String: IndexFunction] = [:], keepsEnvelopes: Bool = true) {
        self.indexes = indexes
        self.keepsEnvelopes = keepsEnvelopes
    }

    /// The object with `key`.
    public subscript(key: ObjectKey) -> R? { state.withLock { $0.entries[key]?.object } }

    /// The object with `key` as stored, with the fields the typed view does not model (for copying a template whole).
    public func envelope(_ key: ObjectKey) -> JSONValue? {
        guard keepsEnvelopes else { return nil }
        return state.withLock { $0.entries[key]?.envelope }
    }

    /// Every object, in key order.
    public var all: [R] { state.withLock { $0.entries.sorted { $0.key < $1.key }.map(\.value.object) } }

    /// Every object, in no particular order (cheaper than `all` where order does not matter).
    public var unordered: [R] { state.withLock { $0.entries.values.map(\.object) } }

    public var count: Int { state.withLock { $0.entries.count } }

    /// The resource version the cache reflects (the newest the watch delivered).
    public var resourceVersion: Int64 { state.withLock { $0.resourceVersion } }

    /// Each object's key and resourceVersion as the watch delivered it (to tell whether the cache caught up).
    public var versions: [ObjectKey: String] {
        state.withLock { state in state.observed.mapValues { $0.metadata.resourceVersion ?? "" } }
    }

    /// The objects filed under `value` in index `index`, in key order.
    public func objects(in index: String, _ value: String) -> [R] {
        state.withLock { state in
            (state.indexed[index]?[value] ?? []).sorted().compactMap { state.entries[$0]?.object }
        }
    }

    /// The keys filed under `value` in index `index`.
    public func keys(in index: String, _ value: String) -> Set<ObjectKey> {
        state.withLock { $0.indexed[index]?[value] ?? [] }
    }

    /// Takes in what the store answered to a write of this process (create, update, patch): held unless the cache
    /// already has a newer version. Deleted objects are left to the watch.
    public func record(written envelope: JSONValue) {
        guard let object = try? R(json: envelope) else { return }
        // A write that released the last finalizer of a deleted object answers with the object as it went.
        if object.metadata.isDeleting && (object.metadata.finalizers ?? []).isEmpty { return }
        let version = Self.version(of: object)
        state.withLock { state in
            if let held = state.entries[object.key], held.version >= version { return }
            insert(Entry(object: object, envelope: keepsEnvelopes ? envelope : .null, version: version), into: &state)
        }
    }

    /// Puts what the watch delivered in (unless a recorded write is newer); returns the object as the watch
    /// delivered it before.
    @discardableResult
    func put(_ object: R, envelope: JSONValue, resourceVersion: Int64) -> R? {
        state.withLock { state in
            let old = state.observed.updateValue(object, forKey: object.key)
            let version = Self.version(of: object)
            if (state.entries[object.key]?.version ?? .min) <= version {
                insert(
                    Entry(object: object, envelope: keepsEnvelopes ? envelope : .null, version: version), into: &state)
            }
            state.resourceVersion = max(state.resourceVersion, resourceVersion)
            return old
        }
    }

    /// Takes the object with `key` out; returns it as the watch delivered it last.
    @discardableResult
    func delete(_ key: ObjectKey, resourceVersion: Int64) -> R? {
        state.withLock { state in
            state.resourceVersion = max(state.resourceVersion, resourceVersion)
            let old = state.observed.removeValue(forKey: key)
            let removed = remove(key, from: &state)
            return old ?? removed
        }
    }

    /// Replaces everything (after a list); returns the objects that were there and are gone.
    func replace(_ objects: [(R, JSONValue)], resourceVersion: Int64) -> [R] {
        let gone = state.withLock { state -> [R] in
            let keep = Set(objects.map(\.0.key))
            let gone = state.entries.filter { !keep.contains($0.key) }.map(\.value.object)
            state = State()
            return gone
        }
        for (object, envelope) in objects { put(object, envelope: envelope, resourceVersion: resourceVersion) }
        state.withLock { $0.resourceVersion = resourceVersion }
        return gone
    }

    private static func version(of object: R) -> Int64 { Int64(object.metadata.resourceVersion ?? "") ?? 0 }

    private func insert(_ entry: Entry, into state: inout State) {
        remove(entry.object.key, from: &state)
        state.entries[entry.object.key] = entry
        for (name, function) in indexes {
            for value in function(entry.object) {
                state.indexed[name, default: [:]][value, default: []].insert(entry.object.key)
            }
        }
    }

    @discardableResult
    private func remove(_ key: ObjectKey, from state: inout State) -> R? {
        guard let old = state.entries.removeValue(forKey: key)?.object else { return nil }
        for (name, function) in indexes {
            for value in function(old) {
                state.indexed[name]?[value]?.remove(key)
                if state.indexed[name]?[value]?.isEmpty == true { state.indexed[name]?[value] = nil }
            }
        }
        return old
    }
}
