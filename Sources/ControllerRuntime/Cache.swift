public import ClusterAPI
import Synchronization

/// The objects of one kind an informer holds, with named indexes (VMI by node, migration by VMI, …): what
/// reconcilers read instead of the store. Reads are synchronous and never touch the store.
public final class Cache<R: Resource>: Sendable {
    /// An index: the values an object is filed under (an object may be under none or several).
    public typealias IndexFunction = @Sendable (R) -> [String]

    private struct State {
        var objects: [ObjectKey: R] = [:]
        var envelopes: [ObjectKey: JSONValue] = [:]
        var indexed: [String: [String: Set<ObjectKey>]] = [:]
        var resourceVersion: Int64 = 0
    }

    private let indexes: [String: IndexFunction]
    private let state = Mutex(State())

    public init(indexes: [String: IndexFunction] = [:]) {
        self.indexes = indexes
    }

    /// The object with `key`.
    public subscript(key: ObjectKey) -> R? { state.withLock { $0.objects[key] } }

    /// The object with `key` as stored, with the fields the typed view does not model (for copying a template whole).
    public func envelope(_ key: ObjectKey) -> JSONValue? { state.withLock { $0.envelopes[key] } }

    /// Every object, in key order.
    public var all: [R] { state.withLock { $0.objects.sorted { $0.key < $1.key }.map(\.value) } }

    public var count: Int { state.withLock { $0.objects.count } }

    /// The resource version the cache reflects.
    public var resourceVersion: Int64 { state.withLock { $0.resourceVersion } }

    /// The objects filed under `value` in index `index`, in key order.
    public func objects(in index: String, _ value: String) -> [R] {
        state.withLock { state in
            (state.indexed[index]?[value] ?? []).sorted().compactMap { state.objects[$0] }
        }
    }

    /// The keys filed under `value` in index `index`.
    public func keys(in index: String, _ value: String) -> Set<ObjectKey> {
        state.withLock { $0.indexed[index]?[value] ?? [] }
    }

    /// Puts `object` in (replacing the one with its key); returns the one it replaced.
    @discardableResult
    func put(_ object: R, envelope: JSONValue, resourceVersion: Int64) -> R? {
        state.withLock { state in
            let old = remove(object.key, from: &state)
            state.objects[object.key] = object
            state.envelopes[object.key] = envelope
            for (name, function) in indexes {
                for value in function(object) { state.indexed[name, default: [:]][value, default: []].insert(object.key) }
            }
            state.resourceVersion = max(state.resourceVersion, resourceVersion)
            return old
        }
    }

    /// Takes the object with `key` out; returns it.
    @discardableResult
    func delete(_ key: ObjectKey, resourceVersion: Int64) -> R? {
        state.withLock { state in
            state.resourceVersion = max(state.resourceVersion, resourceVersion)
            return remove(key, from: &state)
        }
    }

    /// Replaces everything (after a list); returns the keys that were there and are gone.
    func replace(_ objects: [(R, JSONValue)], resourceVersion: Int64) -> [R] {
        let gone = state.withLock { state -> [R] in
            let keep = Set(objects.map(\.0.key))
            let gone = state.objects.filter { !keep.contains($0.key) }.map(\.value)
            state = State()
            return gone
        }
        for (object, envelope) in objects { put(object, envelope: envelope, resourceVersion: resourceVersion) }
        state.withLock { $0.resourceVersion = resourceVersion }
        return gone
    }

    private func remove(_ key: ObjectKey, from state: inout State) -> R? {
        guard let old = state.objects.removeValue(forKey: key) else { return nil }
        state.envelopes[key] = nil
        for (name, function) in indexes {
            for value in function(old) {
                state.indexed[name]?[value]?.remove(key)
                if state.indexed[name]?[value]?.isEmpty == true { state.indexed[name]?[value] = nil }
            }
        }
        return old
    }
}
