internal import CLibvirt
import Foundation

#if canImport(FoundationXML)
import FoundationXML
#endif

/// What a node's hypervisor offers for guest CPUs, read from libvirt's domain capabilities, and the KubeVirt node
/// labels derived from it.
public struct CPUCapabilities: Sendable, Hashable {
    /// The model libvirt's host-model resolves to on this node (e.g. "EPYC"), nil if host-model is unsupported.
    public var hostModel: String?
    /// Features host-model requires on top of `hostModel`.
    public var hostModelRequiredFeatures: [String]
    /// Every feature host-model gives a guest here (the model's own, expanded, plus the required ones); filled by
    /// `Connection.cpuCapabilities`.
    public var hostModelFeatures: [String] = []
    /// Whether host-passthrough is available (never under TCG).
    public var hostPassthroughSupported: Bool
    /// Named models this node can run.
    public var usableModels: [String]
    /// Named models it knows but cannot run here.
    public var unusableModels: [String]

    /// KubeVirt's default list of obsolete models, which get no `cpu-model` label.
    public static let kubeVirtObsoleteModels: Set<String> = [
        "486", "pentium", "pentium2", "pentium3", "pentiumpro", "coreduo", "n270", "core2duo", "Conroe", "athlon",
        "phenom", "qemu64", "qemu32", "kvm64", "kvm32",
    ]

    /// Label prefixes, as KubeVirt's node labeller writes them.
    public enum Label {
        /// `cpu-model.node.kubevirt.io/<model>`: a VM asking for this named model can run here.
        public static let model = "cpu-model.node.kubevirt.io/"
        /// `host-model-cpu.node.kubevirt.io/<model>`: what host-model means on this node.
        public static let hostModel = "host-model-cpu.node.kubevirt.io/"
        /// `cpu-model-migration.node.kubevirt.io/<model>`: a host-model VM started where host-model meant `<model>`
        /// can migrate here.
        public static let migration = "cpu-model-migration.node.kubevirt.io/"
        /// `host-model-required-features.node.kubevirt.io/<feature>`: features host-model requires on this node; a
        /// host-model guest started here needs them wherever it migrates.
        public static let requiredFeature = "host-model-required-features.node.kubevirt.io/"
        /// `cpu-feature.node.kubevirt.io/<feature>`: features this node's host-model CPU has.
        public static let feature = "cpu-feature.node.kubevirt.io/"
    }

    /// Parses `virConnectGetDomainCapabilities` output.
    public init(domainCapabilitiesXML xml: String) throws(HypervisorError) {
        // libxml2 recovers from truncated input and returns a partial tree; a complete document is required.
        let trimmed = xml.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.hasSuffix("</domainCapabilities>"), let document = try? XMLDocument(xmlString: trimmed),
            document.rootElement()?.name == "domainCapabilities"
        else {
            throw HypervisorError(.libvirt, "the domain capabilities are not a complete <domainCapabilities> document")
        }
        func nodes(_ path: String) -> [XMLElement] {
            ((try? document.nodes(forXPath: path)) ?? []).compactMap { $0 as? XMLElement }
        }
        let hostMode = nodes("/domainCapabilities/cpu/mode[@name='host-model'][@supported='yes']").first
        hostModel = hostMode?.elements(forName: "model").first?.stringValue
        hostModelRequiredFeatures = (hostMode?.elements(forName: "feature") ?? [])
            .filter { $0.attribute(forName: "policy")?.stringValue == "require" }
            .compactMap { $0.attribute(forName: "name")?.stringValue }
        hostPassthroughSupported = !nodes("/domainCapabilities/cpu/mode[@name='host-passthrough'][@supported='yes']").isEmpty
        let models = nodes("/domainCapabilities/cpu/mode[@name='custom'][@supported='yes']/model")
        usableModels = models.filter { $0.attribute(forName: "usable")?.stringValue == "yes" }.compactMap(\.stringValue)
        unusableModels = models.filter { $0.attribute(forName: "usable")?.stringValue == "no" }.compactMap(\.stringValue)
    }

    /// The node labels (all "true"): usable non-obsolete models, the host model, the models a host-model VM may
    /// come from, and host-model's required features.
    public func nodeLabels(obsoleteModels: Set<String> = kubeVirtObsoleteModels) -> [String: String] {
        var labels: [String: String] = [:]
        for model in usableModels where !obsoleteModels.contains(model) {
            labels[Label.model + model] = "true"
            labels[Label.migration + model] = "true"
        }
        if let hostModel {
            labels[Label.hostModel + hostModel] = "true"
            labels[Label.migration + hostModel] = "true"
            for feature in hostModelRequiredFeatures { labels[Label.requiredFeature + feature] = "true" }
            for feature in hostModelFeatures { labels[Label.feature + feature] = "true" }
        }
        return labels
    }
}

