internal import CLibvirt
import Foundation
import Synchronization

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
        return
            "QEMU \(qemu) misses guest writes while it copies the memory of a TCG (emulated) guest live; the fix is in QEMU \(tcgDirtyTrackingFixed.major).\(tcgDirtyTrackingFixed.minor)"
    }

    /// `liveCopyHazard` for a domain given by its XML (its `<domain type=…>`; a type vmsync does not know is treated
    /// as emulated, the cautious reading).
    public static func liveCopyHazard(domainXML: String, qemu: HypervisorVersion) -> String? {
        liveCopyHazard(accelerator: accelerator(ofDomainXML: domainXML) ?? .qemu, qemu: qemu)
    }

    /// The `type` attribute of the `<domain>` element, read without parsing the whole document.
    static func accelerator(ofDomainXML xml: String) -> DomainSpec.Accelerator? {
        guard
            let element = xml.split(separator: "<domain", maxSplits: 1, omittingEmptySubsequences: false).dropFirst()
                .first,
            let head = element.split(separator: ">", maxSplits: 1).first
        else { return nil }
        for quote in ["'", "\""] {
            let parts = head.components(separatedBy: "type=\(quote)")
            if parts.count > 1, let value = parts[1].components(separatedBy: quote).first {
                return DomainSpec.Accelerator(rawValue: value)
            }
        }
        return nil
    }
}

extension Connection {
    /// The hypervisor's version (QEMU's for the QEMU driver), asked once per connection.
    public func hypervisorVersion() async throws(HypervisorError) -> HypervisorVersion {
        if let known = knownVersion.withLock({ $0 }) { return known }
        let value = try await run("hypervisor version query on \(uri)") { pointer throws(HypervisorError) -> UInt in
            var version: UInt = 0
            guard virConnectGetVersion(pointer, &version) == 0 else {
                throw HypervisorError.last("hypervisor version query on \(self.uri)")
            }
            return version
        }
        let version = HypervisorVersion(libvirt: value)
        knownVersion.withLock { $0 = version }
        return version
    }
}
