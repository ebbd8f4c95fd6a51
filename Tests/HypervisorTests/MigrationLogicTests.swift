import Testing

@testable import Hypervisor

@Suite("Migration options, statistics and timeouts")
struct MigrationLogicTests {
    @Test("KubeVirt's block migration: flags and parameters in libvirt's names")
    func blockMigrationFlags() throws {
        let options = MigrationOptions(
            destinationURI: "qemu+unix:///system?socket=/run/vmsync/tunnel/m1/libvirt.sock",
            migrationURI: "unix:///run/vmsync/tunnel/m1/memory.sock",
            disksURI: "unix:///run/vmsync/tunnel/m1/disks.sock",
            destinationXML: "<domain/>",
            storage: .incremental,
            disks: ["vda"],
            bandwidthMiBPerSecond: 64
        )
        try options.validate(domain: "vm1")
        let flags = options.flags
        // LIVE | PEER2PEER | PERSIST_DEST | UNDEFINE_SOURCE | NON_SHARED_INC | ABORT_ON_ERROR
        #expect(flags == (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 7) | (1 << 12))
        #expect(
            options.parameters.map(\.name) == [
                "migrate_uri", "disks_uri", "destination_xml", "migrate_disks", "bandwidth",
            ])
        #expect(options.parameters.last?.value == .unsigned(64))
        var full = options
        full.storage = .full
        full.autoConverge = true
        full.allowPostCopy = true
        #expect(full.flags & (1 << 6) != 0 && full.flags & (1 << 7) == 0)
        #expect(full.flags & (1 << 13) != 0 && full.flags & (1 << 15) != 0)
        var parallel = options
        parallel.parallelConnections = 3
        #expect(parallel.flags & (1 << 17) != 0 && options.flags & (1 << 17) == 0, "VIR_MIGRATE_PARALLEL")
        #expect(parallel.parameters.last?.name == "parallel.connections" && parallel.parameters.last?.value == .int(3))
        var paused = options
        paused.memoryCopy = .paused
        #expect(paused.flags == flags & ~1, "a paused memory copy is the same migration without VIR_MIGRATE_LIVE")
        let pausedRamp = MigrationOptions(
            destinationURI: "qemu:///system", maxDowntime: .milliseconds(200), initialDowntime: .milliseconds(50),
            memoryCopy: .paused)
        #expect(
            pausedRamp.downtimeLimit(iteration: 1) == nil && pausedRamp.downtimeLimit(iteration: 5) == nil,
            "no switchover limit: the whole copy is downtime")
    }

    @Test("a live memory copy is refused as unsafe for TCG guests on QEMU before 9.0 only")
    func liveCopyHazard() {
        #expect(HypervisorVersion(libvirt: 7_002_022) == HypervisorVersion(7, 2, 22))
        #expect(HypervisorVersion(libvirt: 9_000_000).description == "9.0.0")
        #expect(
            HypervisorVersion(8, 2, 10) < HypervisorVersion(9, 0, 0)
                && HypervisorVersion(9, 0, 0) < HypervisorVersion(9, 0, 1))
        let hazard = MemoryCopy.liveCopyHazard(accelerator: .qemu, qemu: HypervisorVersion(7, 2, 22))
        #expect(
            hazard?.contains("QEMU 7.2.22") == true && hazard?.contains("fix is in QEMU 9.0") == true,
            "\(hazard ?? "none")")
        #expect(MemoryCopy.liveCopyHazard(accelerator: .qemu, qemu: HypervisorVersion(8, 2, 9)) != nil)
        #expect(MemoryCopy.liveCopyHazard(accelerator: .qemu, qemu: HypervisorVersion(9, 0, 0)) == nil)
        #expect(
            MemoryCopy.liveCopyHazard(accelerator: .kvm, qemu: HypervisorVersion(7, 2, 22)) == nil,
            "KVM tracks dirty pages itself")
        // From a domain's XML: its <domain type=…>, single or double quotes, other attributes around it.
        let old = HypervisorVersion(7, 2, 22)
        #expect(
            MemoryCopy.liveCopyHazard(domainXML: "<domain type='kvm' id='4'>\n  <name>vm</name>\n</domain>", qemu: old)
                == nil)
        #expect(
            MemoryCopy.liveCopyHazard(domainXML: "<domain id=\"4\" type=\"qemu\">\n<name>vm</name></domain>", qemu: old)
                != nil)
        #expect(
            MemoryCopy.liveCopyHazard(
                domainXML:
                    "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>vm</name></domain>",
                qemu: HypervisorVersion(9, 1, 0)) == nil)
        #expect(
            MemoryCopy.liveCopyHazard(domainXML: "<domain><name>type='kvm'</name></domain>", qemu: old) != nil,
            "no type on <domain>: treated as emulated")
    }

    @Test(
        "inconsistent options are refused with the reason",
        arguments: [
            (MigrationOptions(destinationURI: ""), "destination URI is required"),
            (MigrationOptions(destinationURI: "qemu:///system", disks: ["vda"]), "storage copy is off"),
            (MigrationOptions(destinationURI: "qemu:///system", storage: .full), "needs the disks"),
            (MigrationOptions(destinationURI: "qemu:///system", migrationURI: "http://x"), "tcp:// or unix://"),
            (MigrationOptions(destinationURI: "qemu:///system", bandwidthMiBPerSecond: 0), "never finish"),
            (
                MigrationOptions(destinationURI: "qemu:///system", parallelConnections: 1),
                "parallel connections must be 2…255"
            ),
            (
                MigrationOptions(destinationURI: "qemu:///system", parallelConnections: 300),
                "parallel connections must be 2…255"
            ),
            (
                MigrationOptions(destinationURI: "qemu:///system", initialDowntime: .milliseconds(400)),
                "exceeds the maximum downtime"
            ),
            (
                MigrationOptions(
                    destinationURI: "qemu:///system", maxDowntime: .milliseconds(40), initialDowntime: .milliseconds(50)
                ),
                "exceeds the maximum downtime"
            ),
            (
                MigrationOptions(destinationURI: "qemu:///system", initialDowntime: .zero),
                "initial downtime must be positive"
            ),
            (
                MigrationOptions(destinationURI: "qemu:///system", allowPostCopy: true, memoryCopy: .paused),
                "post-copy needs a live memory copy"
            ),
        ])
    func invalidOptions(options: MigrationOptions, expected: String) {
        let error = #expect(throws: HypervisorError.self) { try options.validate(domain: "vm1") }
        #expect(error?.code == .invalidSpec)
        #expect(error?.message.contains("migration of domain \"vm1\"") == true)
        #expect(error?.message.contains(expected) == true, "\(String(describing: error))")
    }

    @Test("the downtime limit starts low and doubles per memory pass after the second, up to the maximum")
    func downtimeRamp() {
        let ramp = MigrationOptions(destinationURI: "qemu:///system", initialDowntime: .milliseconds(50))
        #expect(
            [0, 1, 2, 3, 4, 5, 6, 40].map { ramp.downtimeLimit(iteration: $0) }
                == [50, 50, 50, 100, 200, 300, 300, 300].map { Duration.milliseconds($0) }, "up to QEMU's default")
        let capped = MigrationOptions(
            destinationURI: "qemu:///system", maxDowntime: .milliseconds(120), initialDowntime: .milliseconds(50))
        #expect(
            [1, 3, 4].map { capped.downtimeLimit(iteration: $0) } == [50, 100, 120].map { Duration.milliseconds($0) })
        let fixed = MigrationOptions(destinationURI: "qemu:///system", maxDowntime: .milliseconds(80))
        #expect(
            fixed.downtimeLimit(iteration: 1) == .milliseconds(80)
                && fixed.downtimeLimit(iteration: 9) == .milliseconds(80))
        #expect(
            MigrationOptions(destinationURI: "qemu:///system").downtimeLimit(iteration: 3) == nil, "QEMU's own default")
    }

    @Test("statistics show the disk phase, then memory iterations")
    func phases() {
        #expect(JobStatistics(parameters: [:]).phase == .setup)
        let disk = JobStatistics(parameters: [
            "disk_total": 64 << 20, "disk_processed": 10 << 20, "disk_remaining": 54 << 20,
        ])
        #expect(disk.phase == .disks)
        let memory = JobStatistics(parameters: [
            "disk_total": 64 << 20, "disk_remaining": 0, "memory_processed": 30 << 20, "memory_iteration": 2,
            "memory_dirty_rate": 1200, "data_remaining": 5 << 20, "downtime": 120,
        ])
        #expect(memory.phase == .memory(iteration: 2))
        #expect(memory.memoryDirtyRate == 1200)
        #expect(memory.downtimeMs == 120)
    }

    @Test("the completion limit is per GiB of memory plus copied disks, at least one GiB")
    func completionLimit() {
        #expect(MigrationWatchdog(bytes: (128 << 20) + (64 << 20)).completionLimit == .seconds(150))
        #expect(MigrationWatchdog(bytes: (3 << 30) + 1, completionTimeoutPerGiB: 100).completionLimit == .seconds(400))
    }

    @Test("the completion timeout fires once the limit passes, even while progressing")
    func completionTimeout() {
        var watchdog = MigrationWatchdog(bytes: 1 << 30, completionTimeoutPerGiB: 10, progressTimeout: 100)
        var remaining: UInt64 = 1 << 30
        for second in 0...10 {
            remaining -= 1 << 20
            #expect(
                watchdog.observe(JobStatistics(parameters: ["data_remaining": remaining]), elapsed: .seconds(second))
                    == nil)
        }
        #expect(
            watchdog.observe(JobStatistics(parameters: ["data_remaining": remaining - 1]), elapsed: .seconds(11))
                == .completionTimeout(limit: .seconds(10)))
    }

    @Test("the progress timeout fires when nothing advances, and any advance resets it")
    func progressTimeout() {
        var watchdog = MigrationWatchdog(bytes: 1 << 30, completionTimeoutPerGiB: 1000, progressTimeout: 5)
        let stuck = JobStatistics(parameters: ["data_remaining": 500, "data_processed": 100, "memory_iteration": 3])
        #expect(watchdog.observe(stuck, elapsed: .seconds(0)) == nil)
        #expect(watchdog.observe(stuck, elapsed: .seconds(4)) == nil)
        // A new memory iteration counts as progress even if remaining bytes went up (dirty pages).
        let nextIteration = JobStatistics(parameters: [
            "data_remaining": 600, "data_processed": 100, "memory_iteration": 4,
        ])
        #expect(watchdog.observe(nextIteration, elapsed: .seconds(5)) == nil)
        #expect(watchdog.observe(nextIteration, elapsed: .seconds(10)) == nil)
        #expect(watchdog.observe(nextIteration, elapsed: .seconds(11)) == .progressTimeout(limit: .seconds(5)))
    }

    @Test(
        "the setup phase (nothing copied yet) does not count toward the progress timeout; the completion timeout still does"
    )
    func setupIsNotStalled() {
        var watchdog = MigrationWatchdog(bytes: 1 << 30, completionTimeoutPerGiB: 100, progressTimeout: 2)
        let setup = JobStatistics(parameters: ["data_total": 0, "data_processed": 0, "data_remaining": 0])
        for second in 0...10 { #expect(watchdog.observe(setup, elapsed: .seconds(second)) == nil) }
        let stuck = JobStatistics(parameters: [
            "memory_processed": 5, "memory_iteration": 1, "data_processed": 5, "data_remaining": 100,
            "memory_total": 105,
        ])
        #expect(watchdog.observe(stuck, elapsed: .seconds(11)) == nil)
        #expect(watchdog.observe(stuck, elapsed: .seconds(14)) == .progressTimeout(limit: .seconds(2)))
        var long = MigrationWatchdog(bytes: 1 << 30, completionTimeoutPerGiB: 5, progressTimeout: 100)
        #expect(long.observe(setup, elapsed: .seconds(6)) == .completionTimeout(limit: .seconds(5)))
    }
}
