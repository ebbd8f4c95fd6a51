import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes
import TLSTransport

/// Hummingbird's HTTP/1.1 child channel behind TLSTransport's mutual TLS: `MutualTLSAcceptor` admits each accepted
/// connection (connection limit, plaintext sniffer, TLS with the provider's current material, `PeerVerifier`'s role
/// checks, handshake deadline), and only a verified client gets the HTTP pipeline. Each connection is then served
/// with its `APIConnection` bound as a task-local value, where the request context finds the client.
struct AuthenticatedHTTPChannel: ServerChildChannel, HTTPChannelHandler {
    /// An accepted connection; `ready` completes when the handshake did and the HTTP pipeline is in place, with the
    /// client and when its input ends.
    struct Value: ServerChildChannelValue {
        let channel: any Channel
        let ready: EventLoopFuture<(HTTP1Channel.Value, PeerIdentity, EventLoopFuture<Void>)>
    }

    let http: HTTP1Channel
    let acceptor: MutualTLSAcceptor
    let connections: OpenConnections

    var responder: HTTPChannelHandler.Responder { http.responder }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        // The channel is registered only once this future completes, so it must not wait for the handshake.
        let handshake: EventLoopFuture<PeerIdentity>
        do {
            handshake = try acceptor.admit(channel)
        } catch {
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(error)
        }
        let http = self.http
        // Runs on the event loop as the handshake completes, before the first application byte is read.
        let ready = handshake.flatMapThrowing { peer in
            let inputEnd = InputEndHandler(eventLoop: channel.eventLoop)
            try channel.pipeline.syncOperations.addHandler(inputEnd)
            return (peer, inputEnd.ended)
        }.flatMap { peer, inputEnded in
            http.setup(channel: channel, logger: logger).map { ($0, peer, inputEnded) }
        }
        return channel.eventLoop.makeSucceededFuture(Value(channel: channel, ready: ready))
    }

    func handle(value: Value, logger: Logger) async {
        // A refused handshake was reported and closed by the acceptor.
        guard let (asyncChannel, peer, inputEnded) = try? await value.ready.get() else { return }
        let connection = APIConnection(peer: peer, channel: value.channel, inputEnded: inputEnded)
        let key = connections.insert(value.channel)
        defer { connections.remove(key) }
        await APIConnection.$current.withValue(connection) {
            await http.handle(value: asyncChannel, logger: logger)
        }
    }
}
