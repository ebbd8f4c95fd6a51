/// A list answer (`…List`): its objects, kept as the envelopes they are, and the resourceVersion it was read at.
public struct ObjectList: Codable, Sendable, Hashable {
    public var items: [JSONValue]?
    public var metadata: ListMeta?

    /// `metadata` of a list.
    public struct ListMeta: Codable, Sendable, Hashable {
        public var resourceVersion: String?
        public var `continue`: String?
    }

    /// The version the list was read at (0 when it says none).
    public var resourceVersion: Int64 { Int64(metadata?.resourceVersion ?? "") ?? 0 }
}

/// What every object carries whatever its kind: read from an envelope without knowing the kind.
public struct ObjectHeader: Codable, Sendable, Hashable {
    public var apiVersion: String?
    public var kind: String?
    public var metadata: ObjectMeta?

    /// The object's resourceVersion (0 when it says none or is no object).
    public static func resourceVersion(of object: JSONValue) -> Int64 {
        Int64((try? object.decode(ObjectHeader.self))?.metadata?.resourceVersion ?? "") ?? 0
    }
}
