/// A ConfigMap (`v1`): string data by key. vmsync's own: `kubevirt-ca` and `kubevirt-external-ca` in the `kubevirt`
/// namespace (key `ca-bundle`).
public struct ConfigMap: Resource {
    public static let kind = Kinds.configMap

    public var apiVersion: String? = "v1"
    public var kind: String? = "ConfigMap"
    public var metadata: ObjectMeta
    public var data: [String: String]?

    public init(metadata: ObjectMeta, data: [String: String]? = nil) {
        self.metadata = metadata
        self.data = data
    }

    /// The namespace of the CA ConfigMaps (KubeVirt's install namespace).
    public static let caNamespace = "kubevirt"
    /// The cluster's trust bundle, kept by the controller: its own CAs and those merged from other clusters.
    public static let caBundleName = "kubevirt-ca"
    /// The inbox: another cluster's `kubevirt-ca` bundle pasted here is merged into `kubevirt-ca` and cleared.
    public static let externalCABundleName = "kubevirt-external-ca"
    /// The key both keep their PEM under.
    public static let caBundleKey = "ca-bundle"
    /// vmsync: on `kubevirt-external-ca`, what the last merge did with each certificate (one line each).
    public static let mergeResultAnnotation = "vmsync.io/last-merge"
}
