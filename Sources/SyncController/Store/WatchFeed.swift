import ClusterAPI

/// One watch's events, pulled by its consumer: first the current objects (a watch without a resourceVersion), then the
/// backend's changes turned into watch events and filtered by the watch's selection. Pulled through
/// `AsyncStream(unfolding:)`, so no task runs on the watch's behalf: the conversion happens in the consumer's task,
/// and when the consumer stops, the backend's stream is released and its subscription ends.
///
/// `@unchecked Sendable`: its mutable state (the position in the initial events, the backend stream's iterator) is
/// touched only by `next`, which the one consumer of the unfolding stream calls one at a time.
final class WatchFeed: @unchecked Sendable {
    private var initial: ArraySlice<WatchEvent>
    private var changes: AsyncStream<StorageEvent>.Iterator
    private let selection: Selection
    private let convert: @Sendable (StorageEvent) -> WatchEvent?
    /// With a label or field selection: the objects the watcher holds as selected (namespace/name). An object that
    /// stops matching is DELETED for this watcher, one that starts matching ADDED, as Kubernetes does — a node agent
    /// watching `status.nodeName=a` learns that a VMI left it.
    private var selected: Set<String>

    init(
        initial: [WatchEvent], changes: AsyncStream<StorageEvent>, selection: Selection, selected: Set<String> = [],
        convert: @escaping @Sendable (StorageEvent) -> WatchEvent?
    ) {
        self.initial = initial[...]
        self.changes = changes.makeAsyncIterator()
        self.selection = selection
        self.convert = convert
        self.selected = selected.union(initial.map { Self.identity($0.object) })
    }

    /// The namespace and name of an object.
    static func identity(_ object: JSONValue) -> String {
        "\(object["metadata"]?["namespace"]?.string ?? "")/\(object["metadata"]?["name"]?.string ?? "")"
    }

    /// The next event the watch delivers; nil once the backend's stream ended (the watcher fell behind, the store
    /// closed) or the consuming task was cancelled.
    func next() async -> WatchEvent? {
        if let event = initial.popFirst() { return event }
        let filtered = selection.labels != nil || selection.fields != nil
        while let change = await changes.next() {
            guard var event = convert(change) else { continue }
            guard filtered else { return event }
            let identity = Self.identity(event.object)
            if selection.matches(event.object) {
                let known =
                    event.type == .deleted ? selected.remove(identity) != nil : !selected.insert(identity).inserted
                if event.type == .modified && !known {
                    event.type = .added
                    event.encoded = nil
                }
                if event.type == .deleted && !known { continue }
                return event
            }
            // No longer selected: gone from this watcher's view.
            guard event.type != .deleted, selected.remove(identity) != nil else { continue }
            event.type = .deleted
            event.encoded = nil
            return event
        }
        return nil
    }
}
