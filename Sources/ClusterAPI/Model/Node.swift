/// A Node: one host with a node agent and libvirt.
public struct Node: Resource {
    public static let kind = Kinds.node

    public var apiVersion: String? = "v1"
    public var kind: String? = "Node"
    public var metadata: ObjectMeta
    public var spec: Spec?
    public var status: Status?

    public init(metadata: ObjectMeta) {
        self.metadata = metadata
    }

    public struct Spec: Codable, Sendable, Hashable {
        public var taints: [Taint]?
        public var unschedulable: Bool?
    }

    /// A taint: VMIs that do not tolerate it are not placed here.
    public struct Taint: Codable, Sendable, Hashable {
        public var key: String
        public var value: String?
        public var effect: String
    }

    public struct Status: Codable, Sendable, Hashable {
        public var conditions: [Condition]?
        public var printableStatus: String?
        /// Quantities kept as written.
        public var allocatable: [String: JSONValue]?
        public var capacity: [String: JSONValue]?
        /// vmsync: where the node's agent accepts migration tunnels.
        public var tunnelEndpoint: String?
        public var addresses: [Address]?
        /// What the node runs, as written.
        public var nodeInfo: JSONValue?
        /// vmsync: the agent's libvirt and where its guests' run files are (a migration's destination XML uses it).
        public var libvirtURI: String?
        public var runDirectory: String?

        public init() {}
    }

    /// One of the node's addresses (`InternalIP`, `Hostname`).
    public struct Address: Codable, Sendable, Hashable {
        public var type: String?
        public var address: String?

        public init(type: String, address: String) {
            self.type = type
            self.address = address
        }
    }

    public var name: String { metadata.name ?? "" }
    public var labels: [String: String] { metadata.labels ?? [:] }

    /// Memory the node offers VMIs, in bytes.
    public var allocatableMemory: UInt64 { Quantity(status?.allocatable?["memory"])?.bytes ?? 0 }

    /// Whether the node is tainted for a drain (seed 000's batch migration).
    public var isDraining: Bool {
        (spec?.taints ?? []).contains {
            $0.key == Resources.drainTaintKey && ["NoSchedule", "NoExecute"].contains($0.effect)
        }
    }
}
