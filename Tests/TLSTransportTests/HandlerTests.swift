import NIOCore
import NIOEmbedded
import NIOSSL
import NIOTLS
import Testing

@testable import TLSTransport

/// The small channel handlers of the handshake and the tunnels, driven through `EmbeddedChannel`: every path, without
/// sockets or TLS.
@Suite("Channel handlers (EmbeddedChannel)")
struct HandlerTests {
    /// Records what reaches the end of the pipeline.
    final class Sink: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        var reads: [String] = []
        var events: [String] = []

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            reads.append(String(buffer: unwrapInboundIn(data)))
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            events.append("\(event)")
        }
    }

    @Test("the plaintext sniffer refuses a client that speaks HTTP instead of TLS, naming what it sent, and closes")
    func sniffsPlaintext() throws {
        let channel = try connected(EmbeddedChannel())
        let promise = channel.eventLoop.makePromise(of: PeerIdentity.self)
        try channel.pipeline.syncOperations.addHandler(PlaintextSniffer(promise: promise))
        try channel.writeInbound(ByteBuffer(string: "GET /apis HTTP/1.1\r\nHost: x\r\n\r\n"))
        #expect(!channel.isActive, "closed")
        var failure: TransportError?
        promise.futureResult.whenFailure { failure = $0 as? TransportError }
        #expect(
            failure?.code == .plaintextPeer && failure?.message.contains("GET /apis HTTP/1") == true,
            "\(String(describing: failure))")
    }

    @Test("the plaintext sniffer passes a TLS handshake record on untouched and leaves the pipeline")
    func passesTLS() throws {
        let channel = try connected(EmbeddedChannel())
        let promise = channel.eventLoop.makePromise(of: PeerIdentity.self)
        let sink = Sink()
        try channel.pipeline.syncOperations.addHandlers([PlaintextSniffer(promise: promise), sink])
        var record = ByteBuffer()
        record.writeBytes([0x16, 0x03, 0x01, 0x00, 0x05])
        try channel.writeInbound(record)
        #expect(sink.reads.count == 1 && sink.reads.first?.utf8.first == 0x16)
        #expect(throws: (any Error).self) {
            try channel.pipeline.syncOperations.context(handlerType: PlaintextSniffer.self)
        }
        #expect(channel.isActive)
        promise.fail(TransportError(.connectionFailed, "test done"))
        _ = try? channel.finish()
    }

    @Test("the handshake gate completes with the verified peer, passes the event on and steps aside")
    func gateSucceeds() throws {
        let authority = try TestPKI.authority("alpha")
        let identity = PeerIdentity(certificate: authority.certificate)
        let channel = try connected(EmbeddedChannel())
        let promise = channel.eventLoop.makePromise(of: PeerIdentity.self)
        let sink = Sink()
        try channel.pipeline.syncOperations.addHandlers([
            HandshakeGate(promise: promise, outcome: VerificationOutcome(.success(identity)), peer: "client"), sink,
        ])
        channel.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: nil))
        var verified: PeerIdentity?
        promise.futureResult.whenSuccess { verified = $0 }
        #expect(verified == identity)
        #expect(sink.events.count == 1 && sink.events.first?.contains("handshakeCompleted") == true, "\(sink.events)")
        #expect(throws: (any Error).self) {
            try channel.pipeline.syncOperations.context(handlerType: HandshakeGate.self)
        }
        #expect(channel.isActive)
        _ = try? channel.finish()
    }

    @Test(
        "the handshake gate fails with the verifier's own reason, or says the certificate was never verified, and closes",
        arguments: [true, false])
    func gateRefuses(withReason: Bool) throws {
        let reason = TransportError(.roleNotAllowed, "role user may not connect here")
        let channel = try connected(EmbeddedChannel())
        let promise = channel.eventLoop.makePromise(of: PeerIdentity.self)
        try channel.pipeline.syncOperations.addHandler(
            HandshakeGate(
                promise: promise, outcome: VerificationOutcome(withReason ? .failure(reason) : nil), peer: "client"))
        channel.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: nil))
        var failure: TransportError?
        promise.futureResult.whenFailure { failure = $0 as? TransportError }
        if withReason {
            #expect(failure == reason)
        } else {
            #expect(
                failure?.code == .handshakeFailed && failure?.message.contains("never verified") == true,
                "\(String(describing: failure))")
        }
        #expect(!channel.isActive)
    }

    @Test("a peer that goes away mid-handshake fails the gate's promise with that, not a hang")
    func gatePeerLeaves() throws {
        let channel = try connected(EmbeddedChannel())
        let promise = channel.eventLoop.makePromise(of: PeerIdentity.self)
        try channel.pipeline.syncOperations.addHandler(
            HandshakeGate(promise: promise, outcome: VerificationOutcome(), peer: "server"))
        var failure: TransportError?
        promise.futureResult.whenFailure { failure = $0 as? TransportError }
        try channel.close().wait()
        #expect(
            failure?.code == .connectionFailed
                && failure?.message.contains("server closed the connection during the TLS handshake") == true,
            "\(String(describing: failure))")
    }

    @Test("the input hold keeps bytes and the end of input until released, then replays them in order and steps aside")
    func inputHold() throws {
        let channel = try connected(EmbeddedChannel())
        let sink = Sink()
        try channel.pipeline.syncOperations.addHandlers([InputHold(), sink])
        try channel.writeInbound(ByteBuffer(string: "first "))
        try channel.writeInbound(ByteBuffer(string: "second"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(sink.reads.isEmpty && sink.events.isEmpty, "nothing passes while held")
        InputHold.release(in: channel)
        #expect(sink.reads == ["first second"])
        #expect(sink.events == ["\(ChannelEvent.inputClosed)"])
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.context(handlerType: InputHold.self) }
        try channel.writeInbound(ByteBuffer(string: "after"))
        #expect(sink.reads == ["first second", "after"])
        _ = try? channel.finish()
    }
}

/// An embedded channel made active, as an accepted or dialled connection is.
func connected(_ channel: EmbeddedChannel) throws -> EmbeddedChannel {
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    return channel
}
