import ClusterAPI
import Foundation
import SyncController
import Synchronization

/// A second `StorageBackend`, in memory, for tests only: it shows the protocol is narrow enough to implement without
/// SQLite (and so, later, over etcd), and runs the same backend and object tests as the real file. Never a stand-in
/// for the SQLite backend: every test that uses it also runs against the file.
final class InMemoryBackend: StorageBackend {
    private struct Watcher {
        let prefix: String
        let continuation: AsyncStream<StorageEvent>.Continuation
    }

    private struct State {
        var values: [String: StoredValue] = [:]
        var changes: [StorageEvent] = []
        var revision: Int64 = 0
        var compacted: Int64 = 0
        var watchers: [Int: Watcher] = [:]
        var nextWatcher = 0
    }

    private let state = Mutex(State())

    func get(_ key: String) async throws(APIError) -> StoredValue? { state.withLock { $0.values[key] } }

    func list(prefix: String) async throws(APIError) -> (values: [StoredValue], revision: Int64) {
        state.withLock { state in
            let values = state.values.values.filter { $0.key.utf8.starts(with: prefix.utf8) }.sorted {
                $0.key.utf8.lexicographicallyPrecedes($1.key.utf8)
            }
            return (values, state.revision)
        }
    }

    func create(_ key: String, value: Data) async throws(APIError) -> SwapOutcome {
        state.withLock { state in
            if let current = state.values[key] { return .failed(current: current) }
            return Self.commit(&state, .create, key: key, value: value)
        }
    }

    func update(_ key: String, value: Data, ifRevision revision: Int64) async throws(APIError) -> SwapOutcome {
        state.withLock { state in
            guard let current = state.values[key], current.revision == revision else {
                return .failed(current: state.values[key])
            }
            return Self.commit(&state, .update, key: key, value: value)
        }
    }

    func delete(_ key: String, ifRevision revision: Int64) async throws(APIError) -> SwapOutcome {
        state.withLock { state in
            guard let current = state.values[key], current.revision == revision else {
                return .failed(current: state.values[key])
            }
            return Self.commit(&state, .delete, key: key, value: current.value)
        }
    }

    /// Applies one change and hands it to the watchers, under the lock: watchers see changes in revision order.
    private static func commit(_ state: inout State, _ kind: StorageEvent.Kind, key: String, value: Data) -> SwapOutcome
    {
        state.revision += 1
        let event = StorageEvent(kind: kind, key: key, value: value, revision: state.revision)
        state.values[key] = kind == .delete ? nil : StoredValue(key: key, value: value, revision: state.revision)
        state.changes.append(event)
        for (id, watcher) in state.watchers where key.utf8.starts(with: watcher.prefix.utf8) {
            if case .dropped = watcher.continuation.yield(event) {
                watcher.continuation.finish()
                state.watchers[id] = nil
            }
        }
        return .swapped(revision: state.revision)
    }

    func watch(prefix: String, from revision: Int64) async throws(APIError) -> AsyncStream<StorageEvent> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: StorageEvent.self, bufferingPolicy: .bufferingNewest(10_000))
        let id = try state.withLock { state throws(APIError) -> Int in
            guard revision >= state.compacted else {
                throw APIError.gone("too old resource version: \(revision) (\(state.compacted + 1))")
            }
            for event in state.changes where event.revision > revision && event.key.utf8.starts(with: prefix.utf8) {
                continuation.yield(event)
            }
            state.nextWatcher += 1
            state.watchers[state.nextWatcher] = Watcher(prefix: prefix, continuation: continuation)
            return state.nextWatcher
        }
        continuation.onTermination = { [weak self] _ in self?.state.withLock { _ = $0.watchers.removeValue(forKey: id) }
        }
        return stream
    }

    func compact(through revision: Int64) async throws(APIError) {
        state.withLock { state in
            let cutoff = min(revision, state.revision)
            guard cutoff > state.compacted else { return }
            state.changes.removeAll { $0.revision <= cutoff }
            state.compacted = cutoff
        }
    }

    func currentRevision() async throws(APIError) -> Int64 { state.withLock { $0.revision } }

    var watcherCount: Int { state.withLock { $0.watchers.count } }
}
