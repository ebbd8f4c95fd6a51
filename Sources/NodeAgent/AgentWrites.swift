import ClusterAPI
import ClusterClient

/// The agent's typed reads and writes through the cluster API. Writes follow `Resource.write`'s rule, as the
/// controller's do: only the modelled fields that changed are written, and a write that replaces an array (conditions,
/// the phase history, volume and interface lists) lands only on the version it was computed from.
extension APIClient {
    /// The object `name` (in `namespace` for namespaced kinds) as its typed view.
    func get<R: Resource>(_ type: R.Type, namespace: String? = nil, name: String) async throws(APIError) -> R {
        try R(json: try await get(R.kind, namespace: R.kind.namespaced ? namespace ?? "default" : nil, name: name))
    }

    /// Every object of the kind that reads as its typed view.
    func list<R: Resource>(_ type: R.Type) async throws(APIError) -> [R] {
        ((try? await list(R.kind).decode(ObjectList.self))?.items ?? []).compactMap { try? R(json: $0) }
    }

    /// Creates `object`; returns it as stored.
    func create<R: Resource>(_ object: R) async throws(APIError) -> R {
        try R(json: try await create(R.kind, object.json))
    }

    /// Writes what differs between `original` and `changed` (`Resource.write`); returns the object as stored
    /// (`original` when nothing changed).
    @discardableResult
    func write<R: Resource>(_ changed: R, from original: R, guarded: Bool = false) async throws(APIError) -> R {
        let stored = try await original.write(changed, guarded: guarded) {
            (patch, status) async throws(APIError) -> JSONValue in
            try await self.patch(
                R.kind, namespace: original.key.namespace, name: original.key.name, patch, status: status)
        }
        guard let stored else { return original }
        return try R(json: stored)
    }

    /// Applies `change` to `object` and writes the difference; when the write is refused because the object changed
    /// meanwhile (409: a guarded write, see `write`), reads it again and applies `change` anew, up to `attempts`
    /// times. `change` may throw to stop (the object moved on so that the change no longer applies).
    @discardableResult
    func update<R: Resource>(
        _ object: R, guarded: Bool = false, attempts: Int = 5, isolation: isolated (any Actor)? = #isolation,
        _ change: (inout R) throws(APIError) -> Void
    ) async throws(APIError) -> R {
        var current = object
        for _ in 0..<attempts {
            var changed = current
            try change(&changed)
            do {
                return try await write(changed, from: current, guarded: guarded)
            } catch  where error.code == 409 {
                current = try await get(R.self, namespace: object.key.namespace, name: object.key.name)
            }
        }
        throw APIError.conflict("\(R.kind.singular) \(object.key) kept changing; not written")
    }

    /// Sets the fields `value` holds at `path` (a status, or part of one) to what they say, whatever the object holds
    /// there now: the merge patch of just those fields, with no precondition — for facts the agent reports after the
    /// event (where the guest runs, the job's figures) that must land over whatever the object says meanwhile.
    @discardableResult
    func set<R: Resource, Value>(_ path: WritableKeyPath<R, Value?>, of object: R, to value: Value)
        async throws(APIError) -> R
    {
        var base = object
        base[keyPath: path] = nil
        var changed = object
        changed[keyPath: path] = value
        return try await write(changed, from: base)
    }
}
