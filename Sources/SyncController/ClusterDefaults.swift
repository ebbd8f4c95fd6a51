public import ClusterAPI

/// Objects every cluster has from the start.
public enum ClusterDefaults {
    /// The namespace of the KubeVirt configuration object.
    public static let namespace = KubeVirt.namespace
    /// Its name.
    public static let name = KubeVirt.name

    /// The configuration object a new cluster gets: KubeVirt's migration defaults (`KubeVirt.Migrations.defaults`)
    /// and the DecentralizedLiveMigration gate.
    public static let kubeVirt: JSONValue = KubeVirt().json

    /// Creates the KubeVirt configuration object if it is missing (an existing one is left as the operator set it).
    public static func ensure(in store: any ResourceStore) async throws(APIError) {
        do {
            _ = try await store.get(Kinds.kubeVirt, namespace: namespace, name: name)
        } catch  where error.code == 404 {
            _ = try await store.create(Kinds.kubeVirt, kubeVirt)
        }
    }

    /// Publishes where this cluster's sync endpoint is reached in the KubeVirt object's
    /// `status.synchronizationAddresses` (KubeVirt's field; an empty list when the endpoint is off).
    public static func publish(synchronizationAddresses addresses: [String], in store: any ResourceStore)
        async throws(APIError)
    {
        try await ensure(in: store)
        _ = try await store.patch(
            Kinds.kubeVirt, namespace: namespace, name: name,
            mergePatch: ["status": ["synchronizationAddresses": .array(addresses.map { .string($0) })]],
            subresource: .status)
    }
}
