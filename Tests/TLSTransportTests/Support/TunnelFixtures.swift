import Foundation
import NIOConcurrencyHelpers
import TestSupport

@testable import TLSTransport

#if canImport(Glibc)
    import Glibc
#endif

/// Events a tunnel end reported.
final class EventLog: Sendable {
    private let events = NIOLockedValueBox<[TunnelEvent]>([])
    func append(_ event: TunnelEvent) { events.withLockedValue { $0.append(event) } }
    var all: [TunnelEvent] { events.withLockedValue { $0 } }
    var refusals: [TransportError] {
        all.compactMap { if case .refused(_, let error) = $0 { error } else { nil } }
    }
    var openedPeers: [PeerIdentity] {
        all.compactMap { if case .opened(_, let peer) = $0 { peer } else { nil } }
    }
}

/// A target that reads one connection to its end, hashes it, answers with the 32-byte digest and closes.
final class DigestSink: @unchecked Sendable {
    let port: Int
    private let listener: BlockingSocket
    private let accepted = NIOLockedValueBox<BlockingSocket?>(nil)
    private let aborted = NIOLockedValueBox(false)

    init() throws {
        (listener, port) = try BlockingSocket.listen()
    }

    var endpoint: Endpoint { .tcp(host: "127.0.0.1", port: port) }

    /// Serves one connection; returns the byte count and digest it received, or throws if the stream broke.
    func serveOne() async throws -> (count: Int, digest: [UInt8]) {
        try await onThread {
            let connection = try self.listener.accept()
            self.accepted.withLockedValue { $0 = connection }
            defer { connection.close() }
            let received = try receiveStream(on: connection)
            if self.aborted.withLockedValue({ $0 }) {
                connection.abort()
                throw SocketError(description: "sink aborted")
            }
            try connection.write(received.digest)
            return received
        }
    }

    /// Resets the accepted connection: a target that dies.
    func abortConnection() {
        aborted.withLockedValue { $0 = true }
        guard let connection = accepted.withLockedValue({ $0 }) else { return }
        connection.armReset()
        connection.interruptReads()
    }

    func close() { listener.close() }
}

/// A TCP relay between two ends that can be cut with a reset in both directions: a network or peer that vanishes.
final class CuttableRelay: @unchecked Sendable {
    let port: Int
    private let listener: BlockingSocket
    private let sockets = NIOLockedValueBox<[BlockingSocket]>([])
    private let isCut = NIOLockedValueBox(false)
    private let target: Endpoint

    init(to target: Endpoint) throws {
        (listener, port) = try BlockingSocket.listen()
        self.target = target
        let thread = Thread { [self] in
            while let inbound = try? listener.accept() {
                guard let outbound = try? BlockingSocket.connect(self.target) else {
                    inbound.close()
                    continue
                }
                sockets.withLockedValue { $0 += [inbound, outbound] }
                // The pair is closed by whichever pump finishes second: only the threads using the sockets close them.
                let finished = NIOLockedValueBox(0)
                self.pump(from: inbound, to: outbound, finished: finished)
                self.pump(from: outbound, to: inbound, finished: finished)
            }
        }
        thread.start()
    }

    var endpoint: Endpoint { .tcp(host: "127.0.0.1", port: port) }

    private func pump(from source: BlockingSocket, to sink: BlockingSocket, finished: NIOLockedValueBox<Int>) {
        Thread { [isCut] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while let count = try? buffer.withUnsafeMutableBytes({ try source.read(into: $0) }), count > 0 {
                guard (try? sink.write(Array(buffer[..<count]))) != nil else { break }
            }
            if !isCut.withLockedValue({ $0 }) {
                sink.shutdownWrite()
            }
            let last = finished.withLockedValue { count in
                count += 1
                return count == 2
            }
            if last {
                source.close()
                sink.close()
            }
        }.start()
    }

    /// Resets every relayed connection in both directions and stops accepting.
    func cut() {
        isCut.withLockedValue { $0 = true }
        for socket in sockets.withLockedValue({ $0 }) {
            socket.armReset()
            // Wake the pump threads; the second one to finish closes the pair, which sends the resets.
            socket.interruptAll()
        }
        listener.interruptAll()
        listener.close()
    }
}

/// One client's stream through a tunnel entry to a target accepted on `target`: the target reads the seeded stream and
/// answers with its digest, the client sends `total` bytes, half-closes and reads the answer.
func exchange(through entry: Endpoint, target: BlockingSocket, total: Int, seed: UInt64) async throws
    -> (received: Int, targetDigest: [UInt8], sent: [UInt8], answer: [UInt8])
{
    async let served = onThread { () -> (Int, [UInt8]) in
        let connection = try target.accept()
        defer { connection.close() }
        let (count, digest) = try receiveStream(on: connection)
        try connection.write(digest)
        return (count, digest)
    }
    let (sent, answer) = try await onThread {
        let socket = try BlockingSocket.connect(entry)
        defer { socket.close() }
        let sent = try sendStream(on: socket, total: total, seed: seed)
        socket.shutdownWrite()
        return (sent, try socket.readToEnd())
    }
    let (count, digest) = try await served
    return (count, digest, sent, answer)
}
