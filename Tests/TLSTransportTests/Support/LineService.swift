import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

@testable import TLSTransport

/// The test service behind a MutualTLSServer: answers the first line with "ROLE/NAME: LINE" and closes.
final class IdentityReplyHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let peer: PeerIdentity
    private var text = ""

    init(peer: PeerIdentity) { self.peer = peer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        text += buffer.readString(length: buffer.readableBytes) ?? ""
        guard let newline = text.firstIndex(of: "\n") else { return }
        let line = text[..<newline]
        let reply = context.channel.allocator.buffer(string: "\(peer.role.rawValue)/\(peer.name): \(line)\n")
        context.writeAndFlush(wrapOutboundOut(reply)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

/// Rejections a listener reported.
final class RejectionLog: Sendable {
    private let entries = NIOLockedValueBox<[HandshakeRejection]>([])
    func append(_ rejection: HandshakeRejection) { entries.withLockedValue { $0.append(rejection) } }
    var all: [HandshakeRejection] { entries.withLockedValue { $0 } }
    var codes: [TransportError.Code] { all.map(\.error.code) }
}

/// Starts an identity-reply server for tests.
func startReplyServer(
    provider: TLSContextProvider,
    policy: PeerPolicy,
    log: RejectionLog = RejectionLog()
) async throws -> MutualTLSServer {
    try await MutualTLSServer.start(
        on: .tcp(host: "127.0.0.1", port: 0),
        provider: provider,
        policy: policy,
        onRejection: log.append
    ) { channel, peer in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(IdentityReplyHandler(peer: peer))
        }
    }
}

/// Collects what a connection receives until the first newline, the end of the stream or an error.
final class CollectHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    private let state = NIOLockedValueBox<(text: String, error: (any Error)?)>(("", nil))
    let done: EventLoopPromise<String>

    init(done: EventLoopPromise<String>) { self.done = done }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        let piece = buffer.readString(length: buffer.readableBytes) ?? ""
        let text = state.withLockedValue {
            $0.text += piece
            return $0.text
        }
        if text.contains("\n") { done.succeed(text) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        state.withLockedValue { $0.error = $0.error ?? error }
        context.close(promise: nil)
    }

    func finish() {
        let (text, error) = state.withLockedValue { $0 }
        if let error { done.fail(error) } else { done.succeed(text) }
    }
}

/// Connects with mutual TLS, sends one line, and returns the answer (up to its newline).
func exchange(
    _ line: String,
    with endpoint: Endpoint,
    provider: TLSContextProvider,
    serverPolicy: PeerPolicy = .anyRole
) async throws -> (reply: String, server: PeerIdentity) {
    let slot = NIOLockedValueBox<CollectHandler?>(nil)
    let (channel, server) = try await MutualTLSClient.connect(to: endpoint, provider: provider, policy: serverPolicy) {
        let collector = CollectHandler(done: $0.eventLoop.makePromise(of: String.self))
        slot.withLockedValue { $0 = collector }
        try $0.pipeline.syncOperations.addHandler(collector)
        $0.closeFuture.whenComplete { _ in collector.finish() }
    }
    let collector = slot.withLockedValue { $0 }!
    let promise = collector.done
    do {
        try? await channel.writeAndFlush(channel.allocator.buffer(string: line + "\n"))
        let reply = try await promise.futureResult.get()
        channel.close(promise: nil)
        return (reply, server)
    } catch {
        channel.close(promise: nil)
        throw Handshake.describe(error, peer: "server")
    }
}
