internal import CLibvirt
import Foundation

#if canImport(FoundationXML)
    import FoundationXML
#endif

#if canImport(Glibc)
    import Glibc
#endif

/// The run state of a domain, as libvirt reports it.
public enum DomainState: String, Sendable, Hashable {
    case noState = "nostate"
    case running, blocked, paused
    case shuttingDown = "shutdown"
    case shutOff = "shutoff"
    case crashed
    case suspended = "pmsuspended"

    init(libvirt value: Int32) {
        switch UInt32(bitPattern: value) {
        case VIR_DOMAIN_RUNNING.rawValue: self = .running
        case VIR_DOMAIN_BLOCKED.rawValue: self = .blocked
        case VIR_DOMAIN_PAUSED.rawValue: self = .paused
        case VIR_DOMAIN_SHUTDOWN.rawValue: self = .shuttingDown
        case VIR_DOMAIN_SHUTOFF.rawValue: self = .shutOff
        case VIR_DOMAIN_CRASHED.rawValue: self = .crashed
        case VIR_DOMAIN_PMSUSPENDED.rawValue: self = .suspended
        default: self = .noState
        }
    }
}

/// Whether a domain holds a live guest, read from libvirt's state and its reason — what decides whether a node may
/// remove it. On a migration's destination only a domain still paused for the migration (waiting for its memory) or
/// one without a process is disposable; anything else may be the guest's only running copy.
public enum GuestPresence: String, Sendable, Hashable {
    /// The guest runs here (or is paused for a reason of its own: an I/O error, a user).
    case live
    /// In a post-copy migration (running on the destination, paused on the source, or either after post-copy
    /// failed): the guest's memory is split between the two nodes until the job ends; neither half may be removed.
    case postCopy
    /// Paused for a migration in progress: on its destination, starting up and waiting for the memory; on its
    /// source, while the memory is copied with the guest paused.
    case pausedForMigration
    /// No process: shut off or crashed.
    case inactive

    init(state: Int32, reason: Int32) {
        let reason = UInt32(bitPattern: reason)
        switch UInt32(bitPattern: state) {
        case VIR_DOMAIN_SHUTOFF.rawValue, VIR_DOMAIN_CRASHED.rawValue: self = .inactive
        // A destination is "starting up" until its memory has arrived, then "migration" until it is resumed.
        case VIR_DOMAIN_PAUSED.rawValue
        where reason == VIR_DOMAIN_PAUSED_MIGRATION.rawValue || reason == VIR_DOMAIN_PAUSED_STARTING_UP.rawValue:
            self = .pausedForMigration
        case VIR_DOMAIN_PAUSED.rawValue
        where reason == VIR_DOMAIN_PAUSED_POSTCOPY.rawValue || reason == VIR_DOMAIN_PAUSED_POSTCOPY_FAILED.rawValue:
            self = .postCopy
        case VIR_DOMAIN_RUNNING.rawValue
        where reason == VIR_DOMAIN_RUNNING_POSTCOPY.rawValue || reason == VIR_DOMAIN_RUNNING_POSTCOPY_FAILED.rawValue:
            self = .postCopy
        default: self = .live
        }
    }
}

/// One domain on one connection.
public final class Domain: @unchecked Sendable {
    /// The domain's name.
    public let name: String
    /// The connection it was looked up or defined on.
    public let connection: Connection
    let pointer: OpaquePointer

    init(connection: Connection, pointer: OpaquePointer, name: String) {
        self.connection = connection
        self.pointer = pointer
        self.name = name
    }

    deinit { virDomainFree(pointer) }

    /// Starts the defined domain.
    public func start() async throws(HypervisorError) {
        try await call("start") { virDomainCreate($0) }
    }

    /// Asks the guest to shut down (ACPI); returns before it has.
    public func shutdown() async throws(HypervisorError) {
        try await call("shutdown") { virDomainShutdown($0) }
    }

    /// Stops the domain at once.
    public func destroy() async throws(HypervisorError) {
        try await call("destroy") { virDomainDestroy($0) }
    }

    /// Removes the definition (with managed-save images and snapshot metadata; vmsync guests have no NVRAM).
    public func undefine() async throws(HypervisorError) {
        let flags = VIR_DOMAIN_UNDEFINE_MANAGED_SAVE.rawValue | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA.rawValue
        try await call("undefinition") { virDomainUndefineFlags($0, flags) }
    }

