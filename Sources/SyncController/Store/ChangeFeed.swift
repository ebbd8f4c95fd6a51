import GRDB
import Synchronization

/// The GRDB transaction observer that turns committed rows of the change table into watch events: it notes the
/// revisions a transaction inserts, forgets them if the transaction rolls back, and once it commits reads them back
/// (on the writer, before any later write can start) and hands them to the subscribers whose prefix they match. So a
/// watcher hears only of what is durable, and in revision order.
final class ChangeFeed: TransactionObserver, Sendable {
    /// One watch: its key prefix, its stream, and how far it got.
    final class Subscriber: Sendable {
        let id: Int
        let prefix: String
        let continuation: AsyncStream<StorageEvent>.Continuation
        private let state: Mutex<State>

        private enum State {
            /// The backlog is being read: live changes wait here until it is delivered.
            case replaying(from: Int64, waiting: [StorageEvent])
            /// Delivering live changes after this revision.
            case live(through: Int64)
            /// Fell too far behind; its stream is finished.
            case closed
        }

        init(id: Int, prefix: String, from revision: Int64, continuation: AsyncStream<StorageEvent>.Continuation) {
            self.id = id
            self.prefix = prefix
            self.continuation = continuation
            self.state = Mutex(.replaying(from: revision, waiting: []))
        }

        func concerns(_ event: StorageEvent) -> Bool { event.key.utf8.starts(with: prefix.utf8) }

        /// Passes on the live `events` (those after what it already delivered); false once the subscriber is closed.
        func deliver(_ events: [StorageEvent]) -> Bool {
            state.withLock { state in
                switch state {
                case .closed:
                    return false
                case .replaying(let from, let waiting):
                    state = .replaying(from: from, waiting: waiting + events)
                    return true
                case .live(let through):
                    return Self.yield(events, after: through, to: continuation, state: &state)
                }
            }
        }

        /// Delivers the backlog and then what arrived while it was read, in one step (no live change can overtake
        /// it), and goes live; false once the subscriber is closed.
        func replay(_ backlog: [StorageEvent]) -> Bool {
            state.withLock { state in
                guard case .replaying(let from, let waiting) = state else { return false }
                return Self.yield(backlog + waiting, after: from, to: continuation, state: &state)
            }
        }

        /// Yields the events after `revision` (a change both in the backlog and live goes out once) and records how
        /// far it got; a watcher whose buffer is full is closed.
        private static func yield(
            _ events: [StorageEvent], after revision: Int64, to continuation: AsyncStream<StorageEvent>.Continuation,
            state: inout State
        ) -> Bool {
            var through = revision
            for event in events where event.revision > through {
                through = event.revision
                if case .dropped = continuation.yield(event) {
                    state = .closed
                    continuation.finish()
                    return false
                }
            }
            state = .live(through: through)
            return true
        }
    }

    private struct State {
        var subscribers: [Int: Subscriber] = [:]
        var nextID = 0
        /// Revisions inserted by the transaction under way.
        var pending: [Int64] = []
    }

    private let state = Mutex(State())

    /// Subscribers now.
    var count: Int { state.withLock { $0.subscribers.count } }

    /// A subscriber for changes of keys under `prefix` after `revision`; it holds live changes back until `replay`
    /// gave it the backlog. It leaves when its stream terminates.
    func subscribe(prefix: String, from revision: Int64, continuation: AsyncStream<StorageEvent>.Continuation)
        -> Subscriber
    {
        let subscriber = state.withLock { state in
            state.nextID += 1
            let subscriber = Subscriber(id: state.nextID, prefix: prefix, from: revision, continuation: continuation)
            state.subscribers[subscriber.id] = subscriber
            return subscriber
        }
        let id = subscriber.id
        continuation.onTermination = { [weak self] _ in self?.remove(id) }
        return subscriber
    }

    func unsubscribe(_ subscriber: Subscriber) { remove(subscriber.id) }

    /// Gives `subscriber` the changes recorded before it subscribed, then lets live ones through.
    func replay(_ backlog: [StorageEvent], to subscriber: Subscriber) {
        if !subscriber.replay(backlog) { remove(subscriber.id) }
    }

    private func remove(_ id: Int) {
        _ = state.withLock { $0.subscribers.removeValue(forKey: id) }
    }

    // MARK: TransactionObserver

    func observes(eventsOfKind eventKind: DatabaseEventKind) -> Bool {
        if case .insert(let table) = eventKind { return table == "kv_changes" }
        return false
    }

    func databaseDidChange(with event: DatabaseEvent) {
        // The change table's rowid is the revision.
        let revision = event.rowID
        state.withLock { $0.pending.append(revision) }
    }

    func databaseDidCommit(_ db: Database) {
        let (revisions, subscribers) = state.withLock { state -> ([Int64], [Subscriber]) in
            // A transaction that recorded no change (a compare-and-swap that failed) tells nobody anything.
            guard !state.pending.isEmpty else { return ([], []) }
            defer { state.pending.removeAll(keepingCapacity: true) }
            return (state.pending, Array(state.subscribers.values))
        }
        guard let first = revisions.min(), let last = revisions.max(), !subscribers.isEmpty else { return }
        let events: [StorageEvent]
        do {
            events = try Row.fetchAll(
                db,
                sql:
                    "SELECT revision, kind, key, value FROM kv_changes WHERE revision BETWEEN ? AND ? ORDER BY revision",
                arguments: [first, last]
            ).compactMap(SQLiteBackend.event)
        } catch {
            // What was committed cannot be read back: no watcher may silently miss it, so all start over (re-list).
            for subscriber in subscribers {
                subscriber.continuation.finish()
                remove(subscriber.id)
            }
            return
        }
        for subscriber in subscribers {
            let concerned = events.filter(subscriber.concerns)
            guard !concerned.isEmpty else { continue }
            if !subscriber.deliver(concerned) { remove(subscriber.id) }
        }
    }

    func databaseDidRollback(_ db: Database) {
        state.withLock { $0.pending.removeAll(keepingCapacity: true) }
    }
}
