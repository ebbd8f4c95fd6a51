import ClusterAPI
import Foundation
import Hypervisor
import SyncController
import TestSupport
import Testing

@testable import NodeAgent

#if canImport(Glibc)
    import Glibc
#endif

@Suite("A VMI as a libvirt domain")
struct DomainMappingTests {
    let seedSpec: JSONValue = {
        let vm = try! YAML.documents(seedVirtualMachine)[0]
        return [
            "metadata": ["name": "vm1", "namespace": "default", "uid": "2f9c7d0e-0000-4000-8000-000000000001"],
            "spec": vm["spec"]!["template"]!["spec"]!,
        ]
    }()

    @Test("the pod network with masquerade becomes a user-mode NIC with a stable locally administered MAC")
    func masqueradeInterface() throws {
        let planned = try DomainMapping.interfaces(of: seedSpec)
        #expect(planned.count == 1)
        #expect(planned[0].name == "default")
        let mac = planned[0].mac
        #expect(mac.split(separator: ":").count == 6 && mac.hasPrefix("02:"), "\(mac)")
        #expect(try DomainMapping.interfaces(of: seedSpec) == planned, "the same VMI gets the same MAC")
        var other = seedSpec
        other["metadata"]?["uid"] = "2f9c7d0e-0000-4000-8000-000000000002"
        #expect(try DomainMapping.interfaces(of: other)[0].mac != mac, "a new VMI gets a new MAC")

        let domain = try DomainMapping.spec(
            for: seedSpec, disks: ["disk0": ("/var/lib/vmsync/images/d.qcow2", "qcow2")], serialSocket: "/run/s",
            clusterCPUModel: nil)
        let xml = try domain.xml()
        #expect(xml.contains("<interface type='user'>") && xml.contains("<mac address='\(mac)'/>"), "\(xml)")

        let status = NodeAgent.interfaceStatus(planned)
        #expect(status[0].ipAddress == DomainMapping.masqueradeNetwork.guestAddress && status[0].mac == mac)
    }

    @Test("a MAC from the spec is kept")
    func specifiedMAC() throws {
        var vmi = seedSpec
        vmi["spec"]?["domain"]?["devices"]?["interfaces"] = [
            ["name": "default", "masquerade": [:], "macAddress": "52:54:00:AB:CD:EF"]
        ]
        #expect(try DomainMapping.interfaces(of: vmi)[0].mac == "52:54:00:ab:cd:ef")
    }

    @Test("networks a node cannot provide are refused with the reason")
    func unsupportedNetworks() throws {
        var multus = seedSpec
        multus["spec"]?["networks"] = [["name": "default", "multus": ["networkName": "vlan10"]]]
        #expect {
            try DomainMapping.interfaces(of: multus)
        } throws: {
            ($0 as? APIError)?.message
                == "network \"default\": multus networks are not supported by vmsync nodes (use pod)"
        }

        var sriov = seedSpec
        sriov["spec"]?["domain"]?["devices"]?["interfaces"] = [["name": "default", "sriov": [:]]]
        #expect {
            try DomainMapping.interfaces(of: sriov)
        } throws: {
            ($0 as? APIError)?.message
                == "interface \"default\": binding sriov is not supported by vmsync nodes (use masquerade)"
        }

        var missing = seedSpec
        missing["spec"]?["networks"] = []
        #expect {
            try DomainMapping.interfaces(of: missing)
        } throws: { ($0 as? APIError)?.message == "interface \"default\" has no network of that name in spec.networks" }
    }
}

/// The mapping's functions on a VMI written as JSON, as the tests write them.
extension DomainMapping {
    static func interfaces(of vmi: JSONValue) throws -> [PlannedInterface] {
        try interfaces(of: VirtualMachineInstance(json: vmi))
    }

