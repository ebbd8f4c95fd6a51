public import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Reads the tiny guest's `TICK n uptime` heartbeat from its serial sockets: the source node's socket first, then —
/// connected as soon as the incoming QEMU creates it — the destination's, so every tick around switchover is seen.
public final class HeartbeatMonitor: @unchecked Sendable {
    /// One heartbeat line.
    public struct Tick: Sendable, Hashable {
        /// The guest's tick counter.
        public var number: Int
        /// The guest's uptime when it printed the line (seconds).
        public var guestUptime: Double
        /// When the host received it (monotonic seconds).
        public var arrival: Double
        /// Index of the socket it came from (0 = the first path).
        public var source: Int

        /// A tick as the monitor records it.
        public init(number: Int, guestUptime: Double, arrival: Double, source: Int) {
            self.number = number
            self.guestUptime = guestUptime
            self.arrival = arrival
            self.source = source
        }
    }

    /// What a run of ticks shows.
    public struct Analysis: Sendable, CustomStringConvertible {
        /// Tick numbers missing between the first and the last seen (within each boot of the guest).
        public var lost: [Int]
        /// Each time the guest's tick counter or its uptime went back: the guest restarted (rebooted, or a new guest
        /// booted in its place). A migration that is meant to be live has none.
        public var restarts: [Restart]
        /// The largest gap between consecutive ticks' arrivals (seconds): the guest-visible downtime at switchover.
        public var largestGap: Double
        /// Ticks received per socket.
        public var perSource: [Int: Int]
        /// The first and last tick numbers (of the last boot).
        public var first: Int?, last: Int?

        /// No tick lost and no restart: the guest ran on without a break.
        public var continuous: Bool { lost.isEmpty && restarts.isEmpty }

        public var description: String {
            "ticks \(first ?? 0)…\(last ?? 0), lost \(lost.count), restarts \(restarts.count)\(restarts.isEmpty ? "" : " \(restarts)"), largest gap \(String(format: "%.3f", largestGap)) s, per socket \(perSource.sorted { $0.key < $1.key })"
        }
    }

    /// The guest started over: a tick whose number or uptime is below the one before it.
    public struct Restart: Sendable, Hashable, CustomStringConvertible {
        /// The last tick of the previous run and the first of the new one.
        public var before: Tick, after: Tick

        public var description: String {
            "TICK \(before.number) (\(before.guestUptime) s) then TICK \(after.number) (\(after.guestUptime) s) on socket \(after.source)"
        }
    }

    private let lock = NSLock()
    private var received: [Tick] = []
    private var notices: [String] = []
    private var stopped = false
    private var descriptors: [Int32] = []
    /// Each console's unfinished last line (bytes after its last newline).
    private var partial: [Int: [UInt8]] = [:]
    /// Per console: when it connected (monotonic seconds), bytes read, and how reading ended.
    private var connected: [Int: Double] = [:]
    private var bytesRead: [Int: Int] = [:]
    private var ended: [Int: String] = [:]
    private var reconnects: [Int: Int] = [:]
    /// Per console: when its latest data arrived (monotonic seconds).
    private var lastData: [Int: Double] = [:]
    /// Console lines that are neither ticks nor `vmsync-guest:` notices (kernel messages), the latest 40.
    private var other: [String] = []
    private var problems: [String] = []

    /// The guest's other console lines (kernel messages and the like), the latest 40, with the console's index.
    public var otherLines: [String] { lock.withLock { other } }

    /// Every console line in which the guest kernel reports damage — `BUG:`, an oops, a general protection fault, a
    /// panic, a soft lockup, a hung task — with the console's index: a guest whose memory or devices a migration
    /// corrupted says so here, often before it stops ticking.
    public var kernelProblems: [String] { lock.withLock { problems } }

    /// Whether a console line is the guest kernel reporting damage.
    public static func isKernelProblem(_ line: String) -> Bool {
        [
            "BUG:", "Oops", "general protection fault", "Kernel panic", "soft lockup", "blocked for more than",
            "invalid opcode", "Bad page",
        ]
        .contains { line.contains($0) }
    }

    /// What each console connection did, for a failure message: "0: connected at 12.3, 4567 bytes; 1: …".
    public var connections: String {
        lock.withLock {
            (0..<max(connected.count, 2)).map { index in
                guard let at = connected[index] else { return "\(index): never connected" }
                return
                    "\(index): connected at \(String(format: "%.3f", at)), \(bytesRead[index] ?? 0) bytes\(ended[index].map { ", \($0)" } ?? "")"
                    + (reconnects[index].map { ", reconnected \($0) times" } ?? "")
            }.joined(separator: "; ")
        }
    }

