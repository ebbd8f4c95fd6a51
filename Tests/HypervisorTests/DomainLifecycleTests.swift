import Foundation
import Testing

@testable import Hypervisor

/// The fast tier: libvirt's own `test:///default` driver (in the libvirt client library, no daemon). Its state is
/// shared by all connections of this process while any is open, so every test uses domain names of its own.
@Suite("Hypervisor on libvirt's test driver")
struct DomainLifecycleTests {
    let uri = "test:///default"

    func tinyGuest(_ name: String) -> DomainSpec {
        DomainSpec(
            name: name,
            uuid: UUID(),
            memoryMiB: 128,
            cpu: .custom(model: "qemu64"),
            tcgCacheMiB: 32,
            boot: .init(kernel: "/var/lib/vmsync/guest/vmlinuz", initrd: "/var/lib/vmsync/guest/initrd.img"),
            disks: [.init(path: "/var/lib/vmsync/disks/\(name)-data.qcow2", target: "vda")],
            serialSocket: "/run/vmsync/\(name).serial",
            interfaces: [.init(source: .user, macAddress: "52:54:00:12:34:56")],
            usbController: true
        )
    }

    @Test("define, start, state, destroy and undefine a domain from a DomainSpec")
    func lifecycle() async throws {
        let connection = try await Connection.open(uri)
        let spec = tinyGuest("vm1")
        let domain = try await connection.define(spec)
        #expect(try await domain.state() == .shutOff)
        try await domain.start()
        #expect(try await domain.state() == .running)
        #expect(try await connection.domainNames().contains("vm1"))

        let xml = try await domain.xml()
        #expect(xml.contains("<memory unit='KiB'>131072</memory>"))
        #expect(xml.contains("/var/lib/vmsync/disks/vm1-data.qcow2"))
        #expect(xml.contains(spec.uuid!.uuidString.lowercased()))
        #expect(xml.contains("qemu-xhci"))
        #expect(xml.contains("<model fallback='forbid'>qemu64</model>"))

        try await domain.destroy()
        #expect(try await domain.state() == .shutOff)
        try await domain.undefine()
        #expect(try await !connection.domainNames().contains("vm1"))
        await connection.close()
    }

