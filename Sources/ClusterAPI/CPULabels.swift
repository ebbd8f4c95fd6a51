/// KubeVirt's CPU node labels — what its node labeller writes on each node from what the node's hypervisor offers —
/// and the obsolete models that get none. The cluster's CPU policy lives here, apart from the hypervisor surface,
/// which only reports what a node offers.
public enum CPULabels {
    /// `cpu-model.node.kubevirt.io/<model>`: a VM asking for this named model can run here.
    public static let model = "cpu-model.node.kubevirt.io/"
    /// `host-model-cpu.node.kubevirt.io/<model>`: what host-model means on this node.
    public static let hostModel = "host-model-cpu.node.kubevirt.io/"
    /// `cpu-model-migration.node.kubevirt.io/<model>`: a host-model VM started where host-model meant `<model>` can
    /// migrate here.
    public static let migration = "cpu-model-migration.node.kubevirt.io/"
    /// `host-model-required-features.node.kubevirt.io/<feature>`: features host-model requires on this node; a
    /// host-model guest started here needs them wherever it migrates.
    public static let requiredFeature = "host-model-required-features.node.kubevirt.io/"
    /// `cpu-feature.node.kubevirt.io/<feature>`: features this node's host-model CPU has.
    public static let feature = "cpu-feature.node.kubevirt.io/"

    /// KubeVirt's default list of obsolete models, which get no `cpu-model` label.
    public static let obsoleteModels: Set<String> = [
        "486", "pentium", "pentium2", "pentium3", "pentiumpro", "coreduo", "n270", "core2duo", "Conroe", "athlon",
        "phenom", "qemu64", "qemu32", "kvm64", "kvm32",
    ]

    /// The node labels (all "true"): usable non-obsolete models, the host model, the models a host-model VM may come
    /// from, host-model's required features and every feature it gives a guest.
    public static func labels(
        hostModel: String?, requiredFeatures: [String], features: [String], usableModels: [String],
        obsoleteModels: Set<String> = obsoleteModels
    ) -> [String: String] {
        var labels: [String: String] = [:]
        for model in usableModels where !obsoleteModels.contains(model) {
            labels[Self.model + model] = "true"
            labels[migration + model] = "true"
        }
        if let hostModel {
            labels[Self.hostModel + hostModel] = "true"
            labels[migration + hostModel] = "true"
            for feature in requiredFeatures { labels[requiredFeature + feature] = "true" }
            for feature in features { labels[Self.feature + feature] = "true" }
        }
        return labels
    }
}

/// The CPU a VMI asks for, in KubeVirt's spelling, and whether a node's labels satisfy it.
public enum CPURequirement: Sendable, Hashable {
    /// libvirt's host-model: the host CPU's model and features, migratable between alike hosts.
    case hostModel
    /// The host CPU passed through as is.
    case hostPassthrough
    /// A named model (e.g. "Westmere").
    case model(String)

    /// "host-model", "host-passthrough", or a model name.
    public init(kubeVirtModel model: String) {
        switch model {
        case "host-model": self = .hostModel
        case "host-passthrough": self = .hostPassthrough
        default: self = .model(model)
        }
    }

    /// Why a VM with this CPU cannot start on a node with `labels`, or nil if it can.
    public func unsatisfied(toRunOn labels: [String: String]) -> String? {
        switch self {
        case .model(let model):
            labels[CPULabels.model + model] == "true"
                ? nil : "CPU model \"\(model)\" is not usable on the node (no label \(CPULabels.model + model))"
        case .hostModel:
            labels.keys.contains { $0.hasPrefix(CPULabels.hostModel) }
                ? nil : "the node offers no host-model CPU (no \(CPULabels.hostModel)* label)"
        case .hostPassthrough:
            labels.keys.contains { $0.hasPrefix(CPULabels.hostModel) }
                ? nil : "the node offers no host CPU to pass through"
        }
    }

    /// Why a VM with this CPU, running on a node with `sourceLabels`, cannot migrate to a node with `labels`.
    public func unsatisfied(toMigrateFrom sourceLabels: [String: String], to labels: [String: String]) -> String? {
        switch self {
        case .model:
            return unsatisfied(toRunOn: labels)
        case .hostModel, .hostPassthrough:
            guard let source = sourceLabels.keys.first(where: { $0.hasPrefix(CPULabels.hostModel) }) else {
                return "the source node does not say what its host model is"
            }
            let model = String(source.dropFirst(CPULabels.hostModel.count))
            if self == .hostPassthrough, labels[source] != "true" {
                return "host-passthrough needs the same host CPU: the target's host model is not \"\(model)\""
            }
            guard labels[CPULabels.migration + model] == "true" else {
                return
                    "the target cannot take a host-model \"\(model)\" guest (no label \(CPULabels.migration + model))"
            }
            let required = sourceLabels.keys.filter { $0.hasPrefix(CPULabels.requiredFeature) }
                .map { String($0.dropFirst(CPULabels.requiredFeature.count)) }
            if let feature = required.sorted().first(where: { labels[CPULabels.feature + $0] != "true" }) {
                return "the target's CPU lacks feature \"\(feature)\" that host-model gave the guest"
            }
            return nil
        }
    }
}
