import ClusterAPI
import Foundation
import Hypervisor

/// A VirtualMachineInstance's spec as a libvirt domain on this node.
enum DomainMapping {
    /// The memory the VMI asks for, in MiB (domain.memory.guest, else resources.requests.memory, else 128).
    static func memoryMiB(_ spec: VirtualMachineInstanceSpec) -> Int {
        let bytes =
            Quantity(spec.domain?.memory?.guest)?.bytes ?? Quantity(spec.domain?.resources?.requests?["memory"])?.bytes
            ?? (128 << 20)
        return Int(max(16, bytes >> 20))
    }

    /// The CPU the VMI asks for (KubeVirt's default: host-model; the cluster default from the KubeVirt CR applies
    /// when the VMI names none).
    static func cpu(_ spec: VirtualMachineInstanceSpec, clusterDefault: String?) -> DomainSpec.CPUMode {
        DomainSpec.CPUMode(CPURequirement(kubeVirtModel: spec.cpuModel(clusterDefault: clusterDefault)))
    }

    static func vcpus(_ spec: VirtualMachineInstanceSpec) -> Int {
        let cpu = spec.domain?.cpu
        // Each count clamped first: a stored object that bypassed validation cannot overflow the product.
        let counts = [cpu?.cores, cpu?.sockets, cpu?.threads].map { Int(min(max($0 ?? 1, 1), Int64(Schema.maxVCPUs))) }
        return Int(max(1, min(counts.reduce(1, *), 64)))
    }

    /// The domain for `vmi` with its disks at `disks` (volume name → image path and format).
    static func spec(
        for vmi: VirtualMachineInstance, disks: [String: (path: String, format: String)], serialSocket: String,
        clusterCPUModel: String?
    ) throws(APIError) -> DomainSpec {
        let namespace = vmi.metadata.namespace ?? "default"
        let name = vmi.metadata.name ?? ""
        let spec = vmi.spec
        var domainDisks: [DomainSpec.Disk] = []
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        for (index, entry) in (spec.domain?.devices?.disks ?? []).enumerated() {
            let volume = entry.name
            guard let disk = disks[volume] else {
                throw APIError.badRequest(
                    "disk \"\(volume)\" of vmi \(namespace)/\(name) has no volume this node can provide")
            }
            guard index < letters.count else { break }
            let format: DomainSpec.Disk.Format = disk.format == "raw" ? .raw : .qcow2
            domainDisks.append(
                DomainSpec.Disk(
                    path: disk.path, format: format, target: "vd\(letters[index])",
                    readOnly: entry.disk?.readonly ?? false))
        }
        var boot: DomainSpec.DirectBoot?
        if let kernelBoot = spec.domain?.firmware?.kernelBoot, let kernel = kernelBoot.container?.kernelPath {
            boot = DomainSpec.DirectBoot(
                kernel: kernel, initrd: kernelBoot.container?.initrdPath,
                commandLine: kernelBoot.kernelArgs ?? "console=ttyS0")
        }
        let interfaces = try self.interfaces(of: vmi)
        let uuid = vmi.domainUUID.flatMap(UUID.init(uuidString:))
        let domain = DomainSpec(
            name: Resources.domainName(namespace: namespace, name: name), uuid: uuid, memoryMiB: memoryMiB(spec),
            vcpus: vcpus(spec), cpu: cpu(spec, clusterDefault: clusterCPUModel), accelerator: .qemu, tcgCacheMiB: 32,
            boot: boot,
            disks: domainDisks, serialSocket: serialSocket,
            interfaces: interfaces.map { DomainSpec.Interface(source: .user, macAddress: $0.mac) }, usbController: true)
        do {
            try domain.validate()
        } catch {
            throw APIError.badRequest("vmi \(namespace)/\(name) cannot become a domain: \(error.message)")
        }
        return domain
    }

    /// One of the VMI's interfaces as this node plugs it in.
    struct PlannedInterface: Equatable {
        var name: String
        var mac: String
    }

    /// The network every node offers its guests: KubeVirt's pod network with the masquerade binding becomes a private
    /// NAT network behind the node (QEMU's user-mode network), the same on every node so a migrated guest keeps its
    /// address. The guest's first interface gets `guestAddress` by DHCP.
    static let masqueradeNetwork = (cidr: "10.0.2.0/24", gateway: "10.0.2.2", guestAddress: "10.0.2.15")

