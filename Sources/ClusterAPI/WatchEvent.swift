public import Foundation

/// One change of one object, as watches deliver it.
public struct WatchEvent: Sendable, Hashable {
    /// Kubernetes' watch event types.
    public enum Kind: String, Sendable, Hashable {
        case added = "ADDED"
        case modified = "MODIFIED"
        case deleted = "DELETED"
    }

    public var type: Kind
    /// The object after the change (for DELETED: as it was deleted).
    public var object: JSONValue
    /// The change's resource version.
    public var resourceVersion: Int64

    /// The watch stream line: `{"type": …, "object": …}`.
    public var json: JSONValue { ["type": .string(type.rawValue), "object": object] }

    /// The line as sent to watchers, newline included; encoded once per change however many watch it.
    public var line: Data {
        if let encoded { return encoded }
        return json.jsonData() + Data("\n".utf8)
    }
    /// The line, when the store encoded it once for all its watchers.
    public var encoded: Data?

    public init(type: Kind, object: JSONValue, resourceVersion: Int64) {
        self.type = type
        self.object = object
        self.resourceVersion = resourceVersion
    }
}

/// Which objects a list or watch covers.
public struct Selection: Sendable, Hashable {
    /// The namespace, or nil for all (and for cluster-scoped kinds).
    public var namespace: String?
    public var labels: LabelSelector?
    public var fields: FieldSelector?

    public init(namespace: String? = nil, labels: LabelSelector? = nil, fields: FieldSelector? = nil) {
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
    }

    /// Whether `object` is among the selected ones (the namespace is checked by whoever holds the objects).
    public func matches(_ object: JSONValue) -> Bool {
        if let labels, !labels.matches(object["metadata"]?["labels"]?.stringMap ?? [:]) { return false }
        if let fields, !fields.matches(object) { return false }
        return true
    }
}
