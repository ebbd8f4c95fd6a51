import Foundation
import TestBed
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("The heartbeat monitor the migration tests rely on")
struct HeartbeatMonitorTests {
    /// A listening unix socket, as QEMU's `<serial type='unix' mode='bind'>` console.
    final class Console: @unchecked Sendable {
        let listener: Int32
        var connection: Int32 = -1

        init(path: String) throws {
            listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { buffer in
                let bytes = Array(path.utf8)
                buffer.copyBytes(from: bytes)
                buffer[bytes.count] = 0
            }
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard bound == 0, listen(listener, 1) == 0 else { throw TestBedError("cannot listen on \(path)") }
        }

        func accept() {
            connection = Glibc.accept(listener, nil, nil)
        }

        func hangUp() {
            close(connection)
            connection = -1
        }

        func send(_ text: String) {
            let bytes = Array(text.utf8)
            _ = bytes.withUnsafeBytes { write(connection, $0.baseAddress, $0.count) }
        }

        deinit {
            if connection >= 0 { close(connection) }
            close(listener)
        }
    }

    /// A fresh directory for the consoles' sockets (the caller removes it).
    static func temporaryDirectory() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("heartbeat-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test("a line the switchover cut in two (its start on the source console, the rest on the destination's) is one tick, not a lost one")
    func lineAcrossSwitchover() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let source = try Console(path: directory + "/source.serial")
        let target = try Console(path: directory + "/target.serial")
        let monitor = HeartbeatMonitor(paths: [directory + "/source.serial", directory + "/target.serial"])
        defer { monitor.stop() }
        try await onThread { source.accept() }
        try await onThread { target.accept() }
        source.send("TICK 1 0.10\r\nTICK 2 0.20\r\nTICK 3 0.")
        let deadline = Date().addingTimeInterval(10)
        while monitor.ticks.count < 2 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(monitor.ticks.count == 2)
        try await Task.sleep(for: .milliseconds(100))
        target.send("30\r\nTICK 4 0.40\r\n")
        #expect(await monitor.waitForTick(from: 1, timeout: 10))
        try await Task.sleep(for: .milliseconds(100))
        let analysis = monitor.analysis()
        #expect(analysis.lost.isEmpty && analysis.first == 1 && analysis.last == 4, "\(analysis)")
        let third = monitor.ticks.first { $0.number == 3 }
        #expect(third?.source == 1 && third?.guestUptime == 0.3, "completed on the destination's console: \(String(describing: third))")
    }

    @Test("a console connection the QEMU side closes is reconnected, and the ticks after it still count")
    func reconnect() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let console = try Console(path: directory + "/console.serial")
        let monitor = HeartbeatMonitor(paths: [directory + "/console.serial"])
        defer { monitor.stop() }
        try await onThread { console.accept() }
        console.send("TICK 1 0.10\r\n")
        console.hangUp()
        try await onThread { console.accept() }
        console.send("TICK 2 0.20\r\n")
        let deadline = Date().addingTimeInterval(10)
        while monitor.ticks.count < 2 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(monitor.ticks.map(\.number) == [1, 2])
        #expect(monitor.connections.contains("reconnected 1 times"), "\(monitor.connections)")
    }
}
