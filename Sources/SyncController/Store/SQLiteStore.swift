public import ClusterAPI
import Dispatch
public import Foundation
import GRDB
import Synchronization

/// The cluster's resources in SQLite (WAL, `synchronous = FULL`: a write is acknowledged only once it is durable).
///
/// Writes run one at a time on a serial queue of their own (never on the cooperative pool), and each publishes its
/// changes to the watchers before the next write starts, so every watcher sees changes in resourceVersion order.
public final class SQLiteStore: ResourceStore, Sendable {
    private let database: DatabasePool
    private let writer = DispatchQueue(label: "vmsync.store.writer")
    private let readers = DispatchQueue(label: "vmsync.store.readers", attributes: .concurrent)
    private let watchers = Mutex<[UUID: Watcher]>([:])
    /// Changes kept for watches to resume from.
    private let retainedChanges: Int64

    private struct Watcher {
        let resource: String
        let selection: Selection
        let continuation: AsyncStream<WatchEvent>.Continuation
    }

    /// Opens (creating and migrating if needed) the store at `path`.
    public init(path: String, retainedChanges: Int64 = 100_000) throws(APIError) {
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        configuration.busyMode = .timeout(10)
        do {
            database = try DatabasePool(path: path, configuration: configuration)
            try StoreMigrations.migrator.migrate(database)
        } catch {
            throw APIError.internalError("cannot open the store at \(path): \(error)")
        }
        self.retainedChanges = retainedChanges
    }

    // MARK: Reads

    public func get(_ kind: ResourceKind, namespace: String?, name: String) async throws(APIError) -> JSONValue {
        let key = Self.key(kind, namespace: namespace, name: name)
        return try await read { db throws -> JSONValue in
            guard let object = try Self.load(db, key) else { throw Self.notFound(kind, name) }
            return object
        }
    }

    public func list(_ kind: ResourceKind, _ selection: Selection) async throws(APIError) -> (items: [JSONValue], resourceVersion: Int64) {
        try await read { db throws -> (items: [JSONValue], resourceVersion: Int64) in
            let items = try Self.loadAll(db, kind, selection)
            return (items, try Self.currentVersion(db))
        }
    }

    public func listEncoded(_ kind: ResourceKind, _ selection: Selection) async throws(APIError) -> (items: [Data], resourceVersion: Int64) {
        // Without selectors the stored documents go out as they are: no decoding, no re-encoding.
        guard selection.labels == nil, selection.fields == nil else {
            let (items, version) = try await list(kind, selection)
            return (items.map { $0.jsonData() }, version)
        }
        return try await read { db throws -> (items: [Data], resourceVersion: Int64) in
            let rows: [String]
            if kind.namespaced, let namespace = selection.namespace {
                rows = try String.fetchAll(db, sql: "SELECT body FROM objects WHERE resource = ? AND namespace = ? ORDER BY namespace, name", arguments: [kind.resource, namespace])
            } else {
                rows = try String.fetchAll(db, sql: "SELECT body FROM objects WHERE resource = ? ORDER BY namespace, name", arguments: [kind.resource])
            }
            return (rows.map { Data($0.utf8) }, try Self.currentVersion(db))
        }
    }

    // MARK: Writes

