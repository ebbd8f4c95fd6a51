public import ClusterAPI

/// Where informers list and watch objects: the controller's store in-process, or the cluster API over the network.
public protocol ResourceSource: Sendable {
    func list(_ kind: ResourceKind, _ selection: Selection) async throws(APIError) -> (
        items: [JSONValue], resourceVersion: Int64
    )
    /// Changes after `resourceVersion` (all current objects as ADDED when nil); the stream ends when the watch does.
    func watch(_ kind: ResourceKind, _ selection: Selection, from resourceVersion: Int64?) async throws(APIError)
        -> AsyncStream<WatchEvent>
}
