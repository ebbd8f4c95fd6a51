import Foundation
import TestBed

#if canImport(Glibc)
    import Glibc
#endif

/// Builds the tiny test guest from Debian packages and caches it: the cloud kernel (downloaded, unpacked, never
/// installed) and a busybox initramfs whose init loads the virtio modules, prints `TICK n uptime` on the serial
/// console about every 100 ms and writes the same line to the data disk; a network interface, when it has one, is
/// configured by DHCP and its address printed as `vmsync-guest: address eth0 A/P`.
struct GuestBuilder {
    /// Where the built guest is kept between runs.
    let cacheDirectory: String

    /// The virtio modules, in the order their symbols need.
    static let modules = [
        "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk",
        "failover", "net_failover", "virtio_net",
    ]
    /// Bumped whenever the init script or the layout changes, so caches rebuild.
    static let layoutVersion = "3"

    /// The cached guest, built first if missing.
    func build() throws -> GuestFiles {
        let kernel = cacheDirectory + "/vmlinuz"
        let initrd = cacheDirectory + "/initrd.img"
        let stamp = cacheDirectory + "/stamp"
        let disk = cacheDirectory + "/disk.img"
        if let existing = try? String(contentsOfFile: stamp, encoding: .utf8),
            existing.hasPrefix(Self.layoutVersion + " "),
            FileManager.default.fileExists(atPath: kernel), FileManager.default.fileExists(atPath: initrd),
            FileManager.default.fileExists(atPath: disk)
        {
            return GuestFiles(
                kernel: kernel, initrd: initrd, bootDisk: disk,
                kernelRelease: String(existing.dropFirst(Self.layoutVersion.count + 1)))
        }
        try FileManager.default.createDirectory(atPath: cacheDirectory, withIntermediateDirectories: true)
        let work = cacheDirectory + "/work-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }

        let kernelPackage = try Self.kernelPackage()
        try download([kernelPackage, "busybox-static"], into: work)
        let debs = try FileManager.default.contentsOfDirectory(atPath: work).filter { $0.hasSuffix(".deb") }
        for deb in debs { try Spawn.run("dpkg-deb", ["-x", work + "/" + deb, work + "/root"]) }

        let boot = work + "/root/boot"
        guard
            let vmlinuz = try FileManager.default.contentsOfDirectory(atPath: boot).first(where: {
                $0.hasPrefix("vmlinuz-")
            })
        else {
            throw LaunchError("\(kernelPackage) has no vmlinuz")
        }
        let release = String(vmlinuz.dropFirst("vmlinuz-".count))
        var archive = CpioArchive()
        for directory in ["bin", "dev", "proc", "sys", "lib", "lib/modules", "etc"] { archive.directory(directory) }
        archive.characterDevice("dev/console", major: 5, minor: 1)
        archive.file(
            "bin/busybox", contents: try Data(contentsOf: URL(fileURLWithPath: work + "/root/bin/busybox")),
            executable: true)
        let moduleRoot = work + "/root/lib/modules/\(release)/kernel"
        let allModules = FileManager.default.enumerator(atPath: moduleRoot)?.compactMap { $0 as? String } ?? []
        for module in Self.modules {
            guard let relative = allModules.first(where: { ($0 as NSString).lastPathComponent == module + ".ko" })
            else {
                throw LaunchError("kernel \(release) has no \(module).ko")
            }
            archive.file(
                "lib/modules/\(module).ko",
                contents: try Data(contentsOf: URL(fileURLWithPath: moduleRoot + "/" + relative)))
        }
        archive.file("init", contents: Data(Self.initScript.utf8), executable: true)
        archive.file("etc/udhcpc.script", contents: Data(Self.dhcpScript.utf8), executable: true)

        try FileManager.default.copyItem(atPath: boot + "/" + vmlinuz, toPath: work + "/vmlinuz")
        try archive.finish().write(to: URL(fileURLWithPath: work + "/initrd.img"))
        try Self.makeBootDisk(
            at: work + "/disk.img", kernel: work + "/vmlinuz", initrd: work + "/initrd.img", work: work)
        for (name, target) in [("vmlinuz", kernel), ("initrd.img", initrd), ("disk.img", disk)] {
            guard rename(work + "/" + name, target) == 0 else {
                throw LaunchError("cannot move \(name) into \(cacheDirectory)")
            }
        }
        try "\(Self.layoutVersion) \(release)".write(toFile: stamp, atomically: true, encoding: .utf8)
        return GuestFiles(kernel: kernel, initrd: initrd, bootDisk: disk, kernelRelease: release)
    }