    public func create(_ kind: ResourceKind, _ object: JSONValue) async throws(APIError) -> JSONValue {
        try await write { db throws -> (JSONValue, [WatchEvent]) in
            var object = object
            try Self.checkIdentity(kind, object)
            var metadata = object["metadata"] ?? [:]
            if metadata["name"]?.string?.isEmpty ?? true {
                guard let prefix = metadata["generateName"]?.string, !prefix.isEmpty else {
                    throw APIError(.invalid, code: 422, "\(kind.kind).\(kind.group.isEmpty ? "core" : kind.group) is invalid: metadata.name: Required value: name or generateName is required")
                }
                metadata["name"] = .string(prefix + Self.randomSuffix())
            }
            let name = metadata["name"]!.string!
            try Self.checkName(kind, name)
            let namespace = kind.namespaced ? (metadata["namespace"]?.string ?? "default") : nil
            if let namespace { metadata["namespace"] = .string(namespace) } else { metadata["namespace"] = nil }
            try kind.validate(object)
            if try Self.load(db, Self.key(kind, namespace: namespace, name: name)) != nil {
                throw APIError.alreadyExists("\(kind.resource) \"\(name)\" already exists")
            }
            metadata["uid"] = .string(UUID().uuidString.lowercased())
            metadata["creationTimestamp"] = .string(Self.now())
            metadata["generation"] = 1
            metadata["deletionTimestamp"] = nil
            metadata["resourceVersion"] = nil
            object["metadata"] = metadata
            object["apiVersion"] = .string(kind.apiVersion)
            object["kind"] = .string(kind.kind)
            if kind.hasStatus { object["status"] = nil }
            try kind.validate(object)
            let event = try Self.store(db, kind, object, type: .added)
            return (event.object, [event])
        }
    }

    public func update(_ kind: ResourceKind, _ object: JSONValue, subresource: Subresource, admit: Admission?) async throws(APIError) -> JSONValue {
        try await write { db throws -> (JSONValue, [WatchEvent]) in
            try Self.checkIdentity(kind, object)
            let name = object["metadata"]?["name"]?.string ?? ""
            let namespace = kind.namespaced ? (object["metadata"]?["namespace"]?.string ?? "default") : nil
            guard let existing = try Self.load(db, Self.key(kind, namespace: namespace, name: name)) else {
                throw Self.notFound(kind, name)
            }
            try admit?(existing)
            if let version = object["metadata"]?["resourceVersion"]?.string, !version.isEmpty,
                version != existing["metadata"]?["resourceVersion"]?.string
            {
                throw Self.conflict(kind, name)
            }
            if let uid = object["metadata"]?["uid"]?.string, !uid.isEmpty, uid != existing["metadata"]?["uid"]?.string {
                throw APIError.conflict("Precondition failed: UID in object meta: \(uid), does not match the stored \(kind.resource) \"\(name)\"")
            }
            return try Self.replace(db, kind, existing: existing, with: object, subresource: subresource)
        }
    }

    public func patch(_ kind: ResourceKind, namespace: String?, name: String, mergePatch: JSONValue, subresource: Subresource, admit: Admission?)
        async throws(APIError) -> JSONValue
    {
        guard case .object = mergePatch else { throw APIError.badRequest("a merge patch must be a JSON object") }
        return try await write { db throws -> (JSONValue, [WatchEvent]) in
            let key = Self.key(kind, namespace: namespace, name: name)
            guard let existing = try Self.load(db, key) else { throw Self.notFound(kind, name) }
            try admit?(existing)
            var patched = existing.merged(with: mergePatch)
            // Conditions merge by type, as a strategic merge patch does: writers of different conditions (the
            // scheduler, the node agent, the LiveMigratable check) never erase each other's.
            if let incoming = mergePatch["status"]?["conditions"]?.array, let current = existing["status"]?["conditions"]?.array {
                var merged = current
                for condition in incoming {
                    if let index = merged.firstIndex(where: { $0["type"] == condition["type"] }) { merged[index] = condition } else { merged.append(condition) }
                }
                patched["status"]?["conditions"] = .array(merged)
            }
            if let version = mergePatch["metadata"]?["resourceVersion"]?.string,
                version != existing["metadata"]?["resourceVersion"]?.string
            {
                throw Self.conflict(kind, name)
            }
            try Self.checkIdentity(kind, patched)
            guard patched["metadata"]?["name"]?.string == name else {
                throw APIError(.invalid, code: 422, "\(kind.resource) \"\(name)\" is invalid: metadata.name: Invalid value: the name cannot be changed")
            }
            return try Self.replace(db, kind, existing: existing, with: patched, subresource: subresource)
        }
    }