    /// The current state.
    public func state() async throws(HypervisorError) -> DomainState {
        let raw = try await run("state query") { pointer throws(HypervisorError) -> Int32 in
            var state: Int32 = 0
            var reason: Int32 = 0
            guard virDomainGetState(pointer, &state, &reason, 0) == 0 else {
                throw HypervisorError.last(self.operation("state query"))
            }
            return state
        }
        return DomainState(libvirt: raw)
    }

    /// Pauses the guest's vCPUs (its process and memory stay).
    public func suspend() async throws(HypervisorError) {
        try await call("suspension") { virDomainSuspend($0) }
    }

    /// The domain's UUID, lower-case with dashes.
    public func uuid() async throws(HypervisorError) -> String {
        try await run("UUID query") { pointer throws(HypervisorError) -> String in
            var buffer = [CChar](repeating: 0, count: Int(VIR_UUID_STRING_BUFLEN))
            guard virDomainGetUUIDString(pointer, &buffer) == 0 else {
                throw HypervisorError.last(self.operation("UUID query"))
            }
            return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }.lowercased()
        }
    }

    /// Whether the domain holds a live guest (`GuestPresence`).
    public func presence() async throws(HypervisorError) -> GuestPresence {
        try await run("state query") { pointer throws(HypervisorError) -> GuestPresence in
            var state: Int32 = 0
            var reason: Int32 = 0
            guard virDomainGetState(pointer, &state, &reason, 0) == 0 else {
                throw HypervisorError.last(self.operation("state query"))
            }
            return GuestPresence(state: state, reason: reason)
        }
    }

    /// The domain's XML; `migratable` strips host-specific parts, as needed for a destination definition.
    public func xml(migratable: Bool = false) async throws(HypervisorError) -> String {
        let flags = migratable ? VIR_DOMAIN_XML_MIGRATABLE.rawValue : 0
        return try await run("XML query") { pointer throws(HypervisorError) -> String in
            guard let text = virDomainGetXMLDesc(pointer, flags) else {
                throw HypervisorError.last(self.operation("XML query"))
            }
            defer { free(text) }
            return String(cString: text)
        }
    }

    // MARK: Calls

    func operation(_ verb: String) -> String {
        "\(verb) of domain \"\(name)\" on \(connection.uri)"
    }

    func call(_ verb: String, _ body: @escaping @Sendable (OpaquePointer) -> Int32) async throws(HypervisorError) {
        _ = try await run(verb) { pointer throws(HypervisorError) -> Int32 in
            let result = body(pointer)
            if result < 0 { throw HypervisorError.last(self.operation(verb)) }
            return result
        }
    }

    func run<T: Sendable>(
        _ verb: String,
        _ body: @escaping @Sendable (OpaquePointer) throws(HypervisorError) -> T
    ) async throws(HypervisorError) -> T {
        let handle = LibvirtHandle(pointer)
        // The connection checks it is open and runs the call off the cooperative pool.
        return try await connection.run(operation(verb)) { _ throws(HypervisorError) -> T in try body(handle.pointer) }
    }
}

extension Domain {
    /// The statistics of the domain's current job (nil when it has none); `completed` asks for the last finished
    /// job's statistics instead, which libvirt keeps until they are read (here: kept).
    public func jobStatistics(completed: Bool = false) async throws(HypervisorError) -> JobStatistics? {
        let flags =
            completed
            ? VIR_DOMAIN_JOB_STATS_COMPLETED.rawValue | VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED.rawValue : 0
        return try await run("job statistics query") { pointer throws(HypervisorError) -> JobStatistics? in
            var type: Int32 = 0
            var parameters: virTypedParameterPtr?
            var count: Int32 = 0
            guard virDomainGetJobStats(pointer, &type, &parameters, &count, flags) == 0 else {
                throw HypervisorError.last(self.operation("job statistics query"))
            }
            defer { virTypedParamsFree(parameters, count) }
            guard UInt32(bitPattern: type) != VIR_DOMAIN_JOB_NONE.rawValue else { return nil }
            var statistics = JobStatistics(parameters: TypedParameters.numbers(parameters, count: count))
            statistics.kind = JobStatistics.Kind(libvirt: type)
            return statistics
        }
    }

    /// Aborts the domain's current job (a migration: the source keeps running).
    public func abortJob() async throws(HypervisorError) {
        try await call("job abort") { virDomainAbortJob($0) }
    }

