import ClusterAPI
import Foundation
import Testing

@testable import NodeAgent

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Processes the agent spawns", .serialized)
struct SpawnTests {
    @Test(
        "a child of the agent does not inherit its ignored SIGTERM and SIGINT (the agent ignores them to shut down gracefully), nor a blocked signal mask"
    )
    func signalsReset() async throws {
        // As the daemons' service group does for graceful shutdown.
        let previousTerm = signal(SIGTERM, SIG_IGN)
        let previousInt = signal(SIGINT, SIG_IGN)
        defer {
            signal(SIGTERM, previousTerm)
            signal(SIGINT, previousInt)
        }
        let status = try await Volumes.tool("/bin/grep", ["-E", "^Sig(Ign|Blk):", "/proc/self/status"])
        var masks: [String: UInt64] = [:]
        for line in status.split(separator: "\n") {
            let parts = line.split(separator: ":").map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2 { masks[parts[0]] = UInt64(parts[1], radix: 16) }
        }
        let term: UInt64 = 1 << (UInt64(SIGTERM) - 1)
        let int: UInt64 = 1 << (UInt64(SIGINT) - 1)
        #expect(masks["SigIgn"].map { $0 & (term | int) == 0 } == true, "the child ignores: \(status)")
        #expect(masks["SigBlk"] == 0, "\(status)")
    }

    @Test(
        "a child of the agent gets none of its descriptors beyond standard input, output and error (a socket not close-on-exec would stay open in it)"
    )
    func descriptorsClosed() async throws {
        // Not close-on-exec, at whatever number it gets (never dup2 onto a fixed one: tests run in parallel in this
        // process, and that would silently close a socket of another test's).
        let file = open("/dev/null", O_RDONLY)
        #expect(file > 2)
        defer { close(file) }
        // The control: the child's own standard output is there to see.
        let output = try await Volumes.tool("/usr/bin/stat", ["-L", "-c", "%F", "/proc/self/fd/1"])
        #expect(!output.isEmpty)
        await #expect(throws: APIError.self, "descriptor \(file) is not the child's") {
            try await Volumes.tool("/usr/bin/stat", ["-L", "/proc/self/fd/\(file)"])
        }
        let failed = await #expect(throws: APIError.self) {
            try await Volumes.tool("/usr/bin/stat", ["/nonexistent-vmsync"])
        }
        #expect(
            failed?.message.contains("stat /nonexistent-vmsync") == true
                && failed?.message.contains("No such file") == true,
            "the tool's own words: \(String(describing: failed))")
    }
}
