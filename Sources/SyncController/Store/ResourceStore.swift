public import ClusterAPI
public import ControllerRuntime
public import Foundation

/// Which part of an object a write replaces.
public enum Subresource: String, Sendable, Hashable {
    /// Everything but status (status writes through `/status` only).
    case main
    /// Only status.
    case status
}

/// The cluster's resources behind a small protocol, so a replicated store (etcd) can replace SQLite later; nothing
/// above it may assume the store is in-process.
///
/// Kubernetes semantics live here: uid, cluster-wide increasing resourceVersion, generation bumped on spec changes,
/// optimistic concurrency (a write carrying a stale resourceVersion is refused with 409), finalizers with
/// deletionTimestamp, and a change feed that watches resume from (410 Gone when the requested version is compacted
/// away). Owner references are the `GarbageCollector`'s: it deletes dependents whose owners are gone, through this
/// protocol like any other client. `ObjectStore` implements it over any `StorageBackend`.
public protocol ResourceStore: ResourceSource {
    func get(_ kind: ResourceKind, namespace: String?, name: String) async throws(APIError) -> JSONValue
    func list(_ kind: ResourceKind, _ selection: Selection) async throws(APIError) -> (
        items: [JSONValue], resourceVersion: Int64
    )
    func create(_ kind: ResourceKind, _ object: JSONValue) async throws(APIError) -> JSONValue
    /// Replaces an object; `admit`, when given, sees the stored object inside the write's transaction and may refuse.
    func update(_ kind: ResourceKind, _ object: JSONValue, subresource: Subresource, admit: Admission?)
        async throws(APIError) -> JSONValue
    /// Merge-patches an object; `admit`, when given, sees the stored object inside the write's transaction and may refuse.
    func patch(
        _ kind: ResourceKind, namespace: String?, name: String, mergePatch: JSONValue, subresource: Subresource,
        admit: Admission?
    )
        async throws(APIError) -> JSONValue
    func delete(_ kind: ResourceKind, namespace: String?, name: String, precondition: DeletePrecondition?)
        async throws(APIError) -> JSONValue
    func watch(_ kind: ResourceKind, _ selection: Selection, from resourceVersion: Int64?) async throws(APIError)
        -> AsyncStream<WatchEvent>
    /// The selected objects as JSON documents, for answering a list without decoding each object.
    func listEncoded(_ kind: ResourceKind, _ selection: Selection) async throws(APIError) -> (
        items: [Data], resourceVersion: Int64
    )
    /// What `/metrics` reports of the store; nil when it cannot tell (a store wrapping another, a store it cannot reach).
    func statistics() async -> StoreStatistics?
}

/// The store's gauges for `/metrics`.
public struct StoreStatistics: Sendable, Hashable {
    /// The newest resourceVersion.
    public var resourceVersion: Int64
    /// Watches open on the store.
    public var watchers: Int

    public init(resourceVersion: Int64, watchers: Int) {
        self.resourceVersion = resourceVersion
        self.watchers = watchers
    }
}

/// A check of a write against the object as stored when the write lands (not as it was read earlier): what makes
/// "is this node allowed to write this" and the write one step.
public typealias Admission = @Sendable (_ existing: JSONValue) throws(APIError) -> Void

extension ResourceStore {
    public func update(_ kind: ResourceKind, _ object: JSONValue, subresource: Subresource) async throws(APIError)
        -> JSONValue
    {
        try await update(kind, object, subresource: subresource, admit: nil)
    }

    public func patch(
        _ kind: ResourceKind, namespace: String?, name: String, mergePatch: JSONValue, subresource: Subresource
    )
        async throws(APIError) -> JSONValue
    {
        try await patch(
            kind, namespace: namespace, name: name, mergePatch: mergePatch, subresource: subresource, admit: nil)
    }

    public func listEncoded(_ kind: ResourceKind, _ selection: Selection) async throws(APIError) -> (
        items: [Data], resourceVersion: Int64
    ) {
        let (items, version) = try await list(kind, selection)
        return (items.map { $0.jsonData() }, version)
    }

    public func statistics() async -> StoreStatistics? { nil }
}

/// `DeleteOptions.preconditions`.
public struct DeletePrecondition: Sendable, Hashable {
    public var uid: String?
    public var resourceVersion: Int64?
    public init(uid: String? = nil, resourceVersion: Int64? = nil) {
        self.uid = uid
        self.resourceVersion = resourceVersion
    }
}
