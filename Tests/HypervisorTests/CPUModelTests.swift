import Testing

@testable import Hypervisor

@Suite("CPU capabilities and KubeVirt node labels")
struct CPUModelTests {
    static let capabilities = """
        <domainCapabilities>
          <cpu>
            <mode name='host-passthrough' supported='no'/>
            <mode name='host-model' supported='yes'>
              <model fallback='forbid'>EPYC</model>
              <vendor>AMD</vendor>
              <feature policy='require' name='acpi'/>
              <feature policy='require' name='umip'/>
              <feature policy='disable' name='vme'/>
            </mode>
            <mode name='custom' supported='yes'>
              <model usable='yes' vendor='unknown'>qemu64</model>
              <model usable='yes' vendor='Intel'>Westmere</model>
              <model usable='yes' vendor='Intel'>Nehalem</model>
              <model usable='no' vendor='Intel'>Skylake-Client</model>
            </mode>
          </cpu>
        </domainCapabilities>
        """

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
        #expect(Set(labels.keys) == [
            "cpu-model.node.kubevirt.io/Westmere", "cpu-model.node.kubevirt.io/Nehalem",
            "cpu-model-migration.node.kubevirt.io/Westmere", "cpu-model-migration.node.kubevirt.io/Nehalem",
            "cpu-model-migration.node.kubevirt.io/EPYC", "host-model-cpu.node.kubevirt.io/EPYC",
            "host-model-required-features.node.kubevirt.io/acpi", "host-model-required-features.node.kubevirt.io/umip",
            "cpu-feature.node.kubevirt.io/acpi", "cpu-feature.node.kubevirt.io/umip", "cpu-feature.node.kubevirt.io/sse2",
        ])
        #expect(labels.values.allSatisfy { $0 == "true" })
    }

    @Test("not XML is an error, not an empty node")
    func garbage() {
        #expect(throws: HypervisorError.self) { try CPUCapabilities(domainCapabilitiesXML: "<domainCapabilities><cpu>") }
    }

    @Test("run and migrate checks say why")
    func checks() throws {
        var source = try CPUCapabilities(domainCapabilitiesXML: Self.capabilities)
        source.hostModelFeatures = ["acpi", "umip"]
        let labels = source.nodeLabels()
        #expect(DomainSpec.CPUMode.custom(model: "Westmere").unsatisfied(toRunOn: labels) == nil)
        #expect(DomainSpec.CPUMode.custom(model: "Skylake-Client").unsatisfied(toRunOn: labels)?.contains("not usable") == true)
        #expect(DomainSpec.CPUMode.hostModel.unsatisfied(toRunOn: labels) == nil)
        #expect(DomainSpec.CPUMode.hostModel.unsatisfied(toRunOn: [:]) != nil)

        // A target whose host model differs but which can run EPYC with the same features takes the guest.
        var target = labels
        target.removeValue(forKey: "host-model-cpu.node.kubevirt.io/EPYC")
        target["host-model-cpu.node.kubevirt.io/EPYC-Rome"] = "true"
        #expect(DomainSpec.CPUMode.hostModel.unsatisfied(toMigrateFrom: labels, to: target) == nil)
        #expect(DomainSpec.CPUMode.hostPassthrough.unsatisfied(toMigrateFrom: labels, to: target)?.contains("same host CPU") == true)
        target.removeValue(forKey: "cpu-feature.node.kubevirt.io/umip")
        #expect(DomainSpec.CPUMode.hostModel.unsatisfied(toMigrateFrom: labels, to: target)?.contains("\"umip\"") == true)
        target.removeValue(forKey: "cpu-model-migration.node.kubevirt.io/EPYC")
        #expect(DomainSpec.CPUMode.hostModel.unsatisfied(toMigrateFrom: labels, to: target)?.contains("host-model \"EPYC\"") == true)
        #expect(DomainSpec.CPUMode.custom(model: "Nehalem").unsatisfied(toMigrateFrom: labels, to: target) == nil)
    }
}
