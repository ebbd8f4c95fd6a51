import NIOCore
import Synchronization
import TLSTransport

/// One client connection to the Hummingbird API server: who it is (from its verified certificate) and whether it
/// closes after the response being written.
///
/// Hummingbird builds each request's context from the channel alone, so the connection travels to it as a task-local
/// value: `AuthenticatedHTTPChannel` serves each connection in its own task and binds it there.
final class APIConnection: Sendable {
    /// The connection whose request the current task serves.
    @TaskLocal static var current: APIConnection?

    /// The client, verified by `PeerVerifier` during the handshake.
    let peer: PeerIdentity
    let channel: any Channel
    /// When the client's input ends or the connection closes: the end of a watch streamed to it.
    let inputEnded: EventLoopFuture<Void>
    private let closing = Mutex(false)

    init(peer: PeerIdentity, channel: any Channel, inputEnded: EventLoopFuture<Void>) {
        self.peer = peer
        self.channel = channel
        self.inputEnded = inputEnded
    }

    /// Asks for the connection to close once the current response is written (a watch, a refused oversized body).
    func closeAfterResponse() {
        closing.withLock { $0 = true }
    }

    /// Whether a response asked to close the connection.
    var closesAfterResponse: Bool { closing.withLock { $0 } }
}
