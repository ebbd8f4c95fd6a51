/// KubeVirt's VirtualMachine: the stateful object whose run strategy decides whether a VMI exists.
public struct VirtualMachine: Resource {
    public static let kind = Kinds.virtualMachine

    /// `spec.runStrategy`.
    public enum RunStrategy: String, LenientStringEnum {
        case always = "Always"
        case rerunOnFailure = "RerunOnFailure"
        case once = "Once"
        case halted = "Halted"
        case manual = "Manual"
        /// The receiving side of a decentralized migration.
        case waitAsReceiver = "WaitAsReceiver"
        public static let fallback = RunStrategy.manual
    }

    public var apiVersion: String? = "kubevirt.io/v1"
    public var kind: String? = "VirtualMachine"
    public var metadata: ObjectMeta
    public var spec: Spec
    public var status: Status?

    public struct Spec: Codable, Sendable, Hashable {
        public var runStrategy: RunStrategy?
        /// The deprecated boolean form of the run strategy.
        public var running: Bool?
        public var template: Template?
    }

    /// `spec.template`.
    public struct Template: Codable, Sendable, Hashable {
        public var metadata: ObjectMeta?
        public var spec: VirtualMachineInstanceSpec?
    }

    public struct Status: Codable, Sendable, Hashable {
        public var printableStatus: String?
        public var ready: Bool?
        public var created: Bool?
        public var startedOnce: Bool?
        public var conditions: [Condition]?

        public init() {}
    }

    /// The run strategy in force: `runStrategy`, else the one `running` stands for.
    public var runStrategy: RunStrategy { spec.runStrategy ?? ((spec.running ?? false) ? .always : .halted) }
}
