import Foundation
import Hypervisor
import TestBed
import TestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// `tcg-memory-copy`: is a TCG guest's memory intact after QEMU copies it? Two plain QEMUs (no libvirt, no vmsync)
/// run the tiny guest; the source migrates to the destination over a unix socket, live (the guest runs during the
/// copy, 16 MiB/s so there are several passes) or paused (`stop`, then the copy). Afterwards both are paused — the
/// source after the switchover, the destination never started (`-S`) — and `pmemsave` writes each one's RAM to a
/// file: every page that differs is a write the copy lost. This is the measurement behind vmsync's choice to pause
/// TCG guests for the memory copy on QEMU before 9.0 (`MemoryCopy.liveCopyHazard`).
enum TCGMemoryCopyBenchmark {
    static func run(rounds: Int) async throws {
        // The test bed's launcher builds the tiny guest (or finds it cached) and says where it is.
        let built = try await TestSupport.run(TestBed.launcherPath, ["guest"], timeout: 600)
        guard built.status == 0, let guest = try? JSONDecoder().decode(GuestFiles.self, from: Data(built.stdout.utf8))
        else {
            throw TestBedError("tcg-memory-copy: \(TestBed.launcherPath) guest failed: \(built.stderr)")
        }
        let (kernel, initrd) = (guest.kernel, guest.initrd)
        let version = try await qemuVersion()
        let hazard = MemoryCopy.liveCopyHazard(accelerator: .qemu, qemu: version)
        print(
            "tcg-memory-copy: QEMU \(version), tiny guest (128 MiB), \(rounds) rounds of a live and a paused copy; vmsync's choice here: \(hazard == nil ? "live" : "paused")"
        )
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "vmsync-tcg-\(UUID().uuidString.prefix(8))"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // A blank data disk (the guest writes its ticks there).
        FileManager.default.createFile(atPath: directory + "/disk.img", contents: nil)
        let disk = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + "/disk.img"))
        try disk.truncate(atOffset: 64 << 20)
        try disk.close()
        var damaged: [MemoryCopy: Int] = [:]
        for round in 1...rounds {
            for copy in [MemoryCopy.live, .paused] {
                let outcome = try await migrate(copy: copy, directory: directory, kernel: kernel, initrd: initrd)
                if outcome.differingPages > 0 { damaged[copy, default: 0] += 1 }
                print(
                    String(
                        format: "  %2d %-6@ %d dirty-sync passes, downtime %d ms, %d of %d pages differ%@", round,
                        "\(copy)" as NSString,
                        outcome.passes, outcome.downtimeMs, outcome.differingPages, outcome.pages,
                        (outcome.differingPages > 0
                            ? "  (first at \(outcome.firstDifferences.map { String(format: "0x%llx", $0) }.joined(separator: ", ")))"
                            : "") as NSString))
            }
        }
        print(
            "tcg-memory-copy: guest memory differed after \(damaged[.live] ?? 0) of \(rounds) live copies and \(damaged[.paused] ?? 0) of \(rounds) paused copies"
        )
    }

    struct Outcome {
        var passes = 0, downtimeMs = 0, pages = 0, differingPages = 0
        var firstDifferences: [UInt64] = []
    }

    static func qemuVersion() async throws -> HypervisorVersion {
        let result = try await TestSupport.run("/usr/bin/qemu-system-x86_64", ["--version"])
        // "QEMU emulator version 7.2.22 (Debian …)"
        let words = result.stdout.split(separator: " ")
        guard let index = words.firstIndex(of: "version"), index + 1 < words.count else {
            throw TestBedError("tcg-memory-copy: cannot read QEMU's version from \"\(result.stdout)\"")
        }
        let parts = words[index + 1].split(separator: ".").map { UInt($0) ?? 0 } + [0, 0, 0]
        return HypervisorVersion(parts[0], parts[1], parts[2])
    }

    static func migrate(copy: MemoryCopy, directory: String, kernel: String, initrd: String) async throws -> Outcome {
        let memory = 128 << 20
        func qemu(_ name: String, _ extra: [String]) throws -> ChildProcess {
            try? FileManager.default.removeItem(atPath: "\(directory)/\(name).qmp")
            return try ChildProcess(
                "/usr/bin/qemu-system-x86_64",
                [
                    "-machine", "pc,accel=tcg", "-m", "128", "-nographic", "-nodefaults",
                    "-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 quiet",
                    "-drive", "file=\(directory)/disk.img,if=virtio,format=raw,file.locking=off",
                    "-serial", "file:\(directory)/\(name).console", "-qmp",
                    "unix:\(directory)/\(name).qmp,server=on,wait=off",
                ] + extra)
        }
        let source = try qemu("source", [])
        let destination = try qemu("destination", ["-S", "-incoming", "unix:\(directory)/migration.sock"])
        defer {
            kill(source.pid, SIGKILL)
            kill(destination.pid, SIGKILL)
        }
        let outcome = try await onThread { () throws -> Outcome in
            let toSource = try QMP(path: "\(directory)/source.qmp")
            let toDestination = try QMP(path: "\(directory)/destination.qmp")
            defer {
                toSource.close()
                toDestination.close()
            }
            // The guest boots (~7 s) and settles into its tick loop.
            Thread.sleep(forTimeInterval: 9)
            let bandwidth = copy == .live ? 16 << 20 : 10 << 30
            _ = try toSource.execute("migrate-set-parameters", ["max-bandwidth": bandwidth, "downtime-limit": 20])
            if copy == .paused { _ = try toSource.execute("stop") }
            _ = try toSource.execute("migrate", ["uri": "unix:\(directory)/migration.sock"])
            var status: [String: Any] = [:]
            let deadline = Date().addingTimeInterval(120)
            repeat {
                Thread.sleep(forTimeInterval: 0.05)
                status = try toSource.execute("query-migrate") as? [String: Any] ?? [:]
            } while !["completed", "failed", "cancelled"].contains(status["status"] as? String ?? "")
                && Date() < deadline
            guard status["status"] as? String == "completed" else {
                throw TestBedError("tcg-memory-copy: migration ended \(status)")
            }
            var outcome = Outcome()
            outcome.passes = (status["ram"] as? [String: Any])?["dirty-sync-count"] as? Int ?? 0
            outcome.downtimeMs = status["downtime"] as? Int ?? 0
            _ = try toSource.execute("pmemsave", ["val": 0, "size": memory, "filename": "\(directory)/source.mem"])
            _ = try toDestination.execute(
                "pmemsave", ["val": 0, "size": memory, "filename": "\(directory)/destination.mem"])
            let before = try Data(contentsOf: URL(fileURLWithPath: "\(directory)/source.mem"))
            let after = try Data(contentsOf: URL(fileURLWithPath: "\(directory)/destination.mem"))
            outcome.pages = memory / 4096
            for page in 0..<outcome.pages
            where before[page * 4096..<(page + 1) * 4096] != after[page * 4096..<(page + 1) * 4096] {
                outcome.differingPages += 1
                if outcome.firstDifferences.count < 4 { outcome.firstDifferences.append(UInt64(page * 4096)) }
            }
            return outcome
        }
        _ = await source.stop()
        _ = await destination.stop()
        return outcome
    }
}