    static func spec(
        for vmi: JSONValue, disks: [String: (path: String, format: String)], serialSocket: String,
        clusterCPUModel: String?
    ) throws -> DomainSpec {
        try spec(
            for: VirtualMachineInstance(json: vmi), disks: disks, serialSocket: serialSocket,
            clusterCPUModel: clusterCPUModel)
    }

    static func metaData(of vmi: JSONValue) throws -> String {
        metaData(
            of: VirtualMachineInstance(
                metadata: try (vmi["metadata"] ?? [:]).decode(ObjectMeta.self), spec: VirtualMachineInstanceSpec()))
    }

    static func userData(of cloudInit: JSONValue, volume: String) throws -> String {
        try userData(of: cloudInit.decode(VirtualMachineInstanceSpec.Volume.CloudInitNoCloud.self), volume: volume)
    }
}

@Suite("cloud-init NoCloud seeds")
struct CloudInitTests {
    @Test(
        "the seed image is a FAT volume labelled CIDATA with user-data, meta-data and network-config that mtools reads back"
    )
    func seedImage() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cidata-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/seed.img"
        let vmi: JSONValue = ["metadata": ["name": "vm1", "uid": "u-1"]]
        let userData = try DomainMapping.userData(
            of: ["userDataBase64": .string(Data("#cloud-config\npassword: x\n".utf8).base64EncodedString())],
            volume: "ci")
        try await Volumes.cloudInitDisk(
            at: path, userData: userData, metaData: DomainMapping.metaData(of: vmi), networkData: "version: 2\n")
        let label = try await run("/usr/bin/mlabel", ["-s", "-i", path, "::"])
        #expect(label.stdout.contains("CIDATA"), "\(label.stdout)\(label.stderr)")
        #expect(try await run("/usr/bin/mtype", ["-i", path, "::/user-data"]).stdout == "#cloud-config\npassword: x\n")
        #expect(
            try await run("/usr/bin/mtype", ["-i", path, "::/meta-data"]).stdout
                == "instance-id: u-1\nlocal-hostname: vm1\n")
        #expect(try await run("/usr/bin/mtype", ["-i", path, "::/network-config"]).stdout == "version: 2\n")
        #expect(
            !FileManager.default.fileExists(atPath: path + ".partial")
                && !FileManager.default.fileExists(atPath: path + ".d"))
    }

    @Test("user data that is missing or not base64 is refused with the volume's name")
    func badUserData() {
        #expect { try DomainMapping.userData(of: [:], volume: "ci") } throws: {
            ($0 as? APIError)?.message == "volume \"ci\": cloudInitNoCloud needs userData or userDataBase64"
        }
        #expect { try DomainMapping.userData(of: ["userDataBase64": "%%%"], volume: "ci") } throws: {
            ($0 as? APIError)?.message == "volume \"ci\": cloudInitNoCloud.userDataBase64 is not base64-encoded UTF-8"
        }
    }
}

@Suite("Child processes")
struct ChildProcessTests {
    /// A socket of ours, not close-on-exec (as SwiftNIO's are not), must not reach a child: the child would keep the
    /// connection open after we close it (a tunnel's refusal then never reaches its client).
    @Test("children get stdin, stdout and stderr and nothing else of ours")
    func noInheritedDescriptors() async throws {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(socket > 2)
        defer { close(socket) }
        // The shell lists its own descriptors without a pipe or a child; 3 is the directory its glob reads.
        let listing = "for f in /proc/$$/fd/*; do printf '%s ' ${f##*/}; done"
        let viaTestSupport = try await run("/bin/sh", ["-c", listing])
        #expect(viaTestSupport.stdout == "0 1 2 3 ", "\(viaTestSupport)")
        let viaAgent = try await Volumes.tool("/bin/sh", ["-c", listing])
        #expect(viaAgent == "0 1 2 3 ", "\(viaAgent)")
    }
}