    /// A 64 MiB raw disk that boots the guest by itself: a partitionless FAT volume ("superfloppy") with syslinux in
    /// its boot sector, the kernel and the initramfs — written with mtools, no loop device or mount. The files sit in
    /// the first 32 MiB (the static region); the guest's tick sector at 48 MiB lies in free clusters.
    private static func makeBootDisk(at path: String, kernel: String, initrd: String, work: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil) else {
            throw LaunchError("cannot create \(path)")
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: 64 << 20)
        try handle.close()
        try Spawn.run("mformat", ["-i", path, "-v", "VMSYNC", "-t", "64", "-h", "64", "-s", "32", "::"])
        try Spawn.run("syslinux", ["--install", path])
        let config = work + "/syslinux.cfg"
        try
            "DEFAULT vmsync\nPROMPT 0\nTIMEOUT 0\nLABEL vmsync\n  KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND \(GuestFiles.commandLine)\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        try Spawn.run("mcopy", ["-i", path, kernel, initrd, config, "::/"])
    }

    /// The versioned kernel package behind Debian's `linux-image-cloud-amd64`.
    private static func kernelPackage() throws -> String {
        let output = try Spawn.run("apt-cache", ["depends", "linux-image-cloud-amd64"])
        guard let line = output.split(separator: "\n").first(where: { $0.contains("Depends: linux-image-") }),
            let name = line.split(separator: " ").last
        else {
            throw LaunchError("apt-cache knows no linux-image-cloud-amd64; run apt-get update")
        }
        return String(name)
    }

    /// `apt-get download`, with one `apt-get update` if the package lists are stale.
    private func download(_ packages: [String], into directory: String) throws {
        let previous = FileManager.default.currentDirectoryPath
        _ = FileManager.default.changeCurrentDirectoryPath(directory)
        defer { _ = FileManager.default.changeCurrentDirectoryPath(previous) }
        do {
            try Spawn.run("apt-get", ["download", "-q"] + packages, timeout: 300)
        } catch {
            try Spawn.run("apt-get", ["update", "-q"], timeout: 300)
            try Spawn.run("apt-get", ["download", "-q"] + packages, timeout: 300)
        }
    }

    /// The guest's /init. Ticks go to the console and to sector 98304 (48 MiB) of /dev/vda; the host fills the
    /// disk's first 32 MiB with a known pattern the guest never touches (the "static region").
    static let initScript = """
        #!/bin/busybox sh
        /bin/busybox --install -s /bin
        mount -t proc proc /proc
        mount -t sysfs sys /sys
        mount -t devtmpfs dev /dev
        exec >/dev/console 2>&1
        for m in \(modules.joined(separator: " ")); do
          insmod /lib/modules/$m.ko || echo "vmsync-guest: insmod $m failed"
        done
        i=0
        while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
        [ -b /dev/vda ] && echo "vmsync-guest: disk vda ready" || echo "vmsync-guest: no disk"
        if [ -e /sys/class/net/eth0 ]; then
          ip link set lo up
          ip link set eth0 up
          udhcpc -i eth0 -s /etc/udhcpc.script -q -n -t 10 -T 1 >/dev/null 2>&1 &
        fi
        n=0
        while true; do
          n=$((n+1))
          read up idle < /proc/uptime
          echo "TICK $n $up"
          if [ -b /dev/vda ]; then
            printf '%-511s\\n' "TICK $n $up" | dd of=/dev/vda bs=512 seek=98304 count=1 conv=notrunc,fsync 2>/dev/null
          fi
          sleep 0.1
        done

        """

    /// busybox udhcpc's hook: applies the lease and says which address the guest holds.
    static let dhcpScript = """
        #!/bin/busybox sh
        case "$1" in
          bound|renew)
            prefix=24
            case "$mask" in 255.255.255.0) prefix=24;; 255.255.0.0) prefix=16;; 255.0.0.0) prefix=8;; esac
            ip addr flush dev "$interface"
            ip addr add "$ip/$prefix" dev "$interface"
            [ -n "$router" ] && ip route add default via ${router%% *} dev "$interface"
            echo "vmsync-guest: address $interface $ip/$prefix" >/dev/console
            ;;
        esac

        """
}