extension Connection {
    /// The CPU capabilities of this node for `virtType` guests ("qemu" = TCG, "kvm").
    public func cpuCapabilities(virtType: String = "qemu", arch: String = "x86_64", machine: String = "q35") async throws(HypervisorError)
        -> CPUCapabilities
    {
        let operation = "domain capabilities query on \(uri)"
        let xml = try await run(operation) { pointer throws(HypervisorError) -> String in
            guard let text = virConnectGetDomainCapabilities(pointer, nil, arch, machine, virtType, 0) else {
                throw HypervisorError.last(operation)
            }
            defer { free(text) }
            return String(cString: text)
        }
        var capabilities = try CPUCapabilities(domainCapabilitiesXML: xml)
        if let model = capabilities.hostModel {
            // Expanding the host-model CPU lists every feature it carries, not only those beyond the named model.
            let features = capabilities.hostModelRequiredFeatures.map { "<feature policy='require' name='\($0)'/>" }
            let cpu = "<cpu mode='custom' match='exact'><model>\(XML.escape(model))</model>\(features.joined())</cpu>"
            let expanded = try await run("expansion of host-model CPU \(model) on \(uri)") { pointer throws(HypervisorError) -> String in
                let text = cpu.withCString { cpuText -> UnsafeMutablePointer<CChar>? in
                    var list: [UnsafePointer<CChar>?] = [cpuText]
                    return virConnectBaselineHypervisorCPU(
                        pointer, nil, arch, machine, virtType, &list, 1, VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES.rawValue)
                }
                guard let text else { throw HypervisorError.last("expansion of host-model CPU \(model) on \(self.uri)") }
                defer { free(text) }
                return String(cString: text)
            }
            let document = try? XMLDocument(xmlString: expanded)
            capabilities.hostModelFeatures = ((try? document?.nodes(forXPath: "/cpu/feature[@policy='require']")) ?? [])
                .compactMap { ($0 as? XMLElement)?.attribute(forName: "name")?.stringValue }
        }
        return capabilities
    }
}

extension DomainSpec.CPUMode {
    /// KubeVirt's spelling: "host-model", "host-passthrough", or a model name.
    public init(kubeVirtModel model: String) {
        switch model {
        case "host-model": self = .hostModel
        case "host-passthrough": self = .hostPassthrough
        default: self = .custom(model: model)
        }
    }

    /// Why a VM with this CPU cannot start on a node with `labels`, or nil if it can.
    public func unsatisfied(toRunOn labels: [String: String]) -> String? {
        switch self {
        case .custom(let model, _):
            labels[CPUCapabilities.Label.model + model] == "true"
                ? nil : "CPU model \"\(model)\" is not usable on the node (no label \(CPUCapabilities.Label.model + model))"
        case .hostModel:
            labels.keys.contains { $0.hasPrefix(CPUCapabilities.Label.hostModel) }
                ? nil : "the node offers no host-model CPU (no \(CPUCapabilities.Label.hostModel)* label)"
        case .hostPassthrough:
            labels.keys.contains { $0.hasPrefix(CPUCapabilities.Label.hostModel) }
                ? nil : "the node offers no host CPU to pass through"
        }
    }

    /// Why a VM with this CPU, running on a node with `sourceLabels`, cannot migrate to a node with `labels`.
    public func unsatisfied(toMigrateFrom sourceLabels: [String: String], to labels: [String: String]) -> String? {
        switch self {
        case .custom:
            return unsatisfied(toRunOn: labels)
        case .hostModel, .hostPassthrough:
            guard let source = sourceLabels.keys.first(where: { $0.hasPrefix(CPUCapabilities.Label.hostModel) }) else {
                return "the source node does not say what its host model is"
            }
            let model = String(source.dropFirst(CPUCapabilities.Label.hostModel.count))
            if case .hostPassthrough = self, labels[source] != "true" {
                return "host-passthrough needs the same host CPU: the target's host model is not \"\(model)\""
            }
            guard labels[CPUCapabilities.Label.migration + model] == "true" else {
                return "the target cannot take a host-model \"\(model)\" guest (no label \(CPUCapabilities.Label.migration + model))"
            }
            let required = sourceLabels.keys.filter { $0.hasPrefix(CPUCapabilities.Label.requiredFeature) }
                .map { String($0.dropFirst(CPUCapabilities.Label.requiredFeature.count)) }
            if let feature = required.sorted().first(where: { labels[CPUCapabilities.Label.feature + $0] != "true" }) {
                return "the target's CPU lacks feature \"\(feature)\" that host-model gave the guest"
            }
            return nil
        }
    }
}

extension Connection {
    /// Checks that this node can give `spec`'s guest the CPU it asks for. libvirt itself would start a custom model
    /// the node marks unusable (QEMU silently drops the features it cannot emulate), so vmsync refuses first.
    public func checkCPU(of spec: DomainSpec, virtType: String? = nil) async throws(HypervisorError) {
        let capabilities = try await cpuCapabilities(virtType: virtType ?? spec.accelerator.rawValue)
        if let reason = spec.cpu.unsatisfied(toRunOn: capabilities.nodeLabels(obsoleteModels: [])) {
            throw HypervisorError(.invalidConfiguration, "domain \"\(spec.name)\" cannot run on \(uri): \(reason)")
        }
    }
}
