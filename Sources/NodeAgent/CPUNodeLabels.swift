public import ClusterAPI
public import Hypervisor

extension CPUCapabilities {
    /// KubeVirt's CPU node labels for what this node's hypervisor offers (`CPULabels`).
    public func nodeLabels(obsoleteModels: Set<String> = CPULabels.obsoleteModels) -> [String: String] {
        CPULabels.labels(
            hostModel: hostModel, requiredFeatures: hostModelRequiredFeatures, features: hostModelFeatures,
            usableModels: usableModels, obsoleteModels: obsoleteModels)
    }
}

extension DomainSpec.CPUMode {
    /// The libvirt CPU mode for what a VMI asks for.
    public init(_ requirement: CPURequirement) {
        switch requirement {
        case .hostModel: self = .hostModel
        case .hostPassthrough: self = .hostPassthrough
        case .model(let model): self = .custom(model: model)
        }
    }
}
