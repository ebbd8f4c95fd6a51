public import Foundation
import TestBed

#if canImport(Glibc)
    import Glibc
#endif

/// The link between one node's agent and the controller: a unix socket the agent dials, relayed byte for byte to the
/// controller's socket. `cut()` makes it go dark as a failed network link does — nothing is forwarded either way
/// (bytes wait in the sockets' buffers), new connections are accepted but not carried — while the node's link to the
/// other nodes stays up; `restore()` carries everything on.
public final class ControllerLink: @unchecked Sendable {
    /// The socket the agent dials.
    public let path: String
    private let upstream: String
    private let listener: Int32
    private let lock = NSLock()
    private var dark = false
    private var stopped = false
    private var open: Set<Int32> = []

    /// Starts relaying `path` to `upstream`.
    public init(path: String, upstream: String) throws {
        self.path = path
        self.upstream = upstream
        unlink(path)
        listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard listener >= 0, bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw TestBedError("cannot relay \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: bytes)
            buffer[bytes.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0, listen(listener, 64) == 0 else {
            throw TestBedError("cannot listen on \(path): \(String(cString: strerror(errno)))")
        }
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "controller-link"
        thread.start()
    }

    /// The link goes dark.
    public func cut() { lock.withLock { dark = true } }

    /// The link carries again.
    public func restore() { lock.withLock { dark = false } }

    /// Whether the link is dark.
    public var isCut: Bool { lock.withLock { dark } }

    /// Closes the listener and every relayed connection.
    public func stop() {
        let descriptors = lock.withLock { () -> Set<Int32> in
            stopped = true
            return open
        }
        shutdown(listener, Int32(SHUT_RDWR))
        for descriptor in descriptors { shutdown(descriptor, Int32(SHUT_RDWR)) }
    }

    deinit {
        stop()
        close(listener)
        unlink(path)
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    private func acceptLoop() {
        while !isStopped {
            let client = accept(listener, nil, nil)
            guard client >= 0 else {
                if errno == EINTR { continue }
                return
            }
            let thread = Thread { [self] in relay(client) }
            thread.name = "controller-link-relay"
            thread.start()
        }
    }

    private func relay(_ client: Int32) {
        // A connection made while the link is dark is carried once it is back (or never, as a dropped SYN).
        while isCut && !isStopped { usleep(20_000) }
        let server = UnixSocket.connect(upstream)
        guard server >= 0, !isStopped else {
            close(client)
            if server >= 0 { close(server) }
            return
        }
        lock.withLock { open.formUnion([client, server]) }
        let done = DispatchGroup()
        for (from, to) in [(client, server), (server, client)] {
            done.enter()
            let thread = Thread { [self] in
                pump(from: from, to: to)
                shutdown(to, Int32(SHUT_WR))
                done.leave()
            }
            thread.start()
        }
        done.wait()
        lock.withLock { open.subtract([client, server]) }
        close(client)
        close(server)
    }

    /// Copies `from` to `to` until the end or an error, holding everything while the link is dark.
    private func pump(from: Int32, to: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !isStopped {
            if isCut {
                usleep(20_000)
                continue
            }
            var poller = pollfd(fd: from, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, 50)
            if ready < 0 && errno == EINTR { continue }
            guard ready >= 0 else { return }
            if ready == 0 { continue }
            // Dark since the poll: leave the bytes where they are.
            if isCut { continue }
            let count = buffer.withUnsafeMutableBytes { read(from, $0.baseAddress, $0.count) }
            guard count > 0 else { return }
            var written = 0
            while written < count {
                let result = buffer.withUnsafeBytes { write(to, $0.baseAddress! + written, count - written) }
                if result < 0 && errno == EINTR { continue }
                guard result > 0 else { return }
                written += result
            }
        }
    }
}