    @Test("an unknown domain is reported as not found, naming the operation, the domain and the URI")
    func unknownDomain() async throws {
        let connection = try await Connection.open(uri)
        let error = await #expect(throws: HypervisorError.self) {
            try await connection.domain(named: "no-such-vm")
        }
        #expect(error?.code == .domainNotFound)
        #expect(error?.message.hasPrefix("lookup of domain \"no-such-vm\" on test:///default") == true)
        await connection.close()
    }

    @Test("starting a running domain is an invalid operation with libvirt's reason")
    func invalidOperation() async throws {
        let connection = try await Connection.open(uri)
        let domain = try await connection.define(tinyGuest("vm2"))
        try await domain.start()
        let error = await #expect(throws: HypervisorError.self) { try await domain.start() }
        // The QEMU driver reports this as OPERATION_INVALID; the test driver as an internal error.
        #expect(error?.code == .operationInvalid || error?.libvirtCode == 1, "\(String(describing: error))")
        #expect(error?.message.contains("start of domain \"vm2\"") == true)
        #expect(error?.message.contains("already running") == true, "\(String(describing: error))")
        await connection.close()
    }

    @Test("an unreachable URI fails to connect and names it")
    func unreachable() async throws {
        let bogus = "qemu+unix:///system?socket=/nonexistent/vmsync/libvirt-sock"
        let error = await #expect(throws: HypervisorError.self) { try await Connection.open(bogus) }
        #expect(error?.code == .connectionFailed)
        #expect(error?.message.contains(bogus) == true)
        #expect(error?.message.contains("No such file or directory") == true, "\(String(describing: error))")
    }

    @Test("a closed connection refuses further calls")
    func closed() async throws {
        let connection = try await Connection.open(uri)
        await connection.close()
        await connection.close()
        #expect(await !connection.isAlive)
        let error = await #expect(throws: HypervisorError.self) { try await connection.domainNames() }
        #expect(error?.code == .connectionFailed)
        #expect(error?.message.contains("is closed") == true)
    }

    @Test(
        "bad specs are refused before libvirt sees them, naming the field",
        arguments: [
            (DomainSpec(name: "", memoryMiB: 128), "name must be"),
            (DomainSpec(name: "bad name", memoryMiB: 128), "name must be"),
            (DomainSpec(name: "vm", memoryMiB: 4), "memoryMiB 4"),
            (DomainSpec(name: "vm", memoryMiB: 128, vcpus: 0), "vcpus 0"),
            (DomainSpec(name: "vm", memoryMiB: 128, cpu: .custom(model: "")), "custom CPU model"),
            (
                DomainSpec(name: "vm", memoryMiB: 128, disks: [.init(path: "relative.qcow2", target: "vda")]),
                "disks[0].path"
            ),
            (
                DomainSpec(
                    name: "vm", memoryMiB: 128,
                    disks: [.init(path: "/a", target: "vda"), .init(path: "/b", target: "vda")]),
                "disks[1].target \"vda\" is used twice"
            ),
            (DomainSpec(name: "vm", memoryMiB: 128, disks: [.init(path: "/a", target: "sda")]), "virtio name"),
            (DomainSpec(name: "vm", memoryMiB: 128, serialSocket: "tmp/s"), "serialSocket"),
            (
                DomainSpec(name: "vm", memoryMiB: 128, interfaces: [.init(source: .user, macAddress: "zz")]),
                "macAddress"
            ),
            (DomainSpec(name: "vm", memoryMiB: 128, boot: .init(kernel: "vmlinuz")), "boot.kernel"),
        ])
    func badSpecs(spec: DomainSpec, expected: String) async throws {
        let error = #expect(throws: HypervisorError.self) { try spec.xml() }
        #expect(error?.code == .invalidSpec)
        #expect(error?.message.contains(expected) == true, "\(String(describing: error))")
    }

    @Test("XML that libvirt refuses comes back as an invalid configuration with libvirt's words")
    func libvirtRefusesXML() async throws {
        let connection = try await Connection.open(uri)
        let error = await #expect(throws: HypervisorError.self) {
            try await connection.define(xml: "<domain type='qemu'><name>x</name></domain>", name: "x")
        }
        #expect(error?.code == .invalidConfiguration || error?.code == .libvirt, "\(String(describing: error))")
        #expect(error?.message.hasPrefix("definition of domain \"x\" on test:///default: ") == true)
        await connection.close()
    }

    @Test("names and paths are escaped in the generated XML")
    func escaping() throws {
        let spec = DomainSpec(name: "vm", memoryMiB: 64, boot: .init(kernel: "/k", commandLine: "a<b & c='d'"))
        let xml = try spec.xml()
        #expect(xml.contains("<cmdline>a&lt;b &amp; c=&apos;d&apos;</cmdline>"))
    }
}

@Suite("Domain lifecycle events")
struct DomainEventTests {
    @Test("defining, starting, destroying and undefining a domain arrive as events, in order", .timeLimit(.minutes(1)))
    func lifecycleEvents() async throws {
        let connection = try await Connection.open("test:///default")
        let events = try await connection.lifecycleEvents()
        let domain = try await connection.define(DomainSpec(name: "evented", memoryMiB: 64))
        try await domain.start()
        try await domain.destroy()
        try await domain.undefine()

        var seen: [DomainLifecycleEvent.Kind] = []
        for await event in events where event.domain == "evented" {
            seen.append(event.kind)
            #expect(!event.isMigration)
            if seen.count == 4 { break }
        }
        #expect(seen == [.defined, .started, .stopped, .undefined])
        await connection.close()
    }
}

extension DomainEventTests {
    @Test("closing the connection ends the event stream", .timeLimit(.minutes(1)))
    func streamEndsOnClose() async throws {
        let connection = try await Connection.open("test:///default")
        let events = try await connection.lifecycleEvents()
        await connection.close()
        var count = 0
        for await event in events where event.domain == "never-defined" { count += 1 }
        #expect(count == 0)
    }
}
