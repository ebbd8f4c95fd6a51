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
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
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
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "heartbeat-\(UUID().uuidString.prefix(8))"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test(
        "a line the switchover cut in two (its start on the source console, the rest on the destination's) is one tick, not a lost one"
    )
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
        #expect(analysis.continuous && analysis.first == 1 && analysis.last == 4, "\(analysis)")
        let third = monitor.ticks.first { $0.number == 3 }
        #expect(
            third?.source == 1 && third?.guestUptime == 0.3,
            "completed on the destination's console: \(String(describing: third))")
    }

    @Test(
        "lines cut by every switchover of a guest moved back and forth (the start on one node's console, the rest on the other's, the first node's console reconnected) are whole ticks"
    )
    func linesAcrossSwitchoversBackAndForth() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let a = try Console(path: directory + "/a.serial")
        let b = try Console(path: directory + "/b.serial")
        let monitor = HeartbeatMonitor(paths: [directory + "/a.serial", directory + "/b.serial"])
        defer { monitor.stop() }
        func waitFor(_ count: Int) async throws {
            let deadline = Date().addingTimeInterval(10)
            while monitor.ticks.count < count && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
            try await Task.sleep(for: .milliseconds(100))
        }
        try await onThread { a.accept() }
        try await onThread { b.accept() }
        a.send("TICK 1 0.10\r\nTICK 2 0.")
        try await waitFor(1)
        // a → b: the destination finishes the line; the source's QEMU goes away and its console is reconnected later.
        b.send("20\r\nTICK 3 0.30\r\nTICK 4 0.")
        a.hangUp()
        try await waitFor(3)
        // b → a: a new QEMU on a, the same socket path.
        try await onThread { a.accept() }
        a.send("40\r\nTICK 5 0.50\r\nTICK 6 0.6")
        b.hangUp()
        try await waitFor(5)
        // a → b again.
        try await onThread { b.accept() }
        b.send("0\r\nTICK 7 0.70\r\n")
        a.hangUp()
        try await waitFor(7)
        let analysis = monitor.analysis()
        #expect(
            analysis.continuous && analysis.first == 1 && analysis.last == 7,
            "\(analysis); \(monitor.connections); other lines \(monitor.otherLines)")
        #expect(monitor.ticks.map(\.source) == [0, 1, 1, 0, 0, 1, 1], "\(monitor.ticks)")
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

    @Test("a guest that restarts its counter (TICK 5, then TICK 1) is reported as restarted, not as one that ran on")
    func counterFalls() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let console = try Console(path: directory + "/console.serial")
        let monitor = HeartbeatMonitor(paths: [directory + "/console.serial"])
        defer { monitor.stop() }
        try await onThread { console.accept() }
        console.send("TICK 4 0.40\r\nTICK 5 0.50\r\nTICK 1 0.08\r\nTICK 2 0.18\r\n")
        let deadline = Date().addingTimeInterval(10)
        while monitor.ticks.count < 4 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        let analysis = monitor.analysis()
        #expect(analysis.lost.isEmpty, "each boot on its own lost nothing: \(analysis)")
        #expect(analysis.restarts.count == 1 && !analysis.continuous, "\(analysis)")
        #expect(
            analysis.restarts.first?.before.number == 5 && analysis.restarts.first?.after.number == 1, "\(analysis)")
        #expect(analysis.first == 1 && analysis.last == 2, "the numbers of the current boot: \(analysis)")
    }

    @Test(
        "restarts are seen by a falling number or uptime; a line that arrives twice, or a little out of order from the other console, is neither a restart nor a lost tick",
        arguments: [
            // (number, uptime, console) per line, restarts expected, lost expected
            ([(1, 0.1, 0), (2, 0.2, 0), (3, 0.3, 0), (1, 0.1, 0), (2, 0.2, 0), (3, 0.3, 0), (4, 0.4, 0)], 1, [Int]()),  // rebooted and climbed past
            ([(7, 9.0, 0), (8, 9.1, 0), (9, 0.2, 0), (10, 0.3, 0)], 1, []),  // the counter went on, the uptime fell: another boot
            ([(30, 3.0, 0), (31, 3.1, 0), (1, 2.5, 1), (2, 2.6, 1)], 1, []),  // a fresh guest on the destination's console
            ([(1, 0.1, 0), (2, 0.2, 0), (2, 0.2, 1), (3, 0.3, 1)], 0, []),  // the same line from both consoles
            ([(1, 0.1, 0), (3, 0.3, 1), (2, 0.2, 0), (4, 0.4, 1)], 0, []),  // read out of order across the consoles
            ([(1, 0.1, 0), (3, 0.3, 0), (2, 0.2, 0)], 1, [2]),  // out of order on one console: not a stream's order
            ([(1, 0.1, 0), (2, 0.2, 0), (5, 0.5, 0)], 0, [3, 4]),
        ] as [([(Int, Double, Int)], Int, [Int])])
    func analysis(lines: [(Int, Double, Int)], restarts: Int, lost: [Int]) {
        let ticks = lines.enumerated().map { index, line in
            HeartbeatMonitor.Tick(number: line.0, guestUptime: line.1, arrival: Double(index) * 0.1, source: line.2)
        }
        let analysis = HeartbeatMonitor.analyze(ticks)
        #expect(analysis.restarts.count == restarts, "\(analysis)")
        #expect(analysis.lost == lost, "\(analysis)")
        #expect(analysis.continuous == (restarts == 0 && lost.isEmpty))
    }
}
