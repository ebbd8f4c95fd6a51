/// The built tiny guest.
public struct GuestFiles: Codable, Sendable, Hashable {
    /// The kernel image.
    public var kernel: String
    /// The busybox initramfs with the heartbeat init.
    public var initrd: String
    /// A raw 64 MiB disk image that boots the same guest from BIOS (syslinux), for VMs without direct kernel boot.
    public var bootDisk: String
    /// The kernel release, e.g. "6.1.0-56-cloud-amd64".
    public var kernelRelease: String

    /// Describes a built guest.
    public init(kernel: String, initrd: String, bootDisk: String, kernelRelease: String) {
        self.kernel = kernel
        self.initrd = initrd
        self.bootDisk = bootDisk
        self.kernelRelease = kernelRelease
    }

    /// The kernel command line the guest expects (console on the first serial port).
    public static let commandLine = "console=ttyS0 quiet"
}

/// One libvirt "node" of a running test bed.
public struct TestBedNode: Codable, Sendable, Hashable {
    /// Short name ("a", "b", …).
    public var name: String
    /// The libvirt URI reachable from the host and from the other nodes (a unix socket outside the node's mounts).
    public var uri: String
    /// The node's address on the bed's network (inside its network namespace).
    public var address: String
    /// Its network namespace (`ip netns exec NAME …`).
    public var namespace: String
    /// The interface that plugs it into the bed's switch, inside the switch namespace (down = link cut).
    public var switchPort: String
    /// The libvirtd PID.
    public var libvirtdPID: Int32
    /// libvirtd's host UUID (distinct per node, or libvirt refuses to migrate "to the same host").
    public var hostUUID: String
    /// The node's private directory (configuration, state, logs).
    public var directory: String
    /// Where guests' disk images and serial sockets for this node go.
    public var imagesDirectory: String
    /// libvirtd's log file.
    public var logFile: String
    /// The segment (switch) the node is plugged into.
    public var segment: Int

    /// The node's private /var/lib/vmsync (local storage classes live there), as the host sees it.
    public var localStorage: String { directory + "/root/var/lib/vmsync" }

    /// Describes a node.
    public init(
        name: String, uri: String, address: String, namespace: String, switchPort: String, libvirtdPID: Int32,
        hostUUID: String, directory: String, imagesDirectory: String, logFile: String, segment: Int = 0
    ) {
        self.segment = segment
        self.name = name
        self.uri = uri
        self.address = address
        self.namespace = namespace
        self.switchPort = switchPort
        self.libvirtdPID = libvirtdPID
        self.hostUUID = hostUUID
        self.directory = directory
        self.imagesDirectory = imagesDirectory
        self.logFile = logFile
    }
}

/// One switch of the bed (a cluster's network when the bed has several).
public struct TestBedSegment: Codable, Sendable, Hashable {
    /// The namespace holding the bridge.
    public var namespace: String
    /// The bridge's address: the segment's switch host (where a cluster's controller runs).
    public var address: String
    /// The router's port to this segment, inside the router namespace (down = the segment cut off from the others);
    /// nil on a bed of one segment.
    public var routerPort: String?

    /// Describes a segment.
    public init(namespace: String, address: String, routerPort: String?) {
        self.namespace = namespace
        self.address = address
        self.routerPort = routerPort
    }
}

/// What `vmsync-testbed up` writes once every node answers: how to reach each node, and what to stop.
public struct TestBedReport: Codable, Sendable, Hashable {
    /// The bed's directory.
    public var directory: String
    /// The launcher's PID: SIGTERM tears the bed down.
    public var launcherPID: Int32
    /// The namespace holding the bridge the nodes are plugged into.
    public var switchNamespace: String
    /// The bridge's address inside that namespace, on the nodes' network: a process run in the switch namespace
    /// (the cluster's controller, a monitoring Prometheus) listens there and reaches every node.
    public var switchAddress: String
    /// A directory every node sees (shared storage: disks there are not copied by a migration).
    public var sharedDirectory: String
    /// The tiny guest.
    public var guest: GuestFiles
    /// The nodes, in order.
    public var nodes: [TestBedNode]
    /// The switches (segment 0's is `switchNamespace` at `switchAddress`).
    public var segments: [TestBedSegment]
    /// The namespace routing between the segments; nil on a bed of one segment.
    public var routerNamespace: String?

    /// Describes a bed.
    public init(
        directory: String, launcherPID: Int32, switchNamespace: String, switchAddress: String, sharedDirectory: String,
        guest: GuestFiles, nodes: [TestBedNode], segments: [TestBedSegment], routerNamespace: String?
    ) {
        self.segments = segments
        self.routerNamespace = routerNamespace
        self.switchAddress = switchAddress
        self.directory = directory
        self.sharedDirectory = sharedDirectory
        self.launcherPID = launcherPID
        self.switchNamespace = switchNamespace
        self.guest = guest
        self.nodes = nodes
    }

    /// The report's file name inside the bed directory.
    public static let fileName = "testbed.json"
}