/// A minimal QMP client on a unix socket: one command at a time, events skipped. Blocking; used on its own thread.
final class QMP {
    private let descriptor: Int32
    private var buffer: [UInt8] = []

    init(path: String) throws {
        descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.prefix(raw.count - 1).enumerated() { raw[index] = byte }
        }
        var connected = false
        for _ in 0..<100 where !connected {
            connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
                }
            }
            if !connected { Thread.sleep(forTimeInterval: 0.1) }
        }
        guard connected else {
            Glibc.close(descriptor)
            throw TestBedError("QMP: cannot connect to \(path)")
        }
        _ = try readMessage()  // the greeting
        _ = try execute("qmp_capabilities")
    }

    func close() { Glibc.close(descriptor) }

    /// Runs `command`; returns its `return` value or throws its `error`.
    func execute(_ command: String, _ arguments: [String: Any] = [:]) throws -> Any {
        let request =
            try JSONSerialization.data(withJSONObject: ["execute": command, "arguments": arguments]) + Data("\n".utf8)
        try request.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                guard written > 0 else { throw TestBedError("QMP: write failed: \(String(cString: strerror(errno)))") }
                offset += written
            }
        }
        while true {
            let message = try readMessage()
            if let result = message["return"] { return result }
            if let error = message["error"] { throw TestBedError("QMP \(command): \(error)") }
        }
    }

    private func readMessage() throws -> [String: Any] {
        while true {
            if let newline = buffer.firstIndex(of: 10) {
                let line = Data(buffer[..<newline])
                buffer.removeSubrange(...newline)
                guard let object = try JSONSerialization.jsonObject(with: line) as? [String: Any] else { continue }
                return object
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let count = read(descriptor, &chunk, chunk.count)
            guard count > 0 else { throw TestBedError("QMP: the connection closed") }
            buffer += chunk[..<count]
        }
    }
}