    /// The guest's maximum memory in bytes.
    public func memoryBytes() async throws(HypervisorError) -> UInt64 {
        try await run("memory query") { pointer throws(HypervisorError) -> UInt64 in
            var info = virDomainInfo()
            guard virDomainGetInfo(pointer, &info) == 0 else {
                throw HypervisorError.last(self.operation("memory query"))
            }
            return UInt64(info.maxMem) * 1024
        }
    }

    /// The guest-visible size of disk `target` (e.g. "vda") in bytes.
    public func diskCapacity(_ target: String) async throws(HypervisorError) -> UInt64 {
        try await run("capacity query of disk \(target)") { pointer throws(HypervisorError) -> UInt64 in
            var info = virDomainBlockInfo()
            guard virDomainGetBlockInfo(pointer, target, &info, 0) == 0 else {
                throw HypervisorError.last(self.operation("capacity query of disk \(target)"))
            }
            return info.capacity
        }
    }
}

extension Domain {
    /// Switches the running migration to post-copy (it must have been started with post-copy allowed).
    public func startPostCopy() async throws(HypervisorError) {
        try await call("switch to post-copy") { virDomainMigrateStartPostCopy($0, 0) }
    }

    /// Sets the migration bandwidth limit (also for a migration already running).
    public func setMigrationBandwidth(MiBPerSecond bandwidth: UInt64) async throws(HypervisorError) {
        try await call("migration bandwidth change") { virDomainMigrateSetMaxSpeed($0, UInt(bandwidth), 0) }
    }

    /// Sets the largest downtime the migration may cause at switchover.
    public func setMaxDowntime(_ downtime: Duration) async throws(HypervisorError) {
        let milliseconds = UInt64(
            max(1, downtime.components.seconds * 1000 + downtime.components.attoseconds / 1_000_000_000_000_000))
        try await call("maximum downtime change") { virDomainMigrateSetMaxDowntime($0, milliseconds, 0) }
    }
}

extension Domain {
    /// Hot-plugs a device given as libvirt XML into the running domain (and into its persistent definition when
    /// `persistent`).
    public func attachDevice(xml: String, persistent: Bool = true) async throws(HypervisorError) {
        let flags = VIR_DOMAIN_AFFECT_LIVE.rawValue | (persistent ? VIR_DOMAIN_AFFECT_CONFIG.rawValue : 0)
        try await call("device hot-plug") { virDomainAttachDeviceFlags($0, xml, flags) }
    }

    /// Asks for a device to be unplugged; returns once asked (the guest releases it asynchronously).
    public func detachDevice(xml: String, persistent: Bool = true) async throws(HypervisorError) {
        let flags = VIR_DOMAIN_AFFECT_LIVE.rawValue | (persistent ? VIR_DOMAIN_AFFECT_CONFIG.rawValue : 0)
        try await call("device unplug") { virDomainDetachDeviceFlags($0, xml, flags) }
    }

    /// Hot-plugs a disk (a USB disk needs the domain's USB controller).
    public func attach(disk: DomainSpec.Disk, persistent: Bool = true) async throws(HypervisorError) {
        let spec = DomainSpec(name: name, memoryMiB: 16, disks: [disk], usbController: true)
        try spec.validate()
        try await attachDevice(xml: disk.xml(), persistent: persistent)
    }

    /// Unplugs the disk the guest sees as `target` (e.g. "vdb", "sda") and waits until it is gone from the live
    /// definition (a virtio disk: until the guest has acknowledged the PCIe unplug).
    public func detach(disk target: String, persistent: Bool = true, timeout: Duration = .seconds(20))
        async throws(HypervisorError)
    {
        guard try await diskTargets().contains(target) else {
            throw HypervisorError(
                .invalidConfiguration, operation("unplug of disk \(target)") + ": the domain has no such disk")
        }
        let bus = target.hasPrefix("sd") ? "usb" : "virtio"
        try await detachDevice(
            xml: "<disk type='file' device='disk'><target dev='\(target)' bus='\(bus)'/></disk>", persistent: persistent
        )
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            guard try await diskTargets().contains(target) else { return }
            try? await Task.sleep(for: .milliseconds(100))
        }
        throw HypervisorError(
            .timeout,
            operation("unplug of disk \(target)") + ": the guest did not release it within \(timeout.secondsText)")
    }

    /// The guest device names of the domain's disks in its live definition.
    public func diskTargets() async throws(HypervisorError) -> [String] {
        let xml = try await xml()
        guard let document = try? XMLDocument(xmlString: xml) else { return [] }
        return ((try? document.nodes(forXPath: "/domain/devices/disk/target/@dev")) ?? []).compactMap(\.stringValue)
    }
}
