/// CDI's DataVolume: a disk image for VMs, here a qcow2 file in its StorageClass's directory.
public struct DataVolume: Resource {
    public static let kind = Kinds.dataVolume

    public var apiVersion: String? = "cdi.kubevirt.io/v1beta1"
    public var kind: String? = "DataVolume"
    public var metadata: ObjectMeta
    public var spec: Spec
    public var status: Status?

    public struct Spec: Codable, Sendable, Hashable {
        public var source: Source?
        public var storage: Storage?
        /// The older form of `storage`.
        public var pvc: Storage?
    }

    /// `spec.source`: only which kind of source matters here; its details travel in the envelope.
    public struct Source: Codable, Sendable, Hashable {
        public var blank: JSONValue?
        public var http: HTTPSource?
        public var pvc: JSONValue?
        public var registry: JSONValue?
        public var upload: JSONValue?
    }

    /// `source.http`: here, an image file (`file:///…`) under an import directory.
    public struct HTTPSource: Codable, Sendable, Hashable {
        public var url: String?
    }

    public struct Storage: Codable, Sendable, Hashable {
        public var storageClassName: String?
        public var accessModes: [String]?
        public var resources: Resources?

        /// Quantities kept as written.
        public struct Resources: Codable, Sendable, Hashable {
            public var requests: [String: JSONValue]?
            public var limits: [String: JSONValue]?
        }

        /// The size asked for (`resources.requests.storage`), in bytes; 0 when it says none.
        public var requestedBytes: UInt64 { Quantity(resources?.requests?["storage"])?.bytes ?? 0 }
    }

    public struct Status: Codable, Sendable, Hashable {
        public var phase: String?
        public var progress: String?
        /// vmsync: the node a local (non-shared) image is on.
        public var nodeName: String?
        /// vmsync: where the image is, from its StorageClass.
        public var path: String?

        public init() {}
    }

    /// `storage`, else `pvc`.
    public var storage: Storage? { spec.storage ?? spec.pvc }

    /// The StorageClass the DataVolume uses: the one it names, else the default one (annotated, or the only one).
    public func storageClass(in classes: [StorageClass]) -> StorageClass? {
        if let name = storage?.storageClassName { return classes.first { $0.metadata.name == name } }
        return classes.first(where: \.isDefault) ?? (classes.count == 1 ? classes.first : nil)
    }
}
