/// A node's libvirt domain capabilities (TCG on an EPYC host), as `virConnectGetDomainCapabilities` returns them.
enum CPUModelFixture {
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
}