    /// The VMI's interfaces: each must sit on the pod network with the masquerade (or bridge) binding; the MAC is the
    /// spec's or one derived from the VMI's uid (stable across a migration, new for a new VMI, as in KubeVirt).
    static func interfaces(of vmi: VirtualMachineInstance) throws(APIError) -> [PlannedInterface] {
        let networks = vmi.spec.networks ?? []
        var planned: [PlannedInterface] = []
        for (index, entry) in (vmi.spec.domain?.devices?.interfaces ?? []).enumerated() {
            let name = entry.name ?? "interface\(index)"
            guard let network = networks.first(where: { $0.name == name }) else {
                throw APIError.badRequest("interface \"\(name)\" has no network of that name in spec.networks")
            }
            guard network.pod != nil else {
                let kind = network.multus != nil ? "multus" : "unknown"
                throw APIError.badRequest(
                    "network \"\(name)\": \(kind) networks are not supported by vmsync nodes (use pod)")
            }
            guard entry.masquerade != nil || entry.bridge != nil else {
                let binding = entry.sriov != nil ? "sriov" : "none"
                throw APIError.badRequest(
                    "interface \"\(name)\": binding \(binding) is not supported by vmsync nodes (use masquerade)")
            }
            let mac = entry.macAddress ?? derivedMAC(uid: vmi.metadata.uid ?? "", interface: name)
            planned.append(PlannedInterface(name: name, mac: mac.lowercased()))
        }
        return planned
    }

    /// A locally administered unicast MAC from a stable hash (FNV-1a) of the VMI's uid and the interface name.
    static func derivedMAC(uid: String, interface: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in (uid + "/" + interface).utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        let bytes = [0x02] + (0..<5).map { Int((hash >> (8 * UInt64($0))) & 0xff) }
        return bytes.map { String(format: "%02x", $0) }.joined(separator: ":")
    }

    /// The user data of a `cloudInitNoCloud` volume (`userData`, or `userDataBase64` decoded).
    static func userData(of cloudInit: VirtualMachineInstanceSpec.Volume.CloudInitNoCloud, volume: String)
        throws(APIError) -> String
    {
        if let text = cloudInit.userData { return text }
        if let encoded = cloudInit.userDataBase64 {
            guard let data = Data(base64Encoded: encoded), let text = String(data: data, encoding: .utf8) else {
                throw APIError.badRequest(
                    "volume \"\(volume)\": cloudInitNoCloud.userDataBase64 is not base64-encoded UTF-8")
            }
            return text
        }
        throw APIError.badRequest("volume \"\(volume)\": cloudInitNoCloud needs userData or userDataBase64")
    }

    /// NoCloud meta-data: the instance id (the VMI's uid, so a new VMI runs cloud-init afresh) and the host name.
    static func metaData(of vmi: VirtualMachineInstance) -> String {
        let name = vmi.metadata.name ?? "vm"
        let uid = vmi.metadata.uid ?? name
        return "instance-id: \(uid)\nlocal-hostname: \(name)\n"
    }

    /// The guest device of each disk's volume ("vda", "vdb", … in the order of `spec.domain.devices.disks`).
    static func diskTargets(of vmi: VirtualMachineInstance) -> [String: String] {
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        var targets: [String: String] = [:]
        for (index, entry) in (vmi.spec.domain?.devices?.disks ?? []).enumerated() where index < letters.count {
            targets[entry.name] = "vd\(letters[index])"
        }
        return targets
    }

    /// The domain XML for the target: the source's migratable XML with this node's run directory (console socket,
    /// empty disks, cloud-init seed) replaced by the target's. DataVolume disks keep their paths: a StorageClass's
    /// directory is the same on every node.
    static func destinationXML(_ xml: String, from sourceRunDirectory: String, to targetRunDirectory: String) -> String
    {
        guard sourceRunDirectory != targetRunDirectory else { return xml }
        let from = sourceRunDirectory.hasSuffix("/") ? sourceRunDirectory : sourceRunDirectory + "/"
        let to = targetRunDirectory.hasSuffix("/") ? targetRunDirectory : targetRunDirectory + "/"
        return xml.replacingOccurrences(of: "'\(from)", with: "'\(to)").replacingOccurrences(
            of: "\"\(from)", with: "\"\(to)")
    }
}
