import ClusterAPI
import Hypervisor
import NodeAgent
import Testing

/// libvirt's domain capabilities parsed, KubeVirt's CPU node labels made from them, and what a VMI's CPU asks of
/// them.
@Suite("CPU capabilities, node labels and requirements")
struct CPULabelTests {
    static let capabilities = CPUModelFixture.capabilities

    @Test("domain capabilities are parsed: host model, its required features, usable and unusable models")
    func parse() throws {
        let parsed = try CPUCapabilities(domainCapabilitiesXML: CPUModelFixture.capabilities)
        #expect(parsed.hostModel == "EPYC")
        #expect(parsed.hostModelRequiredFeatures == ["acpi", "umip"])
        #expect(!parsed.hostPassthroughSupported)
        #expect(parsed.usableModels == ["qemu64", "Westmere", "Nehalem"])
        #expect(parsed.unusableModels == ["Skylake-Client"])
    }

    @Test("not XML is an error, not an empty node")
    func garbage() {
        #expect(throws: HypervisorError.self) {
            try CPUCapabilities(domainCapabilitiesXML: "<domainCapabilities><cpu>")
        }
    }
    @Test("domain capabilities become KubeVirt's node labels; obsolete and unusable models get none")
    func labels() throws {
        var parsed = try CPUCapabilities(domainCapabilitiesXML: Self.capabilities)
        parsed.hostModelFeatures = ["acpi", "umip", "sse2"]
        #expect(parsed.hostModel == "EPYC")
        #expect(parsed.hostModelRequiredFeatures == ["acpi", "umip"])
        #expect(!parsed.hostPassthroughSupported)
        #expect(parsed.usableModels == ["qemu64", "Westmere", "Nehalem"])
        #expect(parsed.unusableModels == ["Skylake-Client"])
        let labels = parsed.nodeLabels()
        #expect(
            Set(labels.keys) == [
                "cpu-model.node.kubevirt.io/Westmere", "cpu-model.node.kubevirt.io/Nehalem",
                "cpu-model-migration.node.kubevirt.io/Westmere", "cpu-model-migration.node.kubevirt.io/Nehalem",
                "cpu-model-migration.node.kubevirt.io/EPYC", "host-model-cpu.node.kubevirt.io/EPYC",
                "host-model-required-features.node.kubevirt.io/acpi",
                "host-model-required-features.node.kubevirt.io/umip",
                "cpu-feature.node.kubevirt.io/acpi", "cpu-feature.node.kubevirt.io/umip",
                "cpu-feature.node.kubevirt.io/sse2",
            ])
        #expect(labels.values.allSatisfy { $0 == "true" })
    }

    @Test("run and migrate checks say why")
    func checks() throws {
        var source = try CPUCapabilities(domainCapabilitiesXML: Self.capabilities)
        source.hostModelFeatures = ["acpi", "umip"]
        let labels = source.nodeLabels()
        #expect(CPURequirement.model("Westmere").unsatisfied(toRunOn: labels) == nil)
        #expect(CPURequirement.model("Skylake-Client").unsatisfied(toRunOn: labels)?.contains("not usable") == true)
        #expect(CPURequirement.hostModel.unsatisfied(toRunOn: labels) == nil)
        #expect(CPURequirement.hostModel.unsatisfied(toRunOn: [:]) != nil)

        // A target whose host model differs but which can run EPYC with the same features takes the guest.
        var target = labels
        target.removeValue(forKey: "host-model-cpu.node.kubevirt.io/EPYC")
        target["host-model-cpu.node.kubevirt.io/EPYC-Rome"] = "true"
        #expect(CPURequirement.hostModel.unsatisfied(toMigrateFrom: labels, to: target) == nil)
        #expect(
            CPURequirement.hostPassthrough.unsatisfied(toMigrateFrom: labels, to: target)?.contains("same host CPU")
                == true)
        target.removeValue(forKey: "cpu-feature.node.kubevirt.io/umip")
        #expect(CPURequirement.hostModel.unsatisfied(toMigrateFrom: labels, to: target)?.contains("\"umip\"") == true)
        target.removeValue(forKey: "cpu-model-migration.node.kubevirt.io/EPYC")
        #expect(
            CPURequirement.hostModel.unsatisfied(toMigrateFrom: labels, to: target)?.contains("host-model \"EPYC\"")
                == true)
        #expect(CPURequirement.model("Nehalem").unsatisfied(toMigrateFrom: labels, to: target) == nil)
    }
}
