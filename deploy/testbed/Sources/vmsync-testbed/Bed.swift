import Foundation
import TestBed

#if canImport(Glibc)
    import Glibc
#endif

/// A running bed: a switch namespace with a bridge, and per node a network namespace plugged into it, a private mount
/// namespace and a libvirtd — all children of this (subreaper) process, torn down by PID.
///
/// With several segments (one per cluster) each has its own switch and subnet (10.251.<segment>.0/24), and a router
/// namespace joins the switches; a test cuts a segment off by taking the router's port to it down. The switches'
/// hosts (where the clusters' controllers run) reach each other; the nodes reach the other segments' nodes too, unless
/// the bed is `isolated`: then a node reaches only the other segments' switch hosts (one port per cluster).
final class Bed {
    let directory: String
    let prefix: String
    let switchNamespace: String
    private(set) var nodes: [TestBedNode] = []
    private(set) var segments: [TestBedSegment] = []
    var routerNamespace: String { prefix + "-rt" }
    private var namespaces: [String] = []
    private let capabilitiesCache: String

    /// Bed names are `vmsb-<launcher pid>`, so stale beds of dead launchers can be found and removed.
    init(directory: String, cacheDirectory: String) {
        self.directory = directory
        prefix = "vmsb-\(getpid())"
        switchNamespace = prefix + "-sw"
        capabilitiesCache = cacheDirectory + "/libvirt-qemu-capabilities"
    }

    /// Segment `segment`'s first three octets.
    static func subnet(_ segment: Int) -> String { "10.251.\(segment)" }
    /// The switch's own address on the bed's network (the bridge's): where the bed's control plane runs, the
    /// controller and a monitoring Prometheus, reachable from every node.
    static var switchAddress: String { switchAddress(0) }
    static func switchAddress(_ segment: Int) -> String { "\(subnet(segment)).1" }
    /// The router's address on each segment.
    static func routerAddress(_ segment: Int) -> String { "\(subnet(segment)).254" }

    /// Creates the switches (and the router joining them), `count` nodes split evenly across the segments in order,
    /// then waits until every libvirtd answers.
    func up(count: Int, segments segmentCount: Int = 1, isolated: Bool = false) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for segment in 0..<segmentCount {
            let namespace = segment == 0 ? switchNamespace : "\(switchNamespace)\(segment)"
            try addNamespace(namespace)
            try ip(["-n", namespace, "link", "add", "br0", "type", "bridge"])
            try ip(["-n", namespace, "link", "set", "br0", "up"])
            try ip(["-n", namespace, "link", "set", "lo", "up"])
            try ip(["-n", namespace, "addr", "add", Self.switchAddress(segment) + "/24", "dev", "br0"])
            segments.append(
                TestBedSegment(
                    namespace: namespace, address: Self.switchAddress(segment),
                    routerPort: segmentCount > 1 ? "s\(segment)" : nil))
        }
        if segmentCount > 1 {
            try addNamespace(routerNamespace)
            try ip(["-n", routerNamespace, "link", "set", "lo", "up"])
            // The router forwards (/proc/sys/net is the writer's network namespace's).
            try Spawn.run(
                "ip", ["netns", "exec", routerNamespace, "/bin/sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
                timeout: 30)
            for segment in segments.indices {
                let port = "s\(segment)"
                try ip([
                    "-n", routerNamespace, "link", "add", port, "type", "veth", "peer", "name", "rt", "netns",
                    segments[segment].namespace,
                ])
                try ip(["-n", segments[segment].namespace, "link", "set", "rt", "master", "br0", "up"])
                try ip(["-n", routerNamespace, "addr", "add", Self.routerAddress(segment) + "/24", "dev", port])
                try ip(["-n", routerNamespace, "link", "set", port, "up"])
                // The switch host reaches every other segment through the router.
                try ip([
                    "-n", segments[segment].namespace, "route", "add", "10.251.0.0/16", "via",
                    Self.routerAddress(segment),
                ])
            }
        }
        self.isolated = isolated
        for index in 0..<count {
            let name = String(UnicodeScalar(UInt8(ascii: "a") + UInt8(index)))
            let segment = index * segmentCount / count
            nodes.append(
                try startNode(name: name, address: "\(Self.subnet(segment)).\(11 + index)", segment: segment))
            // The first node probes QEMU (~2-8 s); the others reuse its capabilities cache.
            if index == 0 {
                try waitForSocket(nodes[0])
                saveCapabilities(from: nodes[0])
            }
        }
        for node in nodes.dropFirst() { try waitForSocket(node) }
    }

