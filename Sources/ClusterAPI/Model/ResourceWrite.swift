extension Resource {
    /// Writes what differs between `self` and `changed` in the fields the typed view models — the main resource,
    /// then `/status`, each only when it changed — through `patch` (a merge patch, and whether it goes to `/status`).
    /// The one rule every writer of typed objects follows (the controller's reconcilers through the store, the node
    /// agents through the API): a merge patch writes an array whole (conditions, finalizers, volume lists), so written
    /// over another writer's newer version it would undo that writer's entries — such a write, and any write asked to
    /// be `guarded`, carries the resourceVersion it was computed from and is refused (409) when the object changed
    /// since. Returns the object as last stored, nil when nothing changed.
    public func write(
        _ changed: Self, guarded: Bool = false,
        through patch: (_ patch: JSONValue, _ status: Bool) async throws(APIError) -> JSONValue
    ) async throws(APIError) -> JSONValue? {
        let (main, status) = self.patch(to: changed)
        let guarded = guarded || [main, status].contains { $0.map(Self.holdsArray) ?? false }
        var version = guarded ? metadata.resourceVersion : nil
        var stored: JSONValue?
        for (body, isStatus) in [(main, false), (status, true)] {
            guard var body else { continue }
            if let version {
                var metadata = body["metadata"] ?? [:]
                metadata["resourceVersion"] = .string(version)
                body["metadata"] = metadata
            }
            let result = try await patch(body, isStatus)
            stored = result
            // The status write follows the main one: it is guarded by the version that write produced.
            if guarded { version = result["metadata"]?["resourceVersion"]?.string }
        }
        return stored
    }

    /// Whether `value` is or contains an array.
    static func holdsArray(_ value: JSONValue) -> Bool {
        switch value {
        case .array: true
        case .object(let members): members.values.contains(where: holdsArray)
        default: false
        }
    }
}
