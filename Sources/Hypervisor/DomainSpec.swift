public import Foundation

/// A virtual machine as vmsync describes it; `xml` turns it into libvirt domain XML.
public struct DomainSpec: Sendable, Hashable {
    /// How the guest CPU is presented.
    public enum CPUMode: Sendable, Hashable {
        /// libvirt's host-model: the host CPU's model and features, migratable between alike hosts.
        case hostModel
        /// The host CPU passed through as is (not migratable to different hosts).
        case hostPassthrough
        /// A named model (e.g. "qemu64", "Skylake-Client"); `fallback` lets libvirt substitute a close model.
        case custom(model: String, fallback: Bool = false)
    }

    /// The accelerator: TCG emulation (`qemu`) or KVM.
    public enum Accelerator: String, Sendable, Hashable {
        case qemu, kvm
    }

    /// A disk image attached as a virtio block device or a USB mass-storage device.
    public struct Disk: Sendable, Hashable {
        /// Image formats.
        public enum Format: String, Sendable, Hashable { case qcow2, raw }
        /// How the guest sees it: virtio (`vdX`, the default) or USB storage on the qemu-xhci controller (`sdX`;
        /// unplugged at once, without the guest's cooperation that PCIe unplug of a virtio disk needs).
        public enum Bus: String, Sendable, Hashable { case virtio, usb }
        /// Absolute path of the image file.
        public var path: String
        /// Image format.
        public var format: Format
        /// Guest device name, e.g. "vda" (virtio) or "sda" (USB).
        public var target: String
        /// Attached read-only.
        public var readOnly: Bool
        /// The bus.
        public var bus: Bus

        /// Describes a disk.
        public init(path: String, format: Format = .qcow2, target: String, readOnly: Bool = false, bus: Bus = .virtio) {
            self.path = path
            self.format = format
            self.target = target
            self.readOnly = readOnly
            self.bus = bus
        }

        /// The `<disk>` element (also what hot-plug sends).
        func xml(indent: String = "") -> String {
            var lines = ["<disk type='file' device='disk'>"]
            lines.append("  <driver name='qemu' type='\(format.rawValue)' cache='none'/>")
            lines.append("  <source file='\(XML.escape(path))'/>")
            lines.append("  <target dev='\(target)' bus='\(bus.rawValue)'/>")
            if readOnly { lines.append("  <readonly/>") }
            lines.append("</disk>")
            return lines.map { indent + $0 }.joined(separator: "\n")
        }
    }

    /// A network interface.
    public struct Interface: Sendable, Hashable {
        /// Where the interface is plugged in.
        public enum Source: Sendable, Hashable {
            /// QEMU's user-mode network (no host setup needed).
            case user
            /// A libvirt network by name.
            case network(String)
            /// A host bridge by name.
            case bridge(String)
        }
        /// Where it is plugged in.
        public var source: Source
        /// The MAC address, or nil for one chosen by libvirt.
        public var macAddress: String?

        /// Describes a virtio interface.
        public init(source: Source, macAddress: String? = nil) {
            self.source = source
            self.macAddress = macAddress
        }
    }

    /// Booting a kernel and initramfs directly (the tiny test guest boots this way).
    public struct DirectBoot: Sendable, Hashable {
        /// Absolute path of the kernel image.
        public var kernel: String
        /// Absolute path of the initramfs, if any.
        public var initrd: String?
        /// Kernel command line.
        public var commandLine: String

        /// Describes a direct kernel boot.
        public init(kernel: String, initrd: String? = nil, commandLine: String = "console=ttyS0") {
            self.kernel = kernel
            self.initrd = initrd
            self.commandLine = commandLine
        }
    }

