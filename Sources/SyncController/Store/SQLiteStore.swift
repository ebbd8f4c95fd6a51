public import ClusterAPI
public import Foundation

/// The cluster's resources in one SQLite file: `ObjectStore`'s Kubernetes semantics over a `SQLiteBackend`. The
/// controller's embedded default, kept under this name for its callers; a replicated store is an `ObjectStore` over
/// another backend.
public final class SQLiteStore: ResourceStore {
    /// The file's key-value backend.
    public let backend: SQLiteBackend
    private let objects: ObjectStore

    /// Opens (creating and migrating if needed) the store at `path`, keeping `retainedChanges` changes for watches
    /// to resume from.
    public init(path: String, retainedChanges: Int64 = 100_000) throws(APIError) {
        backend = try SQLiteBackend(path: path, retainedChanges: retainedChanges)
        objects = ObjectStore(backend: backend)
    }

    public func get(_ kind: ResourceKind, namespace: String?, name: String) async throws(APIError) -> JSONValue {
        try await objects.get(kind, namespace: namespace, name: name)
    }

    public func list(_ kind: ResourceKind, _ selection: Selection) async throws(APIError) -> (
        items: [JSONValue], resourceVersion: Int64
    ) {
        try await objects.list(kind, selection)
    }

    public func listEncoded(_ kind: ResourceKind, _ selection: Selection) async throws(APIError) -> (
        items: [Data], resourceVersion: Int64
    ) {
        try await objects.listEncoded(kind, selection)
    }

    public func create(_ kind: ResourceKind, _ object: JSONValue) async throws(APIError) -> JSONValue {
        try await objects.create(kind, object)
    }

    public func update(_ kind: ResourceKind, _ object: JSONValue, subresource: Subresource, admit: Admission?)
        async throws(APIError) -> JSONValue
    {
        try await objects.update(kind, object, subresource: subresource, admit: admit)
    }

    public func patch(
        _ kind: ResourceKind, namespace: String?, name: String, mergePatch: JSONValue, subresource: Subresource,
        admit: Admission?
    )
        async throws(APIError) -> JSONValue
    {
        try await objects.patch(
            kind, namespace: namespace, name: name, mergePatch: mergePatch, subresource: subresource, admit: admit)
    }

    public func delete(_ kind: ResourceKind, namespace: String?, name: String, precondition: DeletePrecondition?)
        async throws(APIError) -> JSONValue
    {
        try await objects.delete(kind, namespace: namespace, name: name, precondition: precondition)
    }

    public func watch(_ kind: ResourceKind, _ selection: Selection, from resourceVersion: Int64?) async throws(APIError)
        -> AsyncStream<WatchEvent>
    {
        try await objects.watch(kind, selection, from: resourceVersion)
    }

    public func statistics() async -> StoreStatistics? { await objects.statistics() }

    /// How many watches are open (for metrics and tests).
    public var watcherCount: Int { backend.watcherCount }

    /// The newest resourceVersion.
    public func currentResourceVersion() async throws(APIError) -> Int64 { try await backend.currentRevision() }
}
