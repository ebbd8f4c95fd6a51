public import ClusterAPI
public import Foundation
import GRDB
import Synchronization

/// The storage backend in one SQLite file (WAL, `synchronous = FULL`: a write is acknowledged only once it is durable):
/// the embedded default of a single controller.
///
/// Every access goes through GRDB's asynchronous `DatabasePool` methods: writes are serialized by GRDB's writer,
/// reads run concurrently on WAL snapshots, and none of it blocks the cooperative pool. Watchers hear of changes from
/// a GRDB transaction observer on the change table: it publishes what a transaction recorded only once the
/// transaction committed, from the writer, so every watcher sees every change once and in revision order.
public final class SQLiteBackend: StorageBackend {
    private let database: DatabasePool
    private let feed: ChangeFeed
    /// Changes kept for watches to resume from; older ones are compacted away as writes go on (as etcd's
    /// revision-based auto-compaction does).
    private let retainedChanges: Int64
    /// How many events a watcher may fall behind by before its watch is closed (it lists and watches again).
    private let watcherBuffer: Int

    /// Opens (creating and migrating if needed) the store file at `path`.
    public init(path: String, retainedChanges: Int64 = 100_000, watcherBuffer: Int = 50_000) throws(APIError) {
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        configuration.busyMode = .timeout(10)
        do {
            database = try DatabasePool(path: path, configuration: configuration)
            try StoreMigrations.migrator.migrate(database)
        } catch {
            throw APIError.internalError("cannot open the store at \(path): \(error)")
        }
        self.retainedChanges = retainedChanges
        self.watcherBuffer = watcherBuffer
        feed = ChangeFeed()
        // For the whole life of the connection: the feed holds no reference back to the backend.
        database.add(transactionObserver: feed, extent: .databaseLifetime)
    }

    // MARK: Reads

    public func get(_ key: String) async throws(APIError) -> StoredValue? {
        try await access("read of \(key)") {
            try await database.read { db in try Self.load(db, key) }
        }
    }

    public func list(prefix: String) async throws(APIError) -> (values: [StoredValue], revision: Int64) {
        try await access("list of \(prefix)") {
            try await database.read { db -> (values: [StoredValue], revision: Int64) in
                let (range, arguments) = Self.keyRange(prefix)
                // A cursor, not fetchAll: rows are read in place, and only keys and values are copied out.
                let rows = try Row.fetchCursor(
                    db, sql: "SELECT key, value, revision FROM kv WHERE \(range) ORDER BY key", arguments: arguments)
                var values: [StoredValue] = []
                while let row = try rows.next() {
                    values.append(StoredValue(key: row[0], value: row[1], revision: row[2]))
                }
                return (values, try Self.revisions(db).current)
            }
        }
    }

    public func currentRevision() async throws(APIError) -> Int64 {
        try await access("read of the current revision") {
            try await database.read { db in try Self.revisions(db).current }
        }
    }

    // MARK: Conditional writes

    public func create(_ key: String, value: Data) async throws(APIError) -> SwapOutcome {
        try await write("create of \(key)") { db in
            if let current = try Self.load(db, key) { return .failed(current: current) }
            let revision = try Self.nextRevision(db)
            try db.cachedStatement(sql: "INSERT INTO kv (key, value, revision) VALUES (?, ?, ?)")
                .execute(arguments: [Data(key.utf8), value, revision])
            try Self.record(db, .create, key: key, value: value, revision: revision)
            return .swapped(revision: revision)
        }
    }

    public func update(_ key: String, value: Data, ifRevision expected: Int64) async throws(APIError) -> SwapOutcome {
        try await write("update of \(key)") { db in
            guard let current = try Self.load(db, key), current.revision == expected else {
                return .failed(current: try Self.load(db, key))
            }
            let revision = try Self.nextRevision(db)
            try db.cachedStatement(sql: "UPDATE kv SET value = ?, revision = ? WHERE key = ?")
                .execute(arguments: [value, revision, Data(key.utf8)])
            try Self.record(db, .update, key: key, value: value, revision: revision)
            return .swapped(revision: revision)
        }
    }

    public func delete(_ key: String, ifRevision expected: Int64) async throws(APIError) -> SwapOutcome {
        try await write("delete of \(key)") { db in
            guard let current = try Self.load(db, key), current.revision == expected else {
                return .failed(current: try Self.load(db, key))
            }
            let revision = try Self.nextRevision(db)
            try db.cachedStatement(sql: "DELETE FROM kv WHERE key = ?").execute(arguments: [Data(key.utf8)])
            // A delete carries the value as it was, as etcd's previous key-value does.
            try Self.record(db, .delete, key: key, value: current.value, revision: revision)
            return .swapped(revision: revision)
        }
    }

    public func compact(through revision: Int64) async throws(APIError) {
        try await access("compaction through \(revision)") {
            try await database.write { db in try Self.compact(db, through: revision) }
        }
    }

    // MARK: Watches

    public var watcherCount: Int { feed.count }

