import ClusterAPI
import Foundation
import Hypervisor

/// A VirtualMachineInstance's spec as a libvirt domain on this node.
enum DomainMapping {
    /// The memory the VMI asks for, in MiB (domain.memory.guest, else resources.requests.memory, else 128).
    static func memoryMiB(_ spec: JSONValue?) -> Int {
        let domain = spec?["domain"]
        let bytes = Quantity(domain?["memory"]?["guest"])?.bytes ?? Quantity(domain?["resources"]?["requests"]?["memory"])?.bytes ?? (128 << 20)
        return Int(max(16, bytes >> 20))
    }

    /// The CPU the VMI asks for (KubeVirt's default: host-model; the cluster default from the KubeVirt CR applies
    /// when the VMI names none).
    static func cpu(_ spec: JSONValue?, clusterDefault: String?) -> DomainSpec.CPUMode {
        DomainSpec.CPUMode(kubeVirtModel: Resources.cpuModel(of: spec, clusterDefault: clusterDefault))
    }

    static func vcpus(_ spec: JSONValue?) -> Int {
        let cpu = spec?["domain"]?["cpu"]
        let count = (cpu?["cores"]?.int ?? 1) * (cpu?["sockets"]?.int ?? 1) * (cpu?["threads"]?.int ?? 1)
        return Int(max(1, min(count, 64)))
    }

    /// The domain for `vmi` with its disks at `disks` (volume name → image path and format).
    static func spec(
        for vmi: JSONValue, disks: [String: (path: String, format: String)], serialSocket: String, clusterCPUModel: String?
    ) throws(APIError) -> DomainSpec {
        let namespace = vmi["metadata"]?["namespace"]?.string ?? "default"
        let name = vmi["metadata"]?["name"]?.string ?? ""
        let spec = vmi["spec"]
        var domainDisks: [DomainSpec.Disk] = []
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        for (index, entry) in (spec?["domain"]?["devices"]?["disks"]?.array ?? []).enumerated() {
            guard let volume = entry["name"]?.string else { continue }
            guard let disk = disks[volume] else {
                throw APIError.badRequest("disk \"\(volume)\" of vmi \(namespace)/\(name) has no volume this node can provide")
            }
            guard index < letters.count else { break }
            let format: DomainSpec.Disk.Format = disk.format == "raw" ? .raw : .qcow2
            domainDisks.append(DomainSpec.Disk(path: disk.path, format: format, target: "vd\(letters[index])", readOnly: entry["disk"]?["readonly"]?.bool ?? false))
        }
        var boot: DomainSpec.DirectBoot?
        if let kernelBoot = spec?["domain"]?["firmware"]?["kernelBoot"], let kernel = kernelBoot["container"]?["kernelPath"]?.string {
            boot = DomainSpec.DirectBoot(kernel: kernel, initrd: kernelBoot["container"]?["initrdPath"]?.string,
                                         commandLine: kernelBoot["kernelArgs"]?.string ?? "console=ttyS0")
        }
        let uuid = (spec?["domain"]?["firmware"]?["uuid"]?.string).flatMap(UUID.init(uuidString:))
            ?? (vmi["metadata"]?["uid"]?.string).flatMap(UUID.init(uuidString:))
        let domain = DomainSpec(
            name: Resources.domainName(namespace: namespace, name: name), uuid: uuid, memoryMiB: memoryMiB(spec),
            vcpus: vcpus(spec), cpu: cpu(spec, clusterDefault: clusterCPUModel), accelerator: .qemu, tcgCacheMiB: 32, boot: boot,
            disks: domainDisks, serialSocket: serialSocket, usbController: true)
        do {
            try domain.validate()
        } catch {
            throw APIError.badRequest("vmi \(namespace)/\(name) cannot become a domain: \(error.message)")
        }
        return domain
    }
}