    /// The analysis with what each console connection did and the guest's latest other lines: a failure message that
    /// tells a lost line from a lost console.
    public var report: String {
        "\(analysis()); consoles: \(connections); other lines: \(otherLines.suffix(6))"
    }

    /// Starts following `paths` (unix sockets of `<serial type='unix'>` consoles; one may not exist yet).
    public init(paths: [String]) {
        for (index, path) in paths.enumerated() {
            let thread = Thread { [self] in follow(path: path, source: index) }
            thread.name = "heartbeat-\(index)"
            thread.start()
        }
    }

    /// The ticks so far, in arrival order.
    public var ticks: [Tick] { lock.withLock { received } }

    /// The guest's other console lines (`vmsync-guest: …`), in arrival order.
    public var messages: [String] { lock.withLock { notices } }

    /// Waits until a `vmsync-guest:` line containing `text` has arrived; returns it (nil after `timeout` seconds).
    public func waitForMessage(containing text: String, timeout: TimeInterval = 30) async -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let line = messages.first(where: { $0.contains(text) }) { return line }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    /// Waits until `count` more ticks than now have arrived (false after `timeout` seconds).
    public func waitForTicks(_ count: Int, timeout: TimeInterval = 30) async -> Bool {
        let target = ticks.count + count
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if ticks.count >= target { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Waits until a tick arrives from socket `source`.
    public func waitForTick(from source: Int, timeout: TimeInterval = 30) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if ticks.contains(where: { $0.source == source }) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Stops reading.
    public func stop() {
        let open = lock.withLock { () -> [Int32] in
            stopped = true
            return descriptors
        }
        // Wakes blocked reads; the reading threads close their own descriptors.
        for descriptor in open { shutdown(descriptor, Int32(SHUT_RDWR)) }
    }

    /// How many ticks a line from the other console may arrive behind the newest one before it counts as a restart.
    public static let reorderTolerance = 10

    /// Lost ticks, restarts and the largest gap over everything received.
    public func analysis() -> Analysis { Self.analyze(ticks) }

    /// The analysis of `ticks` (in arrival order). The same line can arrive twice (once from each console around a
    /// switchover) and counts once. A tick whose number or uptime falls below the previous one from its console is a
    /// restart; one from another console may arrive a little out of order (the two consoles are read apart), so there
    /// a fall of more than `reorderTolerance` ticks or a second of uptime is one. Ticks are numbered per boot from a
    /// restart on — so a guest that rebooted, or a fresh one started in its place, never passes as one that ran on.
    public static func analyze(_ ticks: [Tick]) -> Analysis {
        var boots: [[Tick]] = [[]]
        var restarts: [Restart] = []
        var lastPerSource: [Int: Tick] = [:]
        for tick in ticks {
            let boot = boots[boots.count - 1]
            guard let previous = boot.last, let highest = boot.max(by: { $0.number < $1.number }) else {
                boots[boots.count - 1].append(tick)
                lastPerSource[tick.source] = tick
                continue
            }
            // The other console's copy of a line already seen in this boot (same number and uptime) is neither new nor
            // a restart; one console never repeats a line.
            if boot.contains(where: {
                $0.number == tick.number && $0.guestUptime == tick.guestUptime && $0.source != tick.source
            }) {
                continue
            }
            let sameConsole = lastPerSource[tick.source]
            let fellOnItsConsole =
                sameConsole.map { tick.number <= $0.number || tick.guestUptime + 0.001 < $0.guestUptime } ?? false
            let fellAcross =
                tick.number < highest.number - reorderTolerance || tick.guestUptime + 1.0 < highest.guestUptime
            lastPerSource[tick.source] = tick
            if fellOnItsConsole || fellAcross {
                restarts.append(Restart(before: previous, after: tick))
                boots.append([tick])
                lastPerSource = [tick.source: tick]
                continue
            }
            boots[boots.count - 1].append(tick)
        }
        var lost: [Int] = []
        var gap = 0.0
        for boot in boots {
            let ordered = boot.sorted { $0.number < $1.number }
            for (previous, next) in zip(ordered, ordered.dropFirst()) {
                if next.number > previous.number + 1 { lost.append(contentsOf: (previous.number + 1)..<next.number) }
                gap = max(gap, next.arrival - previous.arrival)
            }
        }
        // Across a restart the gap counts too: the guest was gone for that long.
        for restart in restarts { gap = max(gap, restart.after.arrival - restart.before.arrival) }
        var perSource: [Int: Int] = [:]
        for tick in ticks { perSource[tick.source, default: 0] += 1 }
        let last = boots[boots.count - 1].map(\.number)
        return Analysis(
            lost: lost, restarts: restarts, largestGap: gap, perSource: perSource, first: last.min(), last: last.max())
    }

    /// The two consecutive ticks (by number) with the largest gap between their arrivals.
    public func largestGapTicks() -> (Tick, Tick)? {
        var byNumber: [Int: Tick] = [:]
        for tick in ticks where byNumber[tick.number] == nil { byNumber[tick.number] = tick }
        let numbers = byNumber.keys.sorted()
        return zip(numbers, numbers.dropFirst()).map { (byNumber[$0]!, byNumber[$1]!) }.max {
            ($0.1.arrival - $0.0.arrival) < ($1.1.arrival - $1.0.arrival)
        }
    }

    /// Monotonic seconds, the clock `Tick.arrival` uses.
    public static var monotonicNow: Double { now() }

    deinit { stop() }

    /// Follows one console; when its connection ends while the monitor runs (the QEMU behind it closed it), it
    /// connects again, as a console user would — the report says so.
    private func follow(path: String, source: Int) {
        while !lock.withLock({ stopped }) {
            followOnce(path: path, source: source)
            if !lock.withLock({ stopped }) { usleep(5_000) }
        }
    }

    private func followOnce(path: String, source: Int) {
        var descriptor: Int32 = -1
        while descriptor < 0 {
            if lock.withLock({ stopped }) { return }
            descriptor = UnixSocket.connect(path)
            if descriptor < 0 { usleep(5_000) }
        }
        let registered = lock.withLock { () -> Bool in
            guard !stopped else { return false }
            descriptors.append(descriptor)
            if connected[source] != nil { reconnects[source, default: 0] += 1 } else { connected[source] = Self.now() }
            return true
        }
        defer {
            lock.withLock { descriptors.removeAll { $0 == descriptor } }
            close(descriptor)
        }
        guard registered else { return }
        var pending = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        var first = true
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count <= 0 {
                let reason = count == 0 ? "closed by the other end" : "read failed: \(String(cString: strerror(errno)))"
                lock.withLock { ended[source] = reason }
                return
            }
            let arrival = Self.now()
            lock.withLock {
                bytesRead[source, default: 0] += count
                lastData[source] = arrival
            }
            if first {
                // A switchover can fall in the middle of a line: the console that spoke last sent its start before the
                // guest paused, this connection sends the rest once the guest runs here — at every switchover of a
                // guest moved back and forth, so on the first data of each connection.
                pending = lock.withLock { () -> [UInt8] in
                    let previous = lastData.filter { $0.key != source && !(partial[$0.key] ?? []).isEmpty }.max {
                        $0.value < $1.value
                    }
                    guard let previous else { return [] }
                    defer { partial[previous.key] = nil }
                    return partial[previous.key] ?? []
                }
            }
            first = false
            pending.append(contentsOf: buffer[0..<count])
            while let newline = pending.firstIndex(of: 10) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                if let notice = line.range(of: "vmsync-guest: ") {
                    let text = String(line[notice.lowerBound...]).trimmingCharacters(in: .whitespacesAndNewlines)
                    lock.withLock { notices.append(text) }
                    continue
                }
                guard let range = line.range(of: "TICK ") else {
                    let text = line.trimmingCharacters(in: .whitespacesAndNewlines)
                    if !text.isEmpty {
                        lock.withLock {
                            other.append("\(source): \(text)")
                            if Self.isKernelProblem(text) { problems.append("\(source): \(text)") }
                            if other.count > 40 { other.removeFirst(other.count - 40) }
                        }
                    }
                    continue
                }
                let fields = line[range.upperBound...].split(separator: " ")
                guard fields.count >= 2, let number = Int(fields[0]),
                    let uptime = Double(fields[1].trimmingCharacters(in: .whitespacesAndNewlines))
                else { continue }
                lock.withLock {
                    received.append(Tick(number: number, guestUptime: uptime, arrival: arrival, source: source))
                }
            }
            let unfinished = pending
            lock.withLock { partial[source] = unfinished }
        }
    }

    private static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}

/// Connecting to unix stream sockets (guest consoles, libvirt's socket).
public enum UnixSocket {
    /// A connected stream socket to `path`, or -1.
    public static func connect(_ path: String) -> Int32 {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return -1 }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(descriptor)
            return -1
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: bytes)
            buffer[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if result != 0 {
            close(descriptor)
            return -1
        }
        return descriptor
    }
}
