/// The KubeVirt configuration object (`kubevirt/kubevirt`), its defaults in one place.
public struct KubeVirt: Resource {
    public static let kind = Kinds.kubeVirt
    /// Where the one configuration object lives.
    public static let namespace = "kubevirt"
    public static let name = "kubevirt"

    public var apiVersion: String? = "kubevirt.io/v1"
    public var kind: String? = "KubeVirt"
    public var metadata: ObjectMeta
    public var spec: Spec

    public init() {
        metadata = ObjectMeta(name: Self.name, namespace: Self.namespace)
        spec = Spec(
            configuration: Configuration(
                migrations: .defaults, developerConfiguration: .init(featureGates: ["DecentralizedLiveMigration"])))
    }

    public struct Spec: Codable, Sendable, Hashable {
        public var configuration: Configuration?
    }

    public struct Configuration: Codable, Sendable, Hashable {
        public var migrations: Migrations?
        public var cpuModel: String?
        public var developerConfiguration: DeveloperConfiguration?
        public var evictionStrategy: String?
        /// vmsync: where the peer clusters' source nodes send this cluster's incoming decentralized migrations
        /// (host:port of the sync controller's `--gateway-listen`): one port per cluster instead of every node
        /// routable. Unset: the source nodes dial the target node directly.
        public var crossClusterGateway: String?

        public init(migrations: Migrations? = nil, developerConfiguration: DeveloperConfiguration? = nil) {
            self.migrations = migrations
            self.developerConfiguration = developerConfiguration
        }
    }

    public struct DeveloperConfiguration: Codable, Sendable, Hashable {
        public var featureGates: [String]?
    }

    /// `spec.configuration.migrations`; every field optional, the defaults below apply where it is absent.
    public struct Migrations: Codable, Sendable, Hashable {
        public var bandwidthPerMigration: JSONValue?
        public var completionTimeoutPerGiB: Int64?
        public var progressTimeout: Int64?
        public var parallelMigrationsPerCluster: Int64?
        public var parallelOutboundMigrationsPerNode: Int64?
        public var allowAutoConverge: Bool?
        public var allowPostCopy: Bool?
        /// vmsync: how long a migration may wait for a fitting target.
        public var unschedulableTimeoutSeconds: Int64?
        /// vmsync: how long the target may take to get ready.
        public var targetReadyTimeoutSeconds: Int64?
        public var maxDowntimeMilliseconds: Int64?
        public var initialDowntimeMilliseconds: Int64?
        public var parallelMigrationConnections: Int64?
        public var allowUnsafeLiveMemoryCopy: Bool?

        /// KubeVirt's defaults: completionTimeoutPerGiB 150, progressTimeout 150, 5 per cluster, 2 outbound per node,
        /// bandwidth unlimited (0), no auto-converge, no post-copy.
        public static let defaults = Migrations(
            bandwidthPerMigration: "0Mi", completionTimeoutPerGiB: 150, progressTimeout: 150,
            parallelMigrationsPerCluster: 5,
            parallelOutboundMigrationsPerNode: 2, allowAutoConverge: false, allowPostCopy: false)

        public init(
            bandwidthPerMigration: JSONValue? = nil, completionTimeoutPerGiB: Int64? = nil,
            progressTimeout: Int64? = nil,
            parallelMigrationsPerCluster: Int64? = nil, parallelOutboundMigrationsPerNode: Int64? = nil,
            allowAutoConverge: Bool? = nil, allowPostCopy: Bool? = nil
        ) {
            self.bandwidthPerMigration = bandwidthPerMigration
            self.completionTimeoutPerGiB = completionTimeoutPerGiB
            self.progressTimeout = progressTimeout
            self.parallelMigrationsPerCluster = parallelMigrationsPerCluster
            self.parallelOutboundMigrationsPerNode = parallelOutboundMigrationsPerNode
            self.allowAutoConverge = allowAutoConverge
            self.allowPostCopy = allowPostCopy
        }

        /// At most this many migrations run in the cluster at once.
        public var parallelPerCluster: Int { Int(max(1, parallelMigrationsPerCluster ?? 5)) }
        /// At most this many migrations leave one node at once.
        public var parallelOutboundPerNode: Int { Int(max(1, parallelOutboundMigrationsPerNode ?? 2)) }
        /// How long a migration may wait for a target node to fit before it fails.
        public var unschedulableTimeout: Double { Double(unschedulableTimeoutSeconds ?? 300) }
        /// How long the target may take to get ready.
        public var prepareTimeout: Double { Double(targetReadyTimeoutSeconds ?? 120) }
    }

    /// The migration settings in force.
    public var migrations: Migrations { spec.configuration?.migrations ?? Migrations() }

    /// Whether `gate` is enabled in `developerConfiguration.featureGates`.
    public func isEnabled(_ gate: String) -> Bool {
        spec.configuration?.developerConfiguration?.featureGates?.contains(gate) ?? false
    }
}