    private var isolated = false

    private func startNode(name: String, address: String, segment: Int) throws -> TestBedNode {
        let namespace = "\(prefix)-\(name)"
        let root = "\(directory)/nodes/\(name)"
        let socketDirectory = root + "/sock"
        let images = root + "/images"
        let hostUUID = UUID().uuidString.lowercased()
        let files = FileManager.default
        for path in [
            "etc/libvirt", "var/lib/libvirt", "run/libvirt", "var/log/libvirt/qemu",
            "var/cache/libvirt/qemu/capabilities", "var/lib/vmsync",
        ] {
            try files.createDirectory(atPath: root + "/root/" + path, withIntermediateDirectories: true)
        }
        for path in [socketDirectory, images] {
            try files.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        for cached in (try? files.contentsOfDirectory(atPath: capabilitiesCache)) ?? [] {
            try? files.copyItem(
                atPath: capabilitiesCache + "/" + cached,
                toPath: root + "/root/var/cache/libvirt/qemu/capabilities/" + cached)
        }
        try Self.accounts(root: root)
        let logFile = root + "/libvirtd.log"
        try """
        # vmsync test bed node \(name)
        unix_sock_dir = "\(socketDirectory)"
        unix_sock_group = "root"
        auth_unix_rw = "none"
        auth_unix_ro = "none"
        host_uuid = "\(hostUUID)"
        keepalive_interval = 5
        keepalive_count = 5
        log_outputs = "3:file:\(logFile)"

        """.write(toFile: root + "/root/etc/libvirt/libvirtd.conf", atomically: true, encoding: .utf8)
        try """
        # vmsync test bed node \(name): QEMU as root without confinement, no virtlogd, migrations on this address
        user = "root"
        group = "root"
        security_driver = "none"
        dynamic_ownership = 0
        cgroup_controllers = [ ]
        namespaces = [ ]
        stdio_handler = "file"
        migration_address = "\(address)"
        migration_host = "\(address)"
        migration_port_min = 49152
        migration_port_max = 49215

        """.write(toFile: root + "/root/etc/libvirt/qemu.conf", atomically: true, encoding: .utf8)

        try addNamespace(namespace)
        let port = "p-\(name)"
        let switchNamespace = segments[segment].namespace
        try ip(["-n", switchNamespace, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace])
        try ip(["-n", switchNamespace, "link", "set", port, "master", "br0", "up"])
        try ip(["-n", namespace, "link", "set", "lo", "up"])
        try ip(["-n", namespace, "addr", "add", address + "/24", "dev", "eth0"])
        try ip(["-n", namespace, "link", "set", "eth0", "up"])
        if segments.count > 1 {
            // Routable: every other segment; isolated: only the other segments' switch hosts.
            let destinations =
                isolated
                ? segments.indices.filter { $0 != segment }.map { Self.switchAddress($0) + "/32" } : ["10.251.0.0/16"]
            for destination in destinations {
                try ip(["-n", namespace, "route", "add", destination, "via", Self.routerAddress(segment)])
            }
        }

        // Private bind mounts over libvirt's directories and the account files, then libvirtd in the foreground
        // (it stays our child; the QEMUs it daemonizes become ours as orphans).
        let script = """
            set -e
            for p in /etc/libvirt /var/lib/libvirt /run/libvirt /var/log/libvirt /var/cache/libvirt /var/lib/vmsync; do
              mkdir -p "$p"; mount --bind "\(root)/root$p" "$p"
            done
            mount --bind "\(root)/passwd" /etc/passwd
            mount --bind "\(root)/group" /etc/group
            exec /usr/sbin/libvirtd -f /etc/libvirt/libvirtd.conf -p "\(root)/libvirtd.pid"
            """
        let pid = try Spawn.start(
            "ip",
            ["netns", "exec", namespace, "unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script],
            log: root + "/libvirtd.out")
        return TestBedNode(
            name: name, uri: "qemu+unix:///system?socket=\(socketDirectory)/libvirt-sock", address: address,
            namespace: namespace, switchPort: port, libvirtdPID: pid, hostUUID: hostUUID, directory: root,
            imagesDirectory: images, logFile: logFile, segment: segment)
    }

    /// passwd and group with the accounts libvirt's QEMU driver looks up (`libvirt-qemu`, `kvm`).
    private static func accounts(root: String) throws {
        var passwd = (try? String(contentsOfFile: "/etc/passwd", encoding: .utf8)) ?? "root:x:0:0:root:/root:/bin/sh\n"
        var group = (try? String(contentsOfFile: "/etc/group", encoding: .utf8)) ?? "root:x:0:\n"
        if !passwd.hasSuffix("\n") { passwd += "\n" }
        if !group.hasSuffix("\n") { group += "\n" }
        if !group.contains("\nkvm:") && !group.hasPrefix("kvm:") { group += "kvm:x:64054:\n" }
        if !group.contains("\nlibvirt-qemu:") { group += "libvirt-qemu:x:64055:\n" }
        if !passwd.contains("\nlibvirt-qemu:") {
            passwd += "libvirt-qemu:x:64055:64054:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin\n"
        }
        try passwd.write(toFile: root + "/passwd", atomically: true, encoding: .utf8)
        try group.write(toFile: root + "/group", atomically: true, encoding: .utf8)
    }

    /// Waits until libvirtd accepts connections on its socket (or exits, which is an error with its output).
    private func waitForSocket(_ node: TestBedNode) throws {
        let path = node.uri.components(separatedBy: "socket=").last ?? ""
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if Reaper.shared.hasExited(node.libvirtdPID) {
                let output = (try? String(contentsOfFile: node.directory + "/libvirtd.out", encoding: .utf8)) ?? ""
                throw LaunchError(
                    "libvirtd of node \(node.name) exited: \(output.split(separator: "\n").suffix(3).joined(separator: " | "))"
                )
            }
            if Self.connects(to: path) {
                // The socket accepts before the QEMU driver has finished its start-up; virsh answers once it has.
                if (try? Spawn.run("virsh", ["-q", "-c", node.uri, "version"], timeout: 60)) != nil { return }
            }
            usleep(50_000)
        }
        throw LaunchError("libvirtd of node \(node.name) did not answer on \(path) within 60 s")
    }

    private static func connects(to path: String) -> Bool {
        let descriptor = UnixSocket.connect(path)
        if descriptor >= 0 { close(descriptor) }
        return descriptor >= 0
    }

    private func saveCapabilities(from node: TestBedNode) {
        let source = node.directory + "/root/var/cache/libvirt/qemu/capabilities"
        let files = FileManager.default
        try? files.createDirectory(atPath: capabilitiesCache, withIntermediateDirectories: true)
        for cached in (try? files.contentsOfDirectory(atPath: source)) ?? []
        where !files.fileExists(atPath: capabilitiesCache + "/" + cached) {
            try? files.copyItem(atPath: source + "/" + cached, toPath: capabilitiesCache + "/" + cached)
        }
    }

    private func addNamespace(_ name: String) throws {
        try ip(["netns", "add", name])
        namespaces.append(name)
    }

    private func ip(_ arguments: [String]) throws {
        try Spawn.run("ip", arguments, timeout: 30)
    }

    /// Stops every libvirtd (SIGTERM, then SIGKILL), kills every remaining child (the QEMUs) by PID, deletes the
    /// namespaces. Safe to call on a half-built bed.
    func down() {
        for node in nodes { kill(node.libvirtdPID, SIGTERM) }
        for node in nodes where Reaper.shared.wait(for: node.libvirtdPID, timeout: 5) == nil {
            kill(node.libvirtdPID, SIGKILL)
            _ = Reaper.shared.wait(for: node.libvirtdPID, timeout: 5)
        }
        let deadline = Date().addingTimeInterval(15)
        while case let children = Spawn.children(), !children.isEmpty, Date() < deadline {
            for child in children { kill(child, SIGKILL) }
            for child in children { _ = Reaper.shared.wait(for: child, timeout: 2) }
        }
        for namespace in namespaces.reversed() { _ = try? Spawn.run("ip", ["netns", "del", namespace], timeout: 30) }
        namespaces.removeAll()
    }

    /// Removes namespaces and processes left by launchers that died without tearing down (e.g. SIGKILLed).
    static func removeStale() {
        guard let list = try? Spawn.run("ip", ["netns", "list"]) else { return }
        for line in list.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            let parts = name.split(separator: "-")
            guard parts.count >= 3, parts[0] == "vmsb", let owner = pid_t(parts[1]), owner != getpid() else { continue }
            guard kill(owner, 0) != 0, errno == ESRCH else { continue }
            if let pids = try? Spawn.run("ip", ["netns", "pids", name]) {
                for pid in pids.split(separator: "\n").compactMap({ pid_t($0) }) { kill(pid, SIGKILL) }
            }
            _ = try? Spawn.run("ip", ["netns", "del", name])
            try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "vmsync-testbed-\(owner)")
        }
    }
}