    /// Domain name: letters, digits, '.', '_' and '-'.
    public var name: String
    /// Fixed UUID, or nil to let libvirt choose.
    public var uuid: UUID?
    /// Guest memory in MiB.
    public var memoryMiB: Int
    /// Virtual CPUs.
    public var vcpus: Int
    /// CPU presentation.
    public var cpu: CPUMode
    /// TCG or KVM.
    public var accelerator: Accelerator
    /// TCG translation-block cache size in MiB (trims QEMU's RSS under TCG), or nil for QEMU's default.
    public var tcgCacheMiB: Int?
    /// Direct kernel boot, or nil to boot from the first disk.
    public var boot: DirectBoot?
    /// Disks.
    public var disks: [Disk]
    /// A serial console on a unix socket that libvirt creates (absolute path), or nil for none.
    public var serialSocket: String?
    /// Network interfaces.
    public var interfaces: [Interface]
    /// Whether the guest gets a USB 3 (qemu-xhci) controller, for forwarded USB devices.
    public var usbController: Bool
    /// Free PCIe root ports for devices hot-plugged later.
    public var hotplugPorts: Int

    /// Describes a domain; everything but name and memory has a default suited to the tiny TCG guest.
    public init(
        name: String,
        uuid: UUID? = nil,
        memoryMiB: Int,
        vcpus: Int = 1,
        cpu: CPUMode = .hostModel,
        accelerator: Accelerator = .qemu,
        tcgCacheMiB: Int? = nil,
        boot: DirectBoot? = nil,
        disks: [Disk] = [],
        serialSocket: String? = nil,
        interfaces: [Interface] = [],
        usbController: Bool = false,
        hotplugPorts: Int = 2
    ) {
        self.name = name
        self.uuid = uuid
        self.memoryMiB = memoryMiB
        self.vcpus = vcpus
        self.cpu = cpu
        self.accelerator = accelerator
        self.tcgCacheMiB = tcgCacheMiB
        self.boot = boot
        self.disks = disks
        self.serialSocket = serialSocket
        self.interfaces = interfaces
        self.usbController = usbController
        self.hotplugPorts = hotplugPorts
    }

