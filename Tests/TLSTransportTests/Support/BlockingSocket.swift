import Crypto
import Foundation
import NIOConcurrencyHelpers
import TLSTransport
import TestSupport

#if canImport(Glibc)
    import Glibc
#endif

struct SocketError: Error, CustomStringConvertible {
    var description: String
}

/// A plain blocking socket: an independent peer for the NIO code under test.
final class BlockingSocket: @unchecked Sendable {
    let fd: Int32
    private let closed = NIOLockedValueBox(false)

    init(fd: Int32) { self.fd = fd }

    static func connect(_ endpoint: Endpoint) throws -> BlockingSocket {
        switch endpoint {
        case .tcp(let host, let port):
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            inet_pton(AF_INET, host, &address.sin_addr)
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard result == 0 else {
                Glibc.close(fd)
                throw SocketError(description: "connect \(endpoint): \(String(cString: strerror(errno)))")
            }
            return BlockingSocket(fd: fd)
        case .unix(let path):
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                let bytes = Array(path.utf8)
                raw.copyBytes(from: bytes.prefix(raw.count - 1))
            }
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard result == 0 else {
                Glibc.close(fd)
                throw SocketError(description: "connect \(endpoint): \(String(cString: strerror(errno)))")
            }
            return BlockingSocket(fd: fd)
        }
    }

    /// A TCP listener on 127.0.0.1 with a kernel-chosen port.
    static func listen() throws -> (BlockingSocket, Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                Glibc.bind(fd, pointer, length) == 0 && Glibc.listen(fd, 16) == 0
                    && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw SocketError(description: "listen: \(String(cString: strerror(errno)))") }
        return (BlockingSocket(fd: fd), Int(UInt16(bigEndian: address.sin_port)))
    }

    /// A TCP socket bound to a kernel-chosen port on 127.0.0.1 but not listening: connections to the port are
    /// refused for as long as the socket stays open, and no other listener can take the port meanwhile.
    static func reservedClosedPort() throws -> (BlockingSocket, Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                Glibc.bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw SocketError(description: "bind: \(String(cString: strerror(errno)))") }
        return (BlockingSocket(fd: fd), Int(UInt16(bigEndian: address.sin_port)))
    }

    /// A unix-socket listener at `path`.
    static func listen(unixPath path: String) throws -> BlockingSocket {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8).prefix(raw.count - 1))
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 && Glibc.listen(fd, 16) == 0
            }
        }
        guard bound else { throw SocketError(description: "listen \(path): \(String(cString: strerror(errno)))") }
        return BlockingSocket(fd: fd)
    }

    /// Whether `close` has run (blocking calls check it first; they cannot hold the lock while they block).
    var isClosed: Bool { closed.withLockedValue { $0 } }

    func accept() throws -> BlockingSocket {
        guard !isClosed else { throw SocketError(description: "accept: socket closed") }
        let client = Glibc.accept(fd, nil, nil)
        guard client >= 0 else { throw SocketError(description: "accept: \(String(cString: strerror(errno)))") }
        return BlockingSocket(fd: client)
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard !isClosed else { throw SocketError(description: "send: socket closed") }
        var offset = 0
        while offset < bytes.count {
            let written = send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            guard written > 0 else { throw SocketError(description: "send: \(String(cString: strerror(errno)))") }
            offset += written
        }
    }

    func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Reads up to `buffer.count` bytes; 0 at end of stream; throws on error (e.g. reset).
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard !isClosed else { throw SocketError(description: "recv: socket closed") }
        let count = recv(fd, buffer.baseAddress, buffer.count, 0)
        guard count >= 0 else { throw SocketError(description: "recv: \(String(cString: strerror(errno)))") }
        return count
    }

    /// Reads everything until the peer ends the stream.
    func readToEnd() throws -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = try chunk.withUnsafeMutableBytes { try read(into: $0) }
            if count == 0 { return result }
            result += chunk[..<count]
        }
    }

    /// Reads until the stream ends; says whether it ended with a reset rather than a clean end.
    func readOutcome() -> (bytes: [UInt8], reset: Bool) {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { return (result, false) }
            if count < 0 { return (result, errno == ECONNRESET) }
            result += chunk[..<count]
        }
    }

    func setSendTimeout(seconds: Int) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func setReceiveTimeout(seconds: Int) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func shutdownWrite() { withOpenDescriptor { Glibc.shutdown($0, Int32(SHUT_WR)) } }

    /// Runs `body` with the descriptor unless the socket is closed, holding off `close` meanwhile: a descriptor
    /// number is reused as soon as it is closed, and touching it afterwards would hit another test's socket.
    private func withOpenDescriptor(_ body: (Int32) -> Void) {
        closed.withLockedValue { isClosed in
            if !isClosed { body(fd) }
        }
    }

    /// Makes the next close send a reset instead of a FIN.
    func armReset() {
        withOpenDescriptor { fd in
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        }
    }

    /// Wakes a thread blocked in recv on this socket (it returns 0) without sending anything.
    func interruptReads() { withOpenDescriptor { Glibc.shutdown($0, Int32(SHUT_RD)) } }

    /// Wakes every thread blocked on this socket.
    func interruptAll() { withOpenDescriptor { Glibc.shutdown($0, Int32(SHUT_RDWR)) } }

    /// Closes with a reset instead of a FIN: a peer that dies. Call from the thread that uses the socket, or after
    /// waking it: closing does not interrupt a blocked call.
    func abort() {
        armReset()
        close()
    }

    /// Closes once; later calls do nothing.
    func close() {
        closed.withLockedValue { isClosed in
            if !isClosed {
                Glibc.close(fd)
                isClosed = true
            }
        }
    }
}

