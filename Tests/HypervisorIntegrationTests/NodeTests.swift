import BedTesting
import ClusterAPI
import Foundation
import Hypervisor
import NodeAgent
import TestBed
import Testing

extension RealLibvirt {
    /// CPU capabilities, device hot-plug and error reporting against a real libvirt node.
    @Suite(
        "A real libvirt node: CPU labels, hot-plug, errors", .serialized, .enabled(if: canRunTestBed),
        .testBed(nodes: 1))
    struct NodeTests {
        @Test("CPU labels come from the node's domain capabilities; an unusable custom model is not runnable")
        func cpuLabels() async throws {
            let bed = try currentBed()
            let connection = try await Connection.open(bed.node("a").uri)
            let capabilities = try await connection.cpuCapabilities()
            let labels = capabilities.nodeLabels()
            let hostModel = try #require(capabilities.hostModel, "TCG offers a host-model CPU")
            #expect(labels[CPULabels.hostModel + hostModel] == "true")
            #expect(labels[CPULabels.migration + hostModel] == "true")
            #expect(!capabilities.hostModelFeatures.isEmpty, "the expanded host-model CPU lists its features")
            for feature in capabilities.hostModelRequiredFeatures {
                #expect(labels[CPULabels.requiredFeature + feature] == "true")
            }
            let usable = try #require(capabilities.usableModels.first { !CPULabels.obsoleteModels.contains($0) })
            let unusable = try #require(capabilities.unusableModels.first, "some named models need features TCG lacks")
            #expect(labels[CPULabels.model + usable] == "true")
            #expect(labels[CPULabels.model + unusable] == nil)
            #expect(labels[CPULabels.model + "qemu64"] == nil, "obsolete models get no label")
            print(
                "node a: host model \(hostModel), \(capabilities.usableModels.count) usable models, e.g. \(usable); unusable e.g. \(unusable); \(labels.count) labels"
            )

            // Runnable: by the labels, and by the node itself.
            #expect(CPURequirement.model(usable).unsatisfied(toRunOn: labels) == nil)
            let reason = try #require(CPURequirement.model(unusable).unsatisfied(toRunOn: labels))
            #expect(reason.contains("\"\(unusable)\" is not usable"))
            var spec = DomainSpec(name: "cpu-check", memoryMiB: 64, cpu: .custom(model: unusable))
            let error = await #expect(throws: HypervisorError.self) { try await connection.checkCPU(of: spec) }
            #expect(error?.code == .invalidConfiguration)
            #expect(error?.message.contains("cannot run on \(connection.uri)") == true, "\(String(describing: error))")
            spec.cpu = .custom(model: usable)
            try await connection.checkCPU(of: spec)

            // A guest with the usable named model really starts and runs.
            let guest = try await RunningGuest.start(
                "cpu-usable", on: bed.node("a"), bed: bed, cpu: .custom(model: usable))
            let heartbeat = HeartbeatMonitor(paths: [guest.serialPath])
            #expect(await heartbeat.waitForTicks(2), "the guest with CPU model \(usable) runs")
            heartbeat.stop()
            await RunningGuest.remove("cpu-usable", from: bed)

            // Migration: a host-model guest needs the target to take its host model and features.
            var target = labels
            #expect(CPURequirement.hostModel.unsatisfied(toMigrateFrom: labels, to: target) == nil)
            target[CPULabels.migration + hostModel] = nil
            #expect(
                CPURequirement.hostModel.unsatisfied(toMigrateFrom: labels, to: target)?.contains(hostModel) == true)
            if let feature = capabilities.hostModelRequiredFeatures.first {
                var lacking = labels
                lacking[CPULabels.feature + feature] = nil
                #expect(
                    CPURequirement.hostModel.unsatisfied(toMigrateFrom: labels, to: lacking)?.contains(feature) == true)
            }
            await connection.close()
        }

        @Test("a USB disk is hot-plugged into the running guest and unplugged again")
        func hotPlug() async throws {
            let bed = try currentBed()
            let node = bed.node("a")
            let guest = try await RunningGuest.start("hotplug", on: node, bed: bed)
            let heartbeat = HeartbeatMonitor(paths: [guest.serialPath])
            defer { heartbeat.stop() }
            #expect(await heartbeat.waitForTicks(3), "the guest has booted")
            let extra = node.imagesDirectory + "/hotplug-extra.qcow2"
            try await GuestDisk.createBlank(at: extra, bytes: 16 << 20)
            try await guest.domain.attach(disk: .init(path: extra, target: "sda", bus: .usb))
            #expect(try await guest.domain.diskTargets() == ["vda", "sda"])
            try await guest.domain.detach(disk: "sda")
            #expect(try await guest.domain.diskTargets() == ["vda"])
            let error = await #expect(throws: HypervisorError.self) { try await guest.domain.detach(disk: "vdz") }
            #expect(error?.message.contains("no such disk") == true)
            #expect(await heartbeat.waitForTicks(2), "the guest kept running")
            await RunningGuest.remove("hotplug", from: bed)
            await guest.connection.close()
        }

        @Test("bad spec, unknown domain, unreachable URI and a missing disk each give a clear error")
        func clearErrors() async throws {
            let bed = try currentBed()
            let node = bed.node("a")
            let connection = try await Connection.open(node.uri)
            let bad = DomainSpec(name: "bad name!", memoryMiB: 8)
            let invalid = await #expect(throws: HypervisorError.self) { try await connection.define(bad) }
            #expect(invalid?.code == .invalidSpec)
            #expect(invalid?.message.contains("name must be") == true)

            let unknown = await #expect(throws: HypervisorError.self) {
                try await connection.domain(named: "no-such-vm")
            }
            #expect(unknown?.code == .domainNotFound)
            #expect(
                unknown?.message.contains("lookup of domain \"no-such-vm\" on \(node.uri)") == true,
                "\(String(describing: unknown))")

            let unreachable = "qemu+unix:///system?socket=\(bed.report.directory)/no-such-socket"
            let refused = await #expect(throws: HypervisorError.self) { try await Connection.open(unreachable) }
            #expect(refused?.code == .connectionFailed)
            #expect(refused?.message.contains("open of \(unreachable)") == true, "\(String(describing: refused))")

            // libvirt accepts the definition; QEMU cannot open the disk: start fails and names the domain.
            let spec = DomainSpec(
                name: "missing-disk", memoryMiB: 64, boot: .init(kernel: bed.report.guest.kernel),
                disks: [.init(path: node.imagesDirectory + "/absent.qcow2", target: "vda")])
            let domain = try await connection.define(spec)
            let start = await #expect(throws: HypervisorError.self) { try await domain.start() }
            #expect(start?.message.contains("start of domain \"missing-disk\"") == true)
            #expect(start?.message.contains("absent.qcow2") == true, "\(String(describing: start))")
            #expect(try await domain.state() == .shutOff)
            try await domain.undefine()
            await connection.close()
        }
    }
}

extension RealLibvirt.NodeTests {
    @Test("keepalive declares a frozen daemon's connection dead; a live one stays alive")
    func keepAlive() async throws {
        let bed = try currentBed()
        let node = bed.node("a")
        let connection = try await Connection.open(node.uri, keepAlive: KeepAlive(interval: 1, count: 2))
        try await Task.sleep(for: .seconds(3))
        #expect(await connection.isAlive, "an answering daemon keeps the connection alive")
        kill(node.libvirtdPID, SIGSTOP)
        let clock = ContinuousClock()
        let frozen = clock.now
        var dead = false
        while clock.now - frozen < .seconds(15) {
            if await !connection.isAlive {
                dead = true
                break
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        kill(node.libvirtdPID, SIGCONT)
        #expect(dead, "keepalive closed the connection to the frozen daemon")
        print("keepalive 1 s × 2: connection declared dead \(clock.now - frozen) after libvirtd froze")
        let error = await #expect(throws: HypervisorError.self) { try await connection.domainNames() }
        #expect(error?.code == .connectionFailed, "\(String(describing: error))")
        await connection.close()
        let fresh = try await Connection.open(node.uri)
        #expect(await fresh.isAlive, "the thawed daemon accepts new connections")
        await fresh.close()
    }
}
