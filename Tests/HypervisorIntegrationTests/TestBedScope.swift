import BedTesting
import Foundation
import Hypervisor
import TestBed
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The real-QEMU suites, one after another (each starts its own bed; running them at once would only make the 2 cores
/// of a CI machine emulate five guests at a time).
@Suite("Real libvirt and QEMU", .serialized, .enabled(if: canRunTestBed))
enum RealLibvirt {}

/// A tiny guest running on a node of the bed, its disk and its console.
struct RunningGuest {
    let name: String
    let domain: Domain
    let connection: Connection
    let diskPath: String
    let serialPath: String
    let spec: DomainSpec

    /// Defines and starts the guest on `node`; its disk goes to `diskDirectory` (default: the node's images).
    static func start(
        _ name: String, on node: TestBedNode, bed: TestBed, diskDirectory: String? = nil,
        cpu: DomainSpec.CPUMode = .hostModel,
        seed: UInt64 = 7
    ) async throws -> RunningGuest {
        let connection = try await Connection.open(node.uri)
        let disk = (diskDirectory ?? node.imagesDirectory) + "/\(name).qcow2"
        try await GuestDisk.create(at: disk, seed: seed)
        let serial = node.imagesDirectory + "/\(name).serial"
        let spec = DomainSpec(
            name: name, memoryMiB: 128, cpu: cpu, tcgCacheMiB: 32,
            boot: .init(
                kernel: bed.report.guest.kernel, initrd: bed.report.guest.initrd, commandLine: GuestFiles.commandLine),
            disks: [.init(path: disk, target: "vda")], serialSocket: serial, usbController: true)
        let domain = try await connection.define(spec)
        try await domain.start()
        return RunningGuest(
            name: name, domain: domain, connection: connection, diskPath: disk, serialPath: serial, spec: spec)
    }

    /// The migratable XML with every path of `from`'s images directory moved to `to`'s.
    func destinationXML(from: TestBedNode, to: TestBedNode) async throws -> String {
        try await domain.xml(migratable: true).replacingOccurrences(of: from.imagesDirectory, with: to.imagesDirectory)
    }

    /// Destroys and undefines the guest wherever it is, ignoring what is already gone.
    static func remove(_ name: String, from bed: TestBed) async {
        for node in bed.report.nodes {
            guard let connection = try? await Connection.open(node.uri) else { continue }
            if let domain = try? await connection.domain(named: name) {
                try? await domain.destroy()
                try? await domain.undefine()
            }
            await connection.close()
        }
    }
}
