import ClusterAPI
import ControllerRuntime

extension ResourceStore {
    /// Writes what differs between `original` and `changed` in the fields the typed view models (`Resource.write`:
    /// the main resource, then `/status`; a write replacing an array, or a `guarded` one, lands only on `original`'s
    /// resourceVersion) and hands the stored result to `cache` so the next reconcile reads its own write. Returns the
    /// object as stored (`original` when nothing changed).
    @discardableResult
    func write<R: Resource>(_ changed: R, from original: R, guarded: Bool = false, cache: Cache<R>? = nil)
        async throws(APIError) -> R
    {
        let stored = try await original.write(changed, guarded: guarded) {
            (patch, status) async throws(APIError) -> JSONValue in
            let result = try await self.patch(
                R.kind, namespace: original.key.namespace, name: original.key.name, mergePatch: patch,
                subresource: status ? .status : .main)
            cache?.record(written: result)
            return result
        }
        guard let stored else { return original }
        return try R(json: stored)
    }

    /// Creates `object` and hands the stored result to `cache`.
    @discardableResult
    func create<R: Resource>(_ object: JSONValue, as type: R.Type, cache: Cache<R>? = nil) async throws(APIError) -> R {
        let stored = try await create(R.kind, object)
        cache?.record(written: stored)
        return try R(json: stored)
    }
}
