internal import CLibvirt
import Foundation

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// What a node's hypervisor offers for guest CPUs, read from libvirt's domain capabilities.
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
        hostPassthroughSupported = !nodes("/domainCapabilities/cpu/mode[@name='host-passthrough'][@supported='yes']")
            .isEmpty
        let models = nodes("/domainCapabilities/cpu/mode[@name='custom'][@supported='yes']/model")
        usableModels = models.filter { $0.attribute(forName: "usable")?.stringValue == "yes" }.compactMap(\.stringValue)
        unusableModels = models.filter { $0.attribute(forName: "usable")?.stringValue == "no" }.compactMap(
            \.stringValue)
    }
}

extension Connection {
    /// The CPU capabilities of this node for `virtType` guests ("qemu" = TCG, "kvm").
    public func cpuCapabilities(virtType: String = "qemu", arch: String = "x86_64", machine: String = "q35")
        async throws(HypervisorError)
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
            let expanded = try await run("expansion of host-model CPU \(model) on \(uri)") {
                pointer throws(HypervisorError) -> String in
                let text = cpu.withCString { cpuText -> UnsafeMutablePointer<CChar>? in
                    var list: [UnsafePointer<CChar>?] = [cpuText]
                    return virConnectBaselineHypervisorCPU(
                        pointer, nil, arch, machine, virtType, &list, 1,
                        VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES.rawValue)
                }
                guard let text else {
                    throw HypervisorError.last("expansion of host-model CPU \(model) on \(self.uri)")
                }
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

extension Connection {
    /// Checks that this node can give `spec`'s guest the CPU it asks for. libvirt itself would start a custom model
    /// the node marks unusable (QEMU silently drops the features it cannot emulate), so vmsync refuses first.
    public func checkCPU(of spec: DomainSpec, virtType: String? = nil) async throws(HypervisorError) {
        let capabilities = try await cpuCapabilities(virtType: virtType ?? spec.accelerator.rawValue)
        let reason: String?
        switch spec.cpu {
        case .custom(let model, _):
            reason = capabilities.usableModels.contains(model) ? nil : "CPU model \"\(model)\" is not usable here"
        case .hostModel:
            reason = capabilities.hostModel == nil ? "it offers no host-model CPU" : nil
        case .hostPassthrough:
            reason = capabilities.hostModel == nil ? "it offers no host CPU to pass through" : nil
        }
        if let reason {
            throw HypervisorError(.invalidConfiguration, "domain \"\(spec.name)\" cannot run on \(uri): \(reason)")
        }
    }
}
