import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOTLS
import SwiftASN1
import X509

/// What a listener reports when it refuses a connection during the handshake.
public struct HandshakeRejection: Sendable, Hashable, CustomStringConvertible {
    /// The remote address, as text.
    public var remote: String
    /// Why.
    public var error: TransportError

    public var description: String { "refused \(remote): \(error)" }
}

/// Adds the TLS handlers for one side of a connection and reports the verified peer.
enum Handshake {
    /// Installs sniffing, TLS and verification on an accepted channel; the future yields the verified client.
    static func addServerHandlers(
        to channel: any Channel,
        provider: TLSContextProvider,
        policy: PeerPolicy
    ) throws -> EventLoopFuture<PeerIdentity> {
        let material = provider.snapshot()
        let outcome = VerificationOutcome()
        let promise = channel.eventLoop.makePromise(of: PeerIdentity.self)
        let tls = NIOSSLServerHandler(
            context: material.serverContext,
            customVerificationCallbackWithMetadata: MutualTLS(provider: provider, policy: policy)
                .verificationCallback(for: .client, onVerdict: outcome.record)
        )
        try channel.pipeline.syncOperations.addHandlers(
            PlaintextSniffer(promise: promise),
            tls,
            HandshakeGate(promise: promise, outcome: outcome, peer: "client")
        )
        return promise.futureResult
    }

    /// Installs TLS and verification on a connected channel; the future yields the verified server.
    static func addClientHandlers(
        to channel: any Channel,
        provider: TLSContextProvider,
        policy: PeerPolicy
    ) throws -> EventLoopFuture<PeerIdentity> {
        let material = provider.snapshot()
        let outcome = VerificationOutcome()
        let promise = channel.eventLoop.makePromise(of: PeerIdentity.self)
        let tls = try NIOSSLClientHandler(
            context: material.clientContext,
            serverHostname: nil,
            customVerificationCallbackWithMetadata: MutualTLS(provider: provider, policy: policy)
                .verificationCallback(for: .server, onVerdict: outcome.record)
        )
        try channel.pipeline.syncOperations.addHandlers(
            tls, HandshakeGate(promise: promise, outcome: outcome, peer: "server"))
        return promise.futureResult
    }

    /// Turns whatever NIOSSL or the socket reported into a TransportError that says what happened.
    static func describe(_ error: any Error, peer: String) -> TransportError {
        if let error = error as? TransportError { return error }
        let text = String(describing: error)
        if text.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE")
            || text.contains("CERTIFICATE_REQUIRED") && peer == "client"
        {
            return TransportError(
                .noPeerCertificate, "the \(peer) presented no certificate; this endpoint requires one")
        }
        if text.contains("WRONG_VERSION_NUMBER") || text.contains("HTTP_REQUEST") {
            return TransportError(.plaintextPeer, "the \(peer) does not speak TLS")
        }
        if text.contains("UNSUPPORTED_PROTOCOL") || text.contains("PROTOCOL_VERSION") {
            return TransportError(.handshakeFailed, "the \(peer) offers no TLS version this endpoint accepts")
        }
        if let range = text.range(of: "[A-Z0-9_]*ALERT[A-Z0-9_]*", options: .regularExpression) {
            let alert = text[range]
            if alert.contains("CERTIFICATE_REQUIRED") {
                return TransportError(.rejectedByPeer, "the \(peer) requires a client certificate (TLS alert \(alert))")
            }
            return TransportError(.rejectedByPeer, "the \(peer) refused the handshake (TLS alert \(alert))")
        }
        if let error = error as? NIOSSLError, case .uncleanShutdown = error {
            return TransportError(.connectionFailed, "the \(peer) closed the connection without a TLS close_notify")
        }
        if let error = error as? ChannelError, case .eof = error {
            return TransportError(.connectionFailed, "the \(peer) closed the connection")
        }
        return TransportError(.handshakeFailed, "TLS handshake with the \(peer) failed: \(text)")
    }
}

/// Holds the result of the custom verification so the gate can report the precise reason for a failed handshake.
final class VerificationOutcome: Sendable {
    private let result: NIOLockedValueBox<Result<PeerIdentity, TransportError>?>

    /// An outcome still to be decided by `callback`, or (tests) one already decided.
    init(_ decided: Result<PeerIdentity, TransportError>? = nil) {
        result = NIOLockedValueBox(decided)
    }

    var value: Result<PeerIdentity, TransportError>? { result.withLockedValue { $0 } }

    /// Keeps the verification's verdict (`MutualTLS.verificationCallback`'s `onVerdict`).
    @Sendable func record(_ verdict: Result<PeerIdentity, TransportError>) {
        result.withLockedValue { $0 = verdict }
    }
}

/// Refuses a connection whose first byte is not a TLS handshake record, then steps aside.
final class PlaintextSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let promise: EventLoopPromise<PeerIdentity>

    init(promise: EventLoopPromise<PeerIdentity>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        // 0x16 is the TLS record type "handshake"; every TLS client starts with it.
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self), first != 0x16 else {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        let preview = String(decoding: buffer.readableBytesView.prefix(16), as: UTF8.self)
            .filter { $0.isASCII && !$0.isNewline }
        promise.fail(TransportError(.plaintextPeer, "the client does not speak TLS (it sent \"\(preview)\")"))
        context.close(promise: nil)
    }
}

/// Waits for the handshake and the peer verification, then completes the connection's promise and steps aside.
final class HandshakeGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let promise: EventLoopPromise<PeerIdentity>
    private let outcome: VerificationOutcome
    private let peer: String

    init(promise: EventLoopPromise<PeerIdentity>, outcome: VerificationOutcome, peer: String) {
        self.promise = promise
        self.outcome = outcome
        self.peer = peer
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            switch outcome.value {
            case .success(let identity):
                promise.succeed(identity)
                context.fireUserInboundEventTriggered(event)
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                return
            case .failure(let error):
                promise.fail(error)
                context.close(promise: nil)
                return
            case nil:
                promise.fail(TransportError(.handshakeFailed, "the \(peer)'s certificate was never verified"))
                context.close(promise: nil)
                return
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case .failure(let reason) = outcome.value {
            promise.fail(reason)
        } else {
            promise.fail(Handshake.describe(error, peer: peer))
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .failure(let reason) = outcome.value {
            promise.fail(reason)
        } else {
            promise.fail(
                TransportError(.connectionFailed, "the \(peer) closed the connection during the TLS handshake"))
        }
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // A channel closed before it ever became active (a failed connect) sees no channelInactive; the promise
        // must still complete. After a success this does nothing.
        promise.fail(TransportError(.connectionFailed, "the connection to the \(peer) closed before the TLS handshake"))
    }
}