    public func delete(_ kind: ResourceKind, namespace: String?, name: String, precondition: DeletePrecondition?)
        async throws(APIError) -> JSONValue
    {
        try await write { db throws -> (JSONValue, [WatchEvent]) in
            let key = Self.key(kind, namespace: namespace, name: name)
            guard let existing = try Self.load(db, key) else { throw Self.notFound(kind, name) }
            if let uid = precondition?.uid, uid != existing["metadata"]?["uid"]?.string {
                throw APIError.conflict("Precondition failed: UID in precondition: \(uid), UID in object meta: \(existing["metadata"]?["uid"]?.string ?? "")")
            }
            if let version = precondition?.resourceVersion, String(version) != existing["metadata"]?["resourceVersion"]?.string {
                throw Self.conflict(kind, name)
            }
            var events: [WatchEvent] = []
            let result = try Self.delete(db, kind, existing, events: &events)
            return (result, events)
        }
    }

    public func watch(_ kind: ResourceKind, _ selection: Selection, from resourceVersion: Int64?) async throws(APIError)
        -> AsyncStream<WatchEvent>
    {
        let (stream, continuation) = AsyncStream.makeStream(of: WatchEvent.self, bufferingPolicy: .bufferingNewest(50_000))
        let id = UUID()
        // Registered on the writer queue: no write can fall between the backlog and the live events.
        let result: Result<Void, APIError> = await withCheckedContinuation { done in
            writer.async { [self] in
                switch Self.run({ try database.read { db in try Self.backlog(db, kind, selection, from: resourceVersion) } }) {
                case .failure(let error):
                    done.resume(returning: .failure(error))
                    return
                case .success(let events):
                    for event in events { continuation.yield(event) }
                }
                watchers.withLock { $0[id] = Watcher(resource: kind.resource, selection: selection, continuation: continuation) }
                done.resume(returning: .success(()))
            }
        }
        try result.get()
        continuation.onTermination = { [weak self] _ in
            _ = self?.watchers.withLock { $0.removeValue(forKey: id) }
        }
        return stream
    }

    /// How many watches are open (for metrics and tests).
    public var watcherCount: Int { watchers.withLock { $0.count } }

    /// The newest resourceVersion.
    public func currentResourceVersion() async throws(APIError) -> Int64 {
        try await read { db throws -> Int64 in try Self.currentVersion(db) }
    }

    // MARK: Execution

    private func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(APIError) -> T {
        let result: Result<T, APIError> = await withCheckedContinuation { continuation in
            readers.async { [database] in
                continuation.resume(returning: Self.run { try database.read { db in try body(db) } })
            }
        }
        return try result.get()
    }

