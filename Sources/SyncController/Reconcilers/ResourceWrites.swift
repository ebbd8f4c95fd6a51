import ClusterAPI
import ControllerRuntime

extension ResourceStore {
    /// Writes what differs between `original` and `changed` in the fields the typed view models — the main resource,
    /// then `/status`, each only when it changed — and hands the stored result to `cache` so the next reconcile reads
    /// its own write. With `guarded`, the write carries `original`'s resourceVersion and is refused (409) when
    /// somebody else changed the object since it was read. Returns the object as stored (`original` when nothing
    /// changed).
    @discardableResult
    func write<R: Resource>(_ changed: R, from original: R, guarded: Bool = false, cache: Cache<R>? = nil) async throws(APIError) -> R {
        let (main, status) = original.patch(to: changed)
        // A merge patch writes an array whole (conditions, finalizers): written over another writer's newer version,
        // it would undo that writer's entries. Such a write lands only on the version it was computed from.
        let guarded = guarded || [main, status].contains { $0.map(Self.holdsArray) ?? false }
        var version = guarded ? original.metadata.resourceVersion : nil
        var stored: JSONValue?
        for (patch, subresource) in [(main, Subresource.main), (status, Subresource.status)] {
            guard var patch else { continue }
            if let version {
                var metadata = patch["metadata"] ?? [:]
                metadata["resourceVersion"] = .string(version)
                patch["metadata"] = metadata
            }
            let result = try await self.patch(R.kind, namespace: original.key.namespace, name: original.key.name, mergePatch: patch, subresource: subresource)
            cache?.record(written: result)
            stored = result
            if guarded { version = result["metadata"]?["resourceVersion"]?.string }
        }
        guard let stored else { return original }
        return try R(json: stored)
    }

    /// Whether `value` is or contains an array.
    static func holdsArray(_ value: JSONValue) -> Bool {
        switch value {
        case .array: true
        case .object(let members): members.values.contains(where: holdsArray)
        default: false
        }
    }

    /// Creates `object` and hands the stored result to `cache`.
    @discardableResult
    func create<R: Resource>(_ object: JSONValue, as type: R.Type, cache: Cache<R>? = nil) async throws(APIError) -> R {
        let stored = try await create(R.kind, object)
        cache?.record(written: stored)
        return try R(json: stored)
    }
}