/// A deterministic stream of pseudo-random bytes, produced in chunks.
struct ByteStream {
    private var state: UInt64

    init(seed: UInt64) { state = seed | 1 }

    mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        let words = buffer.bindMemory(to: UInt64.self)
        for index in words.indices {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            words[index] = state
        }
    }
}

/// Sends `total` bytes of a seeded stream in `chunk`-sized writes, pausing `pause` between chunks; returns SHA-256.
/// Stops early (returning the digest so far) once `stop` returns true.
func sendStream(
    on socket: BlockingSocket,
    total: Int,
    seed: UInt64,
    chunk: Int = 1 << 20,
    pause: useconds_t = 0,
    stop: () -> Bool = { false }
) throws -> [UInt8] {
    var stream = ByteStream(seed: seed)
    var hasher = SHA256()
    var buffer = [UInt8](repeating: 0, count: chunk)
    var sent = 0
    while sent < total, !stop() {
        let count = min(chunk, total - sent)
        try buffer.withUnsafeMutableBytes { raw in
            stream.fill(raw)
            let slice = UnsafeRawBufferPointer(rebasing: raw[..<count])
            hasher.update(bufferPointer: slice)
            try socket.write(slice)
        }
        sent += count
        if pause > 0 { usleep(pause) }
    }
    return Array(hasher.finalize())
}

/// On a thread of its own: connects to `endpoint`, sends `total` bytes of a seeded stream (`sendStream`), ends its
/// half, and reads the answer to the end. Returns the stream's SHA-256 and the answer.
func exchangeStream(
    with endpoint: Endpoint, total: Int, seed: UInt64, chunk: Int = 1 << 20, pause: useconds_t = 0
) async throws -> (sent: [UInt8], answer: [UInt8]) {
    try await onThread {
        let socket = try BlockingSocket.connect(endpoint)
        defer { socket.close() }
        let sent = try sendStream(on: socket, total: total, seed: seed, chunk: chunk, pause: pause)
        socket.shutdownWrite()
        return (sent, try socket.readToEnd())
    }
}

/// Reads until end of stream; returns the byte count and SHA-256.
func receiveStream(on socket: BlockingSocket) throws -> (count: Int, digest: [UInt8]) {
    var hasher = SHA256()
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    var total = 0
    while true {
        let count = try buffer.withUnsafeMutableBytes { raw in
            let count = try socket.read(into: raw)
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: raw[..<count]))
            return count
        }
        if count == 0 { return (total, Array(hasher.finalize())) }
        total += count
    }
}

/// Sockets of this process still open on any of `ports`, ignoring listeners: a leak if non-empty after teardown.
func openSockets(onPorts ports: Set<Int>) -> [String] {
    var inodes = Set<String>()
    let fdDirectory = "/proc/self/fd"
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: fdDirectory)) ?? [] {
        if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(fdDirectory)/\(entry)"),
            target.hasPrefix("socket:[")
        {
            inodes.insert(String(target.dropFirst(8).dropLast()))
        }
    }
    var found: [String] = []
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        guard let text = readProcFile(table) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 9 else { continue }
            let local = Int(fields[1].split(separator: ":").last ?? "", radix: 16) ?? -1
            let remote = Int(fields[2].split(separator: ":").last ?? "", radix: 16) ?? -1
            let state = fields[3]
            let inode = String(fields[9])
            if state != "0A", ports.contains(local) || ports.contains(remote), inodes.contains(inode) {
                found.append("local :\(local) remote :\(remote) state \(state)")
            }
        }
    }
    return found
}

/// Waits until `condition` holds, polling, for at most `seconds`.
func eventually(seconds: Double = 10, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return condition()
}

/// Reads a /proc file whole (Foundation's String(contentsOfFile:) stops after one page of a procfs file).
func readProcFile(_ path: String) -> String? {
    guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
    defer { try? handle.close() }
    return String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
}