@Suite("qcow2 images written without qemu-img")
struct QCOW2Tests {
    /// QEMU writing into such an image is shown by the migration bed tests: incoming disks are created this way and
    /// compared after the block copy.
    @Test(
        "an empty image qemu-img checks clean, with the size asked for; an existing file is never overwritten",
        arguments: [UInt64(64 << 20), 80 << 20, 1 << 30, 3 << 40])
    func emptyImage(size: UInt64) async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("empty-\(UUID().uuidString).qcow2")
            .path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try QCOW2.create(at: path, virtualSize: size)
        let check = try await run("/usr/bin/qemu-img", ["check", path])
        #expect(check.status == 0 && check.stdout.contains("No errors were found"), "\(check.stdout)\(check.stderr)")
        let info = try JSONValue.parse(
            Data(try await run("/usr/bin/qemu-img", ["info", "--output", "json", path]).stdout.utf8))
        #expect(info["virtual-size"]?.int == Int64(size) && info["format"] == "qcow2")
        #expect(throws: (any Error).self) { try QCOW2.create(at: path, virtualSize: size) }
    }
}

@Suite("Migration settings from the KubeVirt configuration")
struct MigrationSettingsTests {
    @Test(
        "KubeVirt's defaults when unset; bandwidth, timeouts, auto-converge, post-copy and vmsync's downtime limit when set"
    )
    func settings() throws {
        /// The settings of a KubeVirt object written as JSON.
        func settings(_ kubeVirt: JSONValue) throws -> NodeAgent.MigrationSettings {
            NodeAgent.migrationSettings(
                try kubeVirt["spec"]?["configuration"]?["migrations"]?.decode(KubeVirt.Migrations.self))
        }
        let defaults = NodeAgent.migrationSettings(nil)
        #expect(
            defaults.bandwidthMiB == nil && defaults.maxDowntime == nil && !defaults.autoConverge
                && !defaults.allowPostCopy)
        #expect(defaults.timeouts == .kubeVirtDefaults)
        // vmsync's default: start at 50 ms and ramp up to QEMU's 300 ms.
        #expect(defaults.initialDowntime == .milliseconds(50))
        let kubeVirt: JSONValue = [
            "spec": [
                "configuration": [
                    "migrations": [
                        "bandwidthPerMigration": "64Mi", "completionTimeoutPerGiB": 20, "progressTimeout": 30,
                        "allowAutoConverge": true,
                        "allowPostCopy": true, "maxDowntimeMilliseconds": 100, "parallelMigrationConnections": 3,
                        "allowUnsafeLiveMemoryCopy": true,
                    ]
                ]
            ]
        ]
        // The schema takes vmsync's fields beside KubeVirt's.
        var object = ClusterDefaults.kubeVirt
        object["spec"] = kubeVirt["spec"]
        #expect(throws: Never.self) { try Kinds.kubeVirt.validate(object) }
        let set = try settings(kubeVirt)
        #expect(
            set.bandwidthMiB == 64 && set.autoConverge && set.allowPostCopy && set.maxDowntime == .milliseconds(100))
        #expect(set.parallelConnections == 3 && defaults.parallelConnections == nil)
        #expect(
            set.allowUnsafeLiveMemoryCopy && !defaults.allowUnsafeLiveMemoryCopy,
            "a TCG guest on old QEMU is paused for its memory copy unless this is set")
        #expect(set.initialDowntime == .milliseconds(50))
        // An initial limit above the maximum is capped to it (a fixed limit); one set explicitly is taken.
        let fixed = try settings(["spec": ["configuration": ["migrations": ["maxDowntimeMilliseconds": 30]]]])
        #expect(fixed.initialDowntime == .milliseconds(30) && fixed.maxDowntime == .milliseconds(30))
        let ramp = try settings(["spec": ["configuration": ["migrations": ["initialDowntimeMilliseconds": 20]]]])
        #expect(ramp.initialDowntime == .milliseconds(20) && ramp.maxDowntime == nil)
        #expect(set.timeouts == MigrationTimeouts(completionPerGiB: .seconds(20), progress: .seconds(30)))
    }
}
