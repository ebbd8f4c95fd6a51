internal import CLibvirt
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// A hypervisor version as libvirt reports it (`virConnectGetVersion`: QEMU's for the QEMU driver).
public struct HypervisorVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var major: UInt
    public var minor: UInt
    public var micro: UInt

    public init(_ major: UInt, _ minor: UInt, _ micro: UInt = 0) {
        self.major = major
        self.minor = minor
        self.micro = micro
    }

    /// From libvirt's encoding, major × 1 000 000 + minor × 1 000 + micro.
    public init(libvirt value: UInt) {
        self.init(value / 1_000_000, (value / 1000) % 1000, value % 1000)
    }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.major, lhs.minor, lhs.micro) < (rhs.major, rhs.minor, rhs.micro)
    }

    public var description: String { "\(major).\(minor).\(micro)" }
}

/// How a migration copies the guest's memory.
public enum MemoryCopy: String, Sendable, Hashable {
    /// While the guest runs, in passes, pausing it only for the last one (pre-copy).
    case live = "PreCopy"
    /// With the guest paused for the whole memory copy (libvirt's migration without `VIR_MIGRATE_LIVE`); copied
    /// disks are still mirrored while it runs, and it resumes on the destination.
    case paused = "Paused"

    /// First QEMU release whose TCG dirty tracking no longer misses guest writes during a live copy (QEMU commit
    /// 03bfc2188f, "physmem: Fix migration dirty bitmap coherency with TCG memory access").
    public static let tcgDirtyTrackingFixed = HypervisorVersion(9, 0, 0)

    /// Why copying a guest's memory live would corrupt it, or nil when it is safe. Under TCG, QEMU before 9.0
    /// clears a page's dirty bit at each dirty-log sync without invalidating the vCPUs' TLB entries that already
    /// write to it unchecked, so writes after a sync are not seen and the destination keeps stale pages (measured
    /// with QEMU 7.2: guest memory differed after 8 of 14 live migrations, kernel structures among the pages). KVM
    /// tracks dirty pages in the kernel and is not affected.
    public static func liveCopyHazard(accelerator: DomainSpec.Accelerator, qemu: HypervisorVersion) -> String? {
        guard accelerator == .qemu, qemu < tcgDirtyTrackingFixed else { return nil }
        return "QEMU \(qemu) misses guest writes while it copies the memory of a TCG (emulated) guest live; the fix is in QEMU \(tcgDirtyTrackingFixed.major).\(tcgDirtyTrackingFixed.minor)"
    }
}

extension Connection {
    /// The hypervisor's version (QEMU's for the QEMU driver).
    public func hypervisorVersion() async throws(HypervisorError) -> HypervisorVersion {
        let value = try await run("hypervisor version query on \(uri)") { pointer throws(HypervisorError) -> UInt in
            var version: UInt = 0
            guard virConnectGetVersion(pointer, &version) == 0 else {
                throw HypervisorError.last("hypervisor version query on \(self.uri)")
            }
            return version
        }
        return HypervisorVersion(libvirt: value)
    }
}

extension Domain {
    /// The domain's accelerator (`<domain type=…>`).
    public func accelerator() async throws(HypervisorError) -> DomainSpec.Accelerator {
        let xml = try await xml()
        guard let document = try? XMLDocument(xmlString: xml), let type = document.rootElement()?.attribute(forName: "type")?.stringValue,
            let accelerator = DomainSpec.Accelerator(rawValue: type)
        else {
            throw HypervisorError(.operationInvalid, "\(operation("accelerator query")): no known <domain type> in its XML")
        }
        return accelerator
    }

    /// Why a live memory copy of this domain would corrupt it (`MemoryCopy.liveCopyHazard`), or nil.
    public func liveMemoryCopyHazard() async throws(HypervisorError) -> String? {
        MemoryCopy.liveCopyHazard(accelerator: try await accelerator(), qemu: try await connection.hypervisorVersion())
    }
}
