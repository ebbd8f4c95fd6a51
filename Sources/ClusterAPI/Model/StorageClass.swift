/// A StorageClass: here, a directory every node has (shared by all of them, or local to each).
public struct StorageClass: Resource {
    public static let kind = Kinds.storageClass

    public var apiVersion: String? = "storage.k8s.io/v1"
    public var kind: String? = "StorageClass"
    public var metadata: ObjectMeta
    public var provisioner: String?
    /// vmsync: the directory on every node that holds the class's images.
    public var directory: String?
    /// vmsync: whether all nodes see the same directory.
    public var shared: Bool?

    /// Whether the class is annotated as the default one.
    public var isDefault: Bool { metadata.annotations?[Resources.defaultClassAnnotation] == "true" }
}
