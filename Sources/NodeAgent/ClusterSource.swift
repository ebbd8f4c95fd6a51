import ClusterAPI
import ClusterClient
import ControllerRuntime

/// The cluster API as an informer's source: lists and watches through the agent's client. A watch is ended by the
/// server after `resync` seconds, after which the informer lists again — what repairs anything a watch missed (a
/// connection that went dark) without trusting it to say so.
struct ClusterSource: ResourceSource {
    let client: APIClient
    var resync = 60

    func list(_ kind: ResourceKind, _ selection: Selection) async throws(APIError) -> (
        items: [JSONValue], resourceVersion: Int64
    ) {
        let body = try await client.list(
            kind, namespace: selection.namespace, labelSelector: selection.labels?.description,
            fieldSelector: selection.fields?.description)
        guard let list = try? body.decode(ObjectList.self) else {
            throw APIError.internalError("the list of \(kind.resource) the cluster API answered is not a list")
        }
        return (list.items ?? [], list.resourceVersion)
    }

    func watch(_ kind: ResourceKind, _ selection: Selection, from resourceVersion: Int64?) async throws(APIError)
        -> AsyncStream<WatchEvent>
    {
        let events = try await client.watch(
            kind, namespace: selection.namespace, labelSelector: selection.labels?.description,
            fieldSelector: selection.fields?.description,
            resourceVersion: resourceVersion.map(String.init), timeoutSeconds: resync)
        let iterator = EventIterator(events.makeAsyncIterator())
        // A failed watch ends the stream: the informer lists again.
        return AsyncStream { await iterator.next() }
    }

    /// The client's stream as `WatchEvent`s, read by one consumer (the informer).
    private final class EventIterator: @unchecked Sendable {
        var base: AsyncThrowingStream<(type: String, object: JSONValue), any Error>.Iterator
        init(_ base: AsyncThrowingStream<(type: String, object: JSONValue), any Error>.Iterator) { self.base = base }

        func next() async -> WatchEvent? {
            while true {
                guard let (type, object) = try? await base.next() else { return nil }
                guard let kind = WatchEvent.Kind(rawValue: type) else { continue }
                return WatchEvent(type: kind, object: object, resourceVersion: ObjectHeader.resourceVersion(of: object))
            }
        }
    }
}
