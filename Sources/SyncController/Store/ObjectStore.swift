public import ClusterAPI
public import Foundation

/// Kubernetes object semantics over any `StorageBackend`: uid, generateName, creationTimestamp, generation bumped on
/// spec changes, the status subresource, validation, finalizers with deletionTimestamp, 409 on a stale
/// resourceVersion, delete preconditions, and watches with label and field selections. The backend's revision of an
/// object's key is its resourceVersion.
///
/// Every write is a read followed by a compare-and-swap on the revision read: when another write landed in between,
/// the swap fails and the write is decided again from what is stored now. So an `Admission` check, and every rule
/// that looks at the stored object, always sees the object the write replaces. Owner references are not acted on
/// here: deleting an owner leaves its dependents to the `GarbageCollector`, which works through this same API (and so
/// the same way over etcd).
public final class ObjectStore: ResourceStore {
    private let backend: any StorageBackend
    /// Every watcher of a change shares one decoding and one encoding of it.
    private let decoded = DecodedChanges()

    public init(backend: any StorageBackend) {
        self.backend = backend
    }

    // MARK: Keys

    /// `/<resource>/<namespace>/<name>`, or `/<resource>/<name>` for a cluster-scoped kind.
    static func key(_ kind: ResourceKind, namespace: String?, name: String) -> String {
        kind.namespaced ? "/\(kind.resource)/\(namespace ?? "default")/\(name)" : "/\(kind.resource)/\(name)"
    }

    /// The prefix of the keys a selection covers: one namespace, or the whole kind.
    static func prefix(_ kind: ResourceKind, _ selection: Selection) -> String {
        if kind.namespaced, let namespace = selection.namespace { return "/\(kind.resource)/\(namespace)/" }
        return "/\(kind.resource)/"
    }

    // MARK: Reads

    public func get(_ kind: ResourceKind, namespace: String?, name: String) async throws(APIError) -> JSONValue {
        guard let stored = try await backend.get(Self.key(kind, namespace: namespace, name: name)),
            let object = ObjectEncoding.decode(stored.value, revision: stored.revision)
        else { throw Self.notFound(kind, name) }
        return object
    }

    public func list(_ kind: ResourceKind, _ selection: Selection) async throws(APIError) -> (
        items: [JSONValue], resourceVersion: Int64
    ) {
        let (values, revision) = try await backend.list(prefix: Self.prefix(kind, selection))
        let items = values.compactMap { ObjectEncoding.decode($0.value, revision: $0.revision) }.filter(
            selection.matches)
        return (items, revision)
    }

    public func listEncoded(_ kind: ResourceKind, _ selection: Selection) async throws(APIError) -> (
        items: [Data], resourceVersion: Int64
    ) {
        // Without selectors the stored documents go out as they are: no decoding, no re-encoding.
        guard selection.labels == nil, selection.fields == nil else {
            let (items, version) = try await list(kind, selection)
            return (items.map { $0.jsonData() }, version)
        }
        let (values, revision) = try await backend.list(prefix: Self.prefix(kind, selection))
        return (ObjectEncoding.documents(values), revision)
    }

    /// The newest resourceVersion.
    public func currentResourceVersion() async throws(APIError) -> Int64 {
        try await backend.currentRevision()
    }

    public func statistics() async -> StoreStatistics? {
        guard let revision = try? await backend.currentRevision() else { return nil }
        return StoreStatistics(resourceVersion: revision, watchers: backend.watcherCount)
    }

    // MARK: Writes

    public func create(_ kind: ResourceKind, _ object: JSONValue) async throws(APIError) -> JSONValue {
        var object = object
        try Self.checkIdentity(kind, object)
        var metadata = object["metadata"] ?? [:]
        if metadata["name"]?.string?.isEmpty ?? true {
            guard let prefix = metadata["generateName"]?.string, !prefix.isEmpty else {
                throw APIError(
                    .invalid, code: 422,
                    "\(kind.kind).\(kind.group.isEmpty ? "core" : kind.group) is invalid: metadata.name: Required value: name or generateName is required"
                )
            }
            metadata["name"] = .string(prefix + Self.randomSuffix())
        }
        let name = metadata["name"]?.string ?? ""
        try Self.checkName(kind, name)
        let namespace = kind.namespaced ? (metadata["namespace"]?.string ?? "default") : nil
        if let namespace {
            try Self.checkNamespace(kind, name, namespace)
            metadata["namespace"] = .string(namespace)
        } else {
            metadata["namespace"] = nil
        }
        try kind.validate(object)
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
        switch try await backend.create(
            Self.key(kind, namespace: namespace, name: name), value: ObjectEncoding.encode(object))
        {
        case .swapped(let revision):
            object["metadata"]?["resourceVersion"] = .string(String(revision))
            return object
        case .failed:
            throw APIError.alreadyExists("\(kind.resource) \"\(name)\" already exists")
        }
    }