    /// Checks the spec; the error names the first field that is wrong.
    public func validate() throws(HypervisorError) {
        func invalid(_ text: String) -> HypervisorError {
            HypervisorError(.invalidSpec, "domain spec \"\(name)\": \(text)")
        }
        let nameCharacters = name.unicodeScalars.allSatisfy {
            $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0))
        }
        guard !name.isEmpty, name.count <= 64, nameCharacters, name.first != "-" else {
            throw invalid("name must be 1-64 characters of letters, digits, '.', '_' and '-'")
        }
        guard memoryMiB >= 16 else { throw invalid("memoryMiB \(memoryMiB) is below the 16 MiB minimum") }
        guard (1...256).contains(vcpus) else { throw invalid("vcpus \(vcpus) must be between 1 and 256") }
        if case .custom(let model, _) = cpu, model.isEmpty || model.contains(where: \.isWhitespace) {
            throw invalid("custom CPU model \"\(model)\" is not a model name")
        }
        if let tcgCacheMiB, tcgCacheMiB < 1 { throw invalid("tcgCacheMiB must be positive") }
        guard (0...16).contains(hotplugPorts) else {
            throw invalid("hotplugPorts \(hotplugPorts) must be between 0 and 16")
        }
        if let boot {
            guard boot.kernel.hasPrefix("/") else {
                throw invalid("boot.kernel \"\(boot.kernel)\" must be an absolute path")
            }
            if let initrd = boot.initrd, !initrd.hasPrefix("/") {
                throw invalid("boot.initrd \"\(initrd)\" must be an absolute path")
            }
        }
        var targets = Set<String>()
        for (index, disk) in disks.enumerated() {
            guard disk.path.hasPrefix("/") else {
                throw invalid("disks[\(index)].path \"\(disk.path)\" must be an absolute path")
            }
            let pattern = disk.bus == .virtio ? "^vd[a-z]{1,2}$" : "^sd[a-z]{1,2}$"
            guard disk.target.range(of: pattern, options: .regularExpression) != nil else {
                throw invalid(
                    "disks[\(index)].target \"\(disk.target)\" must be a \(disk.bus.rawValue) name like \(disk.bus == .virtio ? "vda" : "sda")"
                )
            }
            if disk.bus == .usb && !usbController {
                throw invalid("disks[\(index)] is a USB disk but the spec has no USB controller (usbController)")
            }
            guard targets.insert(disk.target).inserted else {
                throw invalid("disks[\(index)].target \"\(disk.target)\" is used twice")
            }
        }
        if let serialSocket, !serialSocket.hasPrefix("/") {
            throw invalid("serialSocket \"\(serialSocket)\" must be an absolute path")
        }
        for (index, interface) in interfaces.enumerated() {
            if let mac = interface.macAddress,
                mac.range(of: "^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$", options: .regularExpression) == nil
            {
                throw invalid("interfaces[\(index)].macAddress \"\(mac)\" is not a MAC address")
            }
        }
    }

    /// The libvirt domain XML for this spec (validated first).
    public func xml() throws(HypervisorError) -> String {
        try validate()
        var lines = ["<domain type='\(accelerator.rawValue)'>"]
        lines.append("  <name>\(XML.escape(name))</name>")
        if let uuid { lines.append("  <uuid>\(uuid.uuidString.lowercased())</uuid>") }
        lines.append("  <memory unit='MiB'>\(memoryMiB)</memory>")
        lines.append("  <vcpu>\(vcpus)</vcpu>")
        lines.append("  <os>")
        lines.append("    <type arch='x86_64' machine='q35'>hvm</type>")
        if let boot {
            lines.append("    <kernel>\(XML.escape(boot.kernel))</kernel>")
            if let initrd = boot.initrd { lines.append("    <initrd>\(XML.escape(initrd))</initrd>") }
            lines.append("    <cmdline>\(XML.escape(boot.commandLine))</cmdline>")
        } else {
            lines.append("    <boot dev='hd'/>")
        }
        lines.append("  </os>")
        switch cpu {
        case .hostModel: lines.append("  <cpu mode='host-model'/>")
        case .hostPassthrough: lines.append("  <cpu mode='host-passthrough'/>")
        case .custom(let model, let fallback):
            lines.append("  <cpu mode='custom' match='exact'>")
            lines.append("    <model fallback='\(fallback ? "allow" : "forbid")'>\(XML.escape(model))</model>")
            lines.append("  </cpu>")
        }
        if accelerator == .qemu, let tcgCacheMiB {
            lines.append("  <features><tcg><tb-cache unit='MiB'>\(tcgCacheMiB)</tb-cache></tcg></features>")
        }
        lines.append("  <on_poweroff>destroy</on_poweroff>")
        lines.append("  <on_reboot>restart</on_reboot>")
        lines.append("  <on_crash>destroy</on_crash>")
        lines.append("  <devices>")
        for disk in disks { lines.append(disk.xml(indent: "    ")) }
        for interface in interfaces {
            switch interface.source {
            case .user: lines.append("    <interface type='user'>")
            case .network(let network):
                lines.append("    <interface type='network'>")
                lines.append("      <source network='\(XML.escape(network))'/>")
            case .bridge(let bridge):
                lines.append("    <interface type='bridge'>")
                lines.append("      <source bridge='\(XML.escape(bridge))'/>")
            }
            if let mac = interface.macAddress { lines.append("      <mac address='\(mac.lowercased())'/>") }
            lines.append("      <model type='virtio'/>")
            lines.append("    </interface>")
        }
        if let serialSocket {
            lines.append("    <serial type='unix'>")
            lines.append("      <source mode='bind' path='\(XML.escape(serialSocket))'/>")
            lines.append("      <target port='0'/>")
            lines.append("    </serial>")
        }
        // Spare PCIe root ports: on q35 every hot-plugged device (disk, interface) needs a free one.
        if hotplugPorts > 0 { lines.append("    <controller type='pci' index='0' model='pcie-root'/>") }
        for _ in 0..<hotplugPorts { lines.append("    <controller type='pci' model='pcie-root-port'/>") }
        if usbController {
            lines.append("    <controller type='usb' model='qemu-xhci'/>")
        } else {
            lines.append("    <controller type='usb' model='none'/>")
        }
        lines.append("    <memballoon model='none'/>")
        lines.append("  </devices>")
        lines.append("</domain>")
        return lines.joined(separator: "\n") + "\n"
    }
}

/// Escaping for text and attribute values in generated XML.
enum XML {
    static func escape(_ text: String) -> String {
        var result = ""
        result.reserveCapacity(text.count)
        for character in text {
            switch character {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "'": result += "&apos;"
            case "\"": result += "&quot;"
            default: result.append(character)
            }
        }
        return result
    }
}
