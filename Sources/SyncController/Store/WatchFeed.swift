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

    init(
        initial: [WatchEvent], changes: AsyncStream<StorageEvent>, selection: Selection,
        convert: @escaping @Sendable (StorageEvent) -> WatchEvent?
    ) {
        self.initial = initial[...]
        self.changes = changes.makeAsyncIterator()
        self.selection = selection
        self.convert = convert
    }

    /// The next event the watch delivers; nil once the backend's stream ended (the watcher fell behind, the store
    /// closed) or the consuming task was cancelled.
    func next() async -> WatchEvent? {
        if let event = initial.popFirst() { return event }
        while let change = await changes.next() {
            guard let event = convert(change), selection.matches(event.object) else { continue }
            return event
        }
        return nil
    }
}