    public func update(_ kind: ResourceKind, _ object: JSONValue, subresource: Subresource, admit: Admission?)
        async throws(APIError) -> JSONValue
    {
        try Self.checkIdentity(kind, object)
        let name = object["metadata"]?["name"]?.string ?? ""
        let namespace = kind.namespaced ? (object["metadata"]?["namespace"]?.string ?? "default") : nil
        return try await change(kind, namespace: namespace, name: name) { existing throws(APIError) in
            try admit?(existing)
            if let version = object["metadata"]?["resourceVersion"]?.string, !version.isEmpty,
                version != existing["metadata"]?["resourceVersion"]?.string
            {
                throw Self.conflict(kind, name)
            }
            if let uid = object["metadata"]?["uid"]?.string, !uid.isEmpty, uid != existing["metadata"]?["uid"]?.string {
                throw APIError.conflict(
                    "Precondition failed: UID in object meta: \(uid), does not match the stored \(kind.resource) \"\(name)\""
                )
            }
            return try Self.replace(kind, existing: existing, with: object, subresource: subresource)
        }
    }

    public func patch(
        _ kind: ResourceKind, namespace: String?, name: String, mergePatch: JSONValue, subresource: Subresource,
        admit: Admission?
    )
        async throws(APIError) -> JSONValue
    {
        guard case .object = mergePatch else { throw APIError.badRequest("a merge patch must be a JSON object") }
        return try await change(kind, namespace: namespace, name: name) { existing throws(APIError) in
            try admit?(existing)
            var patched = existing.merged(with: mergePatch)
            // Conditions merge by type, as a strategic merge patch does: writers of different conditions (the
            // scheduler, the node agent, the LiveMigratable check) never erase each other's.
            if let incoming = mergePatch["status"]?["conditions"]?.array,
                let current = existing["status"]?["conditions"]?.array
            {
                var merged = current
                for condition in incoming {
                    if let index = merged.firstIndex(where: { $0["type"] == condition["type"] }) {
                        merged[index] = condition
                    } else {
                        merged.append(condition)
                    }
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
                throw APIError(
                    .invalid, code: 422,
                    "\(kind.resource) \"\(name)\" is invalid: metadata.name: Invalid value: the name cannot be changed")
            }
            return try Self.replace(kind, existing: existing, with: patched, subresource: subresource)
        }
    }

    public func delete(_ kind: ResourceKind, namespace: String?, name: String, precondition: DeletePrecondition?)
        async throws(APIError) -> JSONValue
    {
        try await change(kind, namespace: namespace, name: name) { existing throws(APIError) in
            if let uid = precondition?.uid, uid != existing["metadata"]?["uid"]?.string {
                throw APIError.conflict(
                    "Precondition failed: UID in precondition: \(uid), UID in object meta: \(existing["metadata"]?["uid"]?.string ?? "")"
                )
            }
            if let version = precondition?.resourceVersion,
                String(version) != existing["metadata"]?["resourceVersion"]?.string
            {
                throw Self.conflict(kind, name)
            }
            // Marked (deletionTimestamp) while finalizers remain, removed otherwise.
            guard (existing["metadata"]?["finalizers"]?.array ?? []).isEmpty else {
                guard existing["metadata"]?["deletionTimestamp"] == nil else { return .keep }
                var marked = existing
                marked["metadata"]?["deletionTimestamp"] = .string(Self.now())
                marked["metadata"]?["deletionGracePeriodSeconds"] = 0
                return .write(marked)
            }
            return .remove
        }
    }

    // MARK: Watches

    public func watch(_ kind: ResourceKind, _ selection: Selection, from resourceVersion: Int64?) async throws(APIError)
        -> AsyncStream<WatchEvent>
    {
        let prefix = Self.prefix(kind, selection)
        var initial: [WatchEvent] = []
        var selected: Set<String> = []
        let start: Int64
        if let resourceVersion, resourceVersion > 0 {
            start = resourceVersion
            if selection.labels != nil || selection.fields != nil {
                // What the watcher holds, as near as the store can tell: the objects selected now (a list just before
                // the watch, as informers do it). An object that leaves the selection later is reported DELETED.
                let (values, _) = try await backend.list(prefix: prefix)
                for stored in values {
                    guard let object = ObjectEncoding.decode(stored.value, revision: stored.revision),
                        selection.matches(object)
                    else { continue }
                    selected.insert(WatchFeed.identity(object))
                }
            }
        } else {
            // No version (or "0"): the current objects as synthetic ADDED events, then what follows.
            let (values, revision) = try await backend.list(prefix: prefix)
            initial = values.compactMap { stored in
                ObjectEncoding.decode(stored.value, revision: stored.revision).map {
                    WatchEvent(type: .added, object: $0, resourceVersion: stored.revision)
                }
            }.filter { selection.matches($0.object) }
            start = revision
        }
        let changes = try await backend.watch(prefix: prefix, from: start)
        let feed = WatchFeed(
            initial: initial, changes: changes, selection: selection, selected: selected, convert: decoded.event)
        return AsyncStream(unfolding: { await feed.next() })
    }

    // MARK: The compare-and-swap loop

    /// What a write decided from the object as stored.
    enum Decision {
        /// Nothing to write: the answer is the stored object.
        case keep
        /// Replace the stored object with this one; `thenRemove` when it is being deleted and holds no finalizer.
        case write(JSONValue, thenRemove: Bool = false)
        /// Delete the stored object.
        case remove
    }

    /// Reads the object, lets `decide` choose from it, and writes the choice if the object is still at the revision
    /// read; when another write landed meanwhile, decides again from what is stored now. Errors `decide` throws
    /// (admission, preconditions, validation) end the write with nothing stored.
    private func change(
        _ kind: ResourceKind, namespace: String?, name: String, _ decide: (JSONValue) throws(APIError) -> Decision
    )
        async throws(APIError) -> JSONValue
    {
        let key = Self.key(kind, namespace: namespace, name: name)
        var current = try await backend.get(key)
        while true {
            guard let stored = current, let existing = ObjectEncoding.decode(stored.value, revision: stored.revision)
            else {
                throw Self.notFound(kind, name)
            }
            switch try decide(existing) {
            case .keep:
                return existing
            case .write(let object, let thenRemove):
                switch try await backend.update(key, value: ObjectEncoding.encode(object), ifRevision: stored.revision)
                {
                case .swapped(let revision):
                    var written = object
                    written["metadata"]?["resourceVersion"] = .string(String(revision))
                    guard thenRemove else { return written }
                    return try await removeReleased(key, written, at: revision)
                case .failed(let now):
                    current = now
                }
            case .remove:
                switch try await backend.delete(key, ifRevision: stored.revision) {
                case .swapped(let revision):
                    var deleted = existing
                    deleted["metadata"]?["resourceVersion"] = .string(String(revision))
                    return deleted
                case .failed(let now):
                    current = now
                }
            }
        }
    }

    /// Deletes an object whose deletion was requested once its last finalizer is gone (written at `revision`), as
    /// Kubernetes does: watchers see it MODIFIED without finalizers, then DELETED. Returns the object as it went.
    private func removeReleased(_ key: String, _ released: JSONValue, at revision: Int64) async throws(APIError)
        -> JSONValue
    {
        var object = released
        var expected = revision
        while true {
            switch try await backend.delete(key, ifRevision: expected) {
            case .swapped(let deletion):
                object["metadata"]?["resourceVersion"] = .string(String(deletion))
                return object
            case .failed(let now):
                // Gone already (another writer removed it), or changed: deleted only while it still waits for nothing.
                guard let now, let current = ObjectEncoding.decode(now.value, revision: now.revision) else {
                    return object
                }
                guard current["metadata"]?["deletionTimestamp"] != nil,
                    (current["metadata"]?["finalizers"]?.array ?? []).isEmpty
                else {
                    return current
                }
                object = current
                expected = now.revision
            }
        }
    }

    /// A replace of the main resource or of status, keeping what the system owns.
    static func replace(_ kind: ResourceKind, existing: JSONValue, with incoming: JSONValue, subresource: Subresource)
        throws(APIError) -> Decision
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
            for owned in [
                "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace",
                "generation",
            ] {
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
            return .keep  // nothing changed: no new version, no event
        }
        // Deletion was requested and the last finalizer is gone: the object goes now.
        let released =
            result["metadata"]?["deletionTimestamp"] != nil && (result["metadata"]?["finalizers"]?.array ?? []).isEmpty
        return .write(result, thenRemove: released)
    }

