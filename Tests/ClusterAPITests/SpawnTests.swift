import ClusterAPI
import Foundation
import Testing

@testable import NodeAgent

#if canImport(Glibc)
import Glibc
#endif

@Suite("Processes the agent spawns", .serialized)
struct SpawnTests {
    @Test("a child of the agent does not inherit its ignored SIGTERM and SIGINT (the agent ignores them to shut down gracefully), nor a blocked signal mask")
    func signalsReset() throws {
        // As the daemons' service group does for graceful shutdown.
        let previousTerm = signal(SIGTERM, SIG_IGN)
        let previousInt = signal(SIGINT, SIG_IGN)
        defer {
            signal(SIGTERM, previousTerm)
            signal(SIGINT, previousInt)
        }
        let status = try Volumes.run("/bin/grep", ["-E", "^Sig(Ign|Blk):", "/proc/self/status"]).get()
        var masks: [String: UInt64] = [:]
        for line in status.split(separator: "\n") {
            let parts = line.split(separator: ":").map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2 { masks[parts[0]] = UInt64(parts[1], radix: 16) }
        }
        let term: UInt64 = 1 << (UInt64(SIGTERM) - 1), int: UInt64 = 1 << (UInt64(SIGINT) - 1)
        #expect(masks["SigIgn"].map { $0 & (term | int) == 0 } == true, "the child ignores: \(status)")
        #expect(masks["SigBlk"] == 0, "\(status)")
    }
}