    public func watch(prefix: String, from revision: Int64) async throws(APIError) -> AsyncStream<StorageEvent> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: StorageEvent.self, bufferingPolicy: .bufferingNewest(watcherBuffer))
        // Subscribed before the backlog is read, so no commit can fall between the two: a change in both is delivered
        // once (the subscriber drops what it already passed on).
        let subscriber = feed.subscribe(prefix: prefix, from: revision, continuation: continuation)
        let backlog: [StorageEvent]
        do {
            backlog = try await access("watch of \(prefix) from \(revision)") {
                try await database.read { db -> [StorageEvent] in
                    let compacted = try Self.revisions(db).compacted
                    if revision < compacted {
                        throw APIError.gone("too old resource version: \(revision) (\(compacted + 1))")
                    }
                    let (range, arguments) = Self.keyRange(prefix)
                    return try Row.fetchAll(
                        db,
                        sql:
                            "SELECT revision, kind, key, value FROM kv_changes WHERE revision > ? AND \(range) ORDER BY revision",
                        arguments: StatementArguments([revision]) + arguments
                    ).compactMap(Self.event)
                }
            }
        } catch {
            feed.unsubscribe(subscriber)
            continuation.finish()
            throw error
        }
        feed.replay(backlog, to: subscriber)
        return stream
    }

    // MARK: Inside a transaction

    /// One conditional write in one transaction, compacting the change table every thousandth revision.
    private func write(
        _ operation: @autoclosure () -> String, _ body: @escaping @Sendable (Database) throws -> SwapOutcome
    )
        async throws(APIError) -> SwapOutcome
    {
        let retained = retainedChanges
        return try await access(operation()) {
            try await database.write { db in
                let outcome = try body(db)
                if case .swapped(let revision) = outcome, revision % 1000 == 0, revision > retained {
                    try Self.compact(db, through: revision - retained)
                }
                return outcome
            }
        }
    }

    private func access<T: Sendable>(_ operation: @autoclosure () -> String, _ body: () async throws -> T)
        async throws(APIError) -> T
    {
        try await Self.access(operation(), body)
    }

    /// How many times an access that lost SQLite's WAL locking race is tried in all.
    static let lockRaceAttempts = 5

    /// Runs a database access: an `APIError` passes through, anything else becomes an internal error naming the
    /// operation. SQLITE_PROTOCOL — the transaction could not start because it lost the WAL locking race for
    /// seconds (SQLite's own retries exhausted; seen on a loaded machine) — means nothing was done, so the access is
    /// tried again after a pause rather than failing a write the caller would have to repeat.
    static func access<T: Sendable>(_ operation: @autoclosure () -> String, _ body: () async throws -> T)
        async throws(APIError) -> T
    {
        var pause = Duration.milliseconds(20)
        for attempt in 1...lockRaceAttempts {
            do {
                return try await body()
            } catch let error as APIError {
                throw error
            } catch let error as DatabaseError where error.resultCode == .SQLITE_PROTOCOL && attempt < lockRaceAttempts
            {
                try? await Task.sleep(for: pause)
                pause *= 2
            } catch {
                throw APIError.internalError("store: \(operation()) failed: \(error)")
            }
        }
        throw APIError.internalError("store: \(operation()) failed")
    }

    static func load(_ db: Database, _ key: String) throws -> StoredValue? {
        let statement = try db.cachedStatement(sql: "SELECT value, revision FROM kv WHERE key = ?")
        guard let row = try Row.fetchOne(statement, arguments: [Data(key.utf8)]) else { return nil }
        return StoredValue(key: key, value: row[0], revision: row[1])
    }

    static func revisions(_ db: Database) throws -> (current: Int64, compacted: Int64) {
        guard
            let row = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT revision, compacted FROM kv_revision WHERE id = 1"))
        else {
            throw APIError.internalError("store: the revision counter is missing")
        }
        return (row[0], row[1])
    }

    static func nextRevision(_ db: Database) throws -> Int64 {
        let statement = try db.cachedStatement(
            sql: "UPDATE kv_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision")
        guard let revision = try Int64.fetchOne(statement) else {
            throw APIError.internalError("store: the revision counter is missing")
        }
        return revision
    }

    static func record(_ db: Database, _ kind: StorageEvent.Kind, key: String, value: Data, revision: Int64) throws {
        try db.cachedStatement(sql: "INSERT INTO kv_changes (revision, kind, key, value) VALUES (?, ?, ?, ?)")
            .execute(arguments: [revision, kind.rawValue, Data(key.utf8), value])
    }

    static func compact(_ db: Database, through revision: Int64) throws {
        let current = try revisions(db)
        let cutoff = min(revision, current.current)
        guard cutoff > current.compacted else { return }
        try db.execute(sql: "DELETE FROM kv_changes WHERE revision <= ?", arguments: [cutoff])
        try db.execute(sql: "UPDATE kv_revision SET compacted = ? WHERE id = 1", arguments: [cutoff])
    }

    static func event(_ row: Row) -> StorageEvent? {
        guard let kind = StorageEvent.Kind(rawValue: row["kind"]) else { return nil }
        return StorageEvent(
            kind: kind, key: String(decoding: row["key"] as Data, as: UTF8.self), value: row["value"],
            revision: row["revision"])
    }

    /// The SQL condition for keys starting with `prefix`: a range on the key index, compared bytewise (keys are
    /// blobs, so no collation or text affinity gets in the way).
    static func keyRange(_ prefix: String) -> (String, StatementArguments) {
        guard let end = rangeEnd(ofPrefix: prefix) else { return ("key >= ?", [Data(prefix.utf8)]) }
        return ("key >= ? AND key < ?", [Data(prefix.utf8), Data(end)])
    }
}