    private func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> (T, [WatchEvent])) async throws(APIError) -> T {
        let result: Result<T, APIError> = await withCheckedContinuation { continuation in
            writer.async { [self] in
                let outcome = Self.run {
                    try database.write { db in
                        let result = try body(db)
                        if let last = result.1.last?.resourceVersion, last % 1000 == 0 { try compact(db) }
                        return result
                    }
                }
                switch outcome {
                case .success(let (value, events)):
                    publish(events)
                    continuation.resume(returning: .success(value))
                case .failure(let error):
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }

    private func publish(_ events: [WatchEvent]) {
        guard !events.isEmpty else { return }
        let current = watchers.withLock { $0 }
        guard !current.isEmpty else { return }
        let events = events.map { event in
            var encoded = event
            encoded.encoded = event.line
            return encoded
        }
        for (id, watcher) in current {
            for event in events where Self.concerns(event, watcher) {
                if case .dropped = watcher.continuation.yield(event) {
                    // A watcher that cannot keep up is closed; it re-lists and watches again, as Kubernetes clients do.
                    watcher.continuation.finish()
                    _ = watchers.withLock { $0.removeValue(forKey: id) }
                    break
                }
            }
        }
    }

    private static func concerns(_ event: WatchEvent, _ watcher: Watcher) -> Bool {
        let resource = event.object["apiVersion"].flatMap { apiVersion in
            event.object["kind"].flatMap { Kinds.lookup(apiVersion: apiVersion.string ?? "", kind: $0.string ?? "")?.resource }
        }
        guard resource == watcher.resource else { return false }
        if let namespace = watcher.selection.namespace, event.object["metadata"]?["namespace"]?.string != namespace { return false }
        return watcher.selection.matches(event.object)
    }

    private func compact(_ db: Database) throws {
        let current = try Self.currentVersion(db)
        let cutoff = current - retainedChanges
        guard cutoff > 0 else { return }
        try db.execute(sql: "DELETE FROM changes WHERE resource_version <= ?", arguments: [cutoff])
        try db.execute(sql: "UPDATE counters SET value = max(value, ?) WHERE name = 'compactedThrough'", arguments: [cutoff])
    }

    /// Runs store work: an APIError passes through, a database error becomes an internal error.
    private static func run<T>(_ body: () throws -> T) -> Result<T, APIError> {
        do {
            return .success(try body())
        } catch let error as APIError {
            return .failure(error)
        } catch {
            return .failure(APIError.internalError("store: \(error)"))
        }
    }
}

// MARK: Object semantics, inside one transaction

extension SQLiteStore {
    struct Key: Sendable {
        let resource: String
        let namespace: String
        let name: String
    }

    static func key(_ kind: ResourceKind, namespace: String?, name: String) -> Key {
        Key(resource: kind.resource, namespace: kind.namespaced ? (namespace ?? "default") : "", name: name)
    }

    static func load(_ db: Database, _ key: Key) throws -> JSONValue? {
        guard let body = try String.fetchOne(
            db, sql: "SELECT body FROM objects WHERE resource = ? AND namespace = ? AND name = ?",
            arguments: [key.resource, key.namespace, key.name])
        else { return nil }
        return try? JSONValue.parse(Data(body.utf8))
    }

    static func loadAll(_ db: Database, _ kind: ResourceKind, _ selection: Selection) throws -> [JSONValue] {
        let rows: [String]
        if kind.namespaced, let namespace = selection.namespace {
            rows = try String.fetchAll(
                db, sql: "SELECT body FROM objects WHERE resource = ? AND namespace = ? ORDER BY namespace, name",
                arguments: [kind.resource, namespace])
        } else {
            rows = try String.fetchAll(db, sql: "SELECT body FROM objects WHERE resource = ? ORDER BY namespace, name", arguments: [kind.resource])
        }
        return rows.compactMap { try? JSONValue.parse(Data($0.utf8)) }.filter(selection.matches)
    }

    static func currentVersion(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT value FROM counters WHERE name = 'resourceVersion'") ?? 0
    }

    static func backlog(_ db: Database, _ kind: ResourceKind, _ selection: Selection, from version: Int64?) throws -> [WatchEvent] {
        guard let version, version > 0 else {
            // No version (or "0"): the current objects as synthetic ADDED events, then what follows.
            return try loadAll(db, kind, selection).map { object in
                WatchEvent(type: .added, object: object, resourceVersion: Int64(object["metadata"]?["resourceVersion"]?.string ?? "") ?? 0)
            }
        }
        let compacted = try Int64.fetchOne(db, sql: "SELECT value FROM counters WHERE name = 'compactedThrough'") ?? 0
        if version < compacted {
            throw APIError.gone("too old resource version: \(version) (\(compacted + 1))")
        }
        var events: [WatchEvent] = []
        let rows = try Row.fetchAll(
            db,
            sql: "SELECT resource_version, type, namespace, body FROM changes WHERE resource_version > ? AND resource = ? ORDER BY resource_version",
            arguments: [version, kind.resource])
        for row in rows {
            let namespace: String = row["namespace"]
            if kind.namespaced, let wanted = selection.namespace, namespace != wanted { continue }
            guard let object = try? JSONValue.parse(Data((row["body"] as String).utf8)), selection.matches(object),
                let type = WatchEvent.Kind(rawValue: row["type"])
            else { continue }
            events.append(WatchEvent(type: type, object: object, resourceVersion: row["resource_version"]))
        }
        return events
    }

    /// Allocates the next resourceVersion, writes the object and its change, and indexes its owners.
    static func store(_ db: Database, _ kind: ResourceKind, _ object: JSONValue, type: WatchEvent.Kind) throws -> WatchEvent {
        let version = try nextVersion(db)
        var object = object
        object["metadata"]?["resourceVersion"] = .string(String(version))
        let metadata = object["metadata"] ?? [:]
        let uid = metadata["uid"]?.string ?? ""
        let name = metadata["name"]?.string ?? ""
        let namespace = kind.namespaced ? (metadata["namespace"]?.string ?? "default") : ""
        let body = object.jsonString()
        try db.execute(
            sql: """
                INSERT INTO objects (resource, namespace, name, uid, resource_version, body) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (resource, namespace, name) DO UPDATE SET uid = excluded.uid,
                    resource_version = excluded.resource_version, body = excluded.body
                """,
            arguments: [kind.resource, namespace, name, uid, version, body])
        try db.execute(sql: "DELETE FROM owner_references WHERE dependent_uid = ?", arguments: [uid])
        for owner in metadata["ownerReferences"]?.array ?? [] {
            guard let ownerUID = owner["uid"]?.string else { continue }
            try db.execute(
                sql: "INSERT OR IGNORE INTO owner_references (owner_uid, dependent_uid) VALUES (?, ?)", arguments: [ownerUID, uid])
        }
        try db.execute(
            sql: "INSERT INTO changes (resource_version, type, resource, namespace, name, body) VALUES (?, ?, ?, ?, ?, ?)",
            arguments: [version, type.rawValue, kind.resource, namespace, name, body])
        return WatchEvent(type: type, object: object, resourceVersion: version)
    }

    static func nextVersion(_ db: Database) throws -> Int64 {
        guard let version = try Int64.fetchOne(
            db, sql: "UPDATE counters SET value = value + 1 WHERE name = 'resourceVersion' RETURNING value")
        else { throw APIError.internalError("store: the resourceVersion counter is missing") }
        return version
    }

    /// A replace of the main resource or of status, keeping what the system owns.
    static func replace(_ db: Database, _ kind: ResourceKind, existing: JSONValue, with incoming: JSONValue, subresource: Subresource)
        throws -> (JSONValue, [WatchEvent])
    {
        var result: JSONValue
        switch subresource {
        case .status:
            guard kind.hasStatus else { throw APIError.notFound("\(kind.resource) has no status subresource") }
            result = existing
            result["status"] = incoming["status"]
        case .main:
            result = incoming
            result["status"] = kind.hasStatus ? existing["status"] : incoming["status"]
            var metadata = incoming["metadata"] ?? [:]
            let old = existing["metadata"] ?? [:]
            for owned in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "generation"] {
                metadata[owned] = old[owned]
            }
            result["metadata"] = metadata
            var oldBody = existing
            var newBody = result
            for part in ["metadata", "status"] {
                oldBody[part] = nil
                newBody[part] = nil
            }
            if oldBody != newBody { result["metadata"]?["generation"] = .int((old["generation"]?.int ?? 1) + 1) }
        }
        result["metadata"]?["resourceVersion"] = nil
        result["apiVersion"] = .string(kind.apiVersion)
        result["kind"] = .string(kind.kind)
        try kind.validate(result, ratchetingFrom: existing)
        var comparable = existing
        comparable["metadata"]?["resourceVersion"] = nil
        if comparable == result {
            return (existing, [])  // nothing changed: no new version, no event
        }
        // Deletion was requested and the last finalizer is gone: the object goes now.
        if result["metadata"]?["deletionTimestamp"] != nil, (result["metadata"]?["finalizers"]?.array ?? []).isEmpty {
            var events: [WatchEvent] = []
            let deleted = try remove(db, kind, result, events: &events)
            return (deleted, events)
        }
        let event = try store(db, kind, result, type: .modified)
        return (event.object, [event])
    }

    /// Delete: marked (deletionTimestamp) while finalizers remain, removed otherwise.
    static func delete(_ db: Database, _ kind: ResourceKind, _ object: JSONValue, events: inout [WatchEvent]) throws -> JSONValue {
        if !(object["metadata"]?["finalizers"]?.array ?? []).isEmpty {
            guard object["metadata"]?["deletionTimestamp"] == nil else { return object }
            var marked = object
            marked["metadata"]?["deletionTimestamp"] = .string(now())
            marked["metadata"]?["deletionGracePeriodSeconds"] = 0
            let event = try store(db, kind, marked, type: .modified)
            events.append(event)
            return event.object
        }
        return try remove(db, kind, object, events: &events)
    }

    /// Removes the object, records DELETED, then deletes its dependents (owner references).
    static func remove(_ db: Database, _ kind: ResourceKind, _ object: JSONValue, events: inout [WatchEvent]) throws -> JSONValue {
        let metadata = object["metadata"] ?? [:]
        let uid = metadata["uid"]?.string ?? ""
        let version = try nextVersion(db)
        var deleted = object
        deleted["metadata"]?["resourceVersion"] = .string(String(version))
        let namespace = kind.namespaced ? (metadata["namespace"]?.string ?? "default") : ""
        let name = metadata["name"]?.string ?? ""
        try db.execute(sql: "DELETE FROM objects WHERE resource = ? AND namespace = ? AND name = ?", arguments: [kind.resource, namespace, name])
        try db.execute(
            sql: "INSERT INTO changes (resource_version, type, resource, namespace, name, body) VALUES (?, 'DELETED', ?, ?, ?, ?)",
            arguments: [version, kind.resource, namespace, name, deleted.jsonString()])
        events.append(WatchEvent(type: .deleted, object: deleted, resourceVersion: version))
        let dependents = try Row.fetchAll(
            db,
            sql: "SELECT o.resource, o.body FROM owner_references r JOIN objects o ON o.uid = r.dependent_uid WHERE r.owner_uid = ?",
            arguments: [uid])
        try db.execute(sql: "DELETE FROM owner_references WHERE owner_uid = ?", arguments: [uid])
        for row in dependents {
            let resource: String = row["resource"]
            guard let dependentKind = Kinds.all.first(where: { $0.resource == resource }),
                let dependent = try? JSONValue.parse(Data((row["body"] as String).utf8))
            else { continue }
            _ = try delete(db, dependentKind, dependent, events: &events)
        }
        return deleted
    }

    static func checkIdentity(_ kind: ResourceKind, _ object: JSONValue) throws(APIError) {
        guard case .object = object else { throw APIError.badRequest("the body must be a JSON object") }
        if let apiVersion = object["apiVersion"]?.string, apiVersion != kind.apiVersion {
            throw APIError.badRequest("the body's apiVersion \"\(apiVersion)\" does not match the path's \"\(kind.apiVersion)\"")
        }
        if let name = object["kind"]?.string, name != kind.kind {
            throw APIError.badRequest("the body's kind \"\(name)\" does not match the path's \"\(kind.kind)\"")
        }
    }

    static func checkName(_ kind: ResourceKind, _ name: String) throws(APIError) {
        let valid = name.count <= 253 && !name.isEmpty
            && name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "." }
            && name.first != "-" && name.last != "-"
        guard valid else {
            throw APIError(
                .invalid, code: 422,
                "\(kind.kind) \"\(name)\" is invalid: metadata.name: Invalid value: \"\(name)\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")
        }
    }

    static func notFound(_ kind: ResourceKind, _ name: String) -> APIError {
        APIError(.notFound, code: 404, "\(kind.resource) \"\(name)\" not found", details: .init(name: name, group: kind.group, kind: kind.plural))
    }

    static func conflict(_ kind: ResourceKind, _ name: String) -> APIError {
        APIError(
            .conflict, code: 409,
            "Operation cannot be fulfilled on \(kind.resource) \"\(name)\": the object has been modified; please apply your changes to the latest version and try again",
            details: .init(name: name, group: kind.group, kind: kind.plural))
    }

    static func now() -> String { Date.now.formatted(.iso8601) }

    static func randomSuffix() -> String {
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        return String((0..<5).map { _ in alphabet.randomElement()! })
    }
}