    // MARK: Checks and errors

    static func checkIdentity(_ kind: ResourceKind, _ object: JSONValue) throws(APIError) {
        guard case .object = object else { throw APIError.badRequest("the body must be a JSON object") }
        if let apiVersion = object["apiVersion"]?.string, apiVersion != kind.apiVersion {
            throw APIError.badRequest(
                "the body's apiVersion \"\(apiVersion)\" does not match the path's \"\(kind.apiVersion)\"")
        }
        if let name = object["kind"]?.string, name != kind.kind {
            throw APIError.badRequest("the body's kind \"\(name)\" does not match the path's \"\(kind.kind)\"")
        }
    }

    static func checkName(_ kind: ResourceKind, _ name: String) throws(APIError) {
        guard isSubdomain(name) else {
            throw APIError(
                .invalid, code: 422,
                "\(kind.kind) \"\(name)\" is invalid: metadata.name: Invalid value: \"\(name)\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            )
        }
    }

    /// A namespace is part of the object's key: one that could run into another key's prefix (a `/`) is refused.
    static func checkNamespace(_ kind: ResourceKind, _ name: String, _ namespace: String) throws(APIError) {
        guard isSubdomain(namespace) else {
            throw APIError(
                .invalid, code: 422,
                "\(kind.kind) \"\(name)\" is invalid: metadata.namespace: Invalid value: \"\(namespace)\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            )
        }
    }

    static func isSubdomain(_ text: String) -> Bool {
        text.count <= 253 && !text.isEmpty
            && text.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "."
            }
            && text.first != "-" && text.last != "-"
    }

    static func notFound(_ kind: ResourceKind, _ name: String) -> APIError {
        APIError(
            .notFound, code: 404, "\(kind.resource) \"\(name)\" not found",
            details: .init(name: name, group: kind.group, kind: kind.plural))
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
