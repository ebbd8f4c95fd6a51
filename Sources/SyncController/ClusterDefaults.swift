public import ClusterAPI

/// Objects every cluster has from the start.
public enum ClusterDefaults {
    /// The namespace of the KubeVirt configuration object.
    public static let namespace = "kubevirt"
    /// Its name.
    public static let name = "kubevirt"

    /// KubeVirt's migration defaults (completionTimeoutPerGiB 150, progressTimeout 150, 5 per cluster, 2 outbound per
    /// node, bandwidth unlimited (0), no auto-converge, no post-copy).
    public static let kubeVirt: JSONValue = [
        "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": ["name": .string(name), "namespace": .string(namespace)],
        "spec": [
            "configuration": [
                "migrations": [
                    "bandwidthPerMigration": "0Mi", "completionTimeoutPerGiB": 150, "progressTimeout": 150,
                    "parallelMigrationsPerCluster": 5, "parallelOutboundMigrationsPerNode": 2, "allowAutoConverge": false,
                    "allowPostCopy": false,
                ],
                "developerConfiguration": ["featureGates": ["DecentralizedLiveMigration"]],
            ]
        ],
    ]

    /// Creates the KubeVirt configuration object if it is missing (an existing one is left as the operator set it).
    public static func ensure(in store: any ResourceStore) async throws(APIError) {
        do {
            _ = try await store.get(Kinds.kubeVirt, namespace: namespace, name: name)
        } catch where error.code == 404 {
            _ = try await store.create(Kinds.kubeVirt, kubeVirt)
        }
    }
}
