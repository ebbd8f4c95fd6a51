/// Kubernetes' `metadata` of every object.
public struct ObjectMeta: Codable, Sendable, Hashable {
    public var name: String?
    public var generateName: String?
    public var namespace: String?
    public var uid: String?
    public var resourceVersion: String?
    public var generation: Int64?
    public var creationTimestamp: String?
    public var deletionTimestamp: String?
    public var labels: [String: String]?
    public var annotations: [String: String]?
    public var finalizers: [String]?
    public var ownerReferences: [OwnerReference]?

    public init(name: String? = nil, namespace: String? = nil, labels: [String: String]? = nil) {
        self.name = name
        self.namespace = namespace
        self.labels = labels
    }

    /// Whether the object is being deleted (waiting for its finalizers).
    public var isDeleting: Bool { deletionTimestamp != nil }

    /// Whether `finalizer` is among the object's finalizers.
    public func has(finalizer: String) -> Bool { finalizers?.contains(finalizer) ?? false }

    /// Adds `finalizer` if it is missing.
    public mutating func add(finalizer: String) {
        if !has(finalizer: finalizer) { finalizers = (finalizers ?? []) + [finalizer] }
    }

    /// Removes `finalizer`.
    public mutating func remove(finalizer: String) {
        finalizers = finalizers?.filter { $0 != finalizer }
    }
}

/// One entry of `metadata.ownerReferences`.
public struct OwnerReference: Codable, Sendable, Hashable {
    public var apiVersion: String
    public var kind: String
    public var name: String
    public var uid: String
    public var controller: Bool?
    public var blockOwnerDeletion: Bool?

    public init(
        apiVersion: String, kind: String, name: String, uid: String, controller: Bool? = true,
        blockOwnerDeletion: Bool? = true
    ) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.name = name
        self.uid = uid
        self.controller = controller
        self.blockOwnerDeletion = blockOwnerDeletion
    }
}
