import NIOCore
import NIOTLS

/// Joins two channels on the same event loop: what one reads the other writes.
///
/// Backpressure: a side only reads while its partner is writable. Half-close: end of input on one side closes the
/// partner's output (a TCP FIN, or a TLS close_notify), and a channel whose input and output are both done closes.
/// A side that breaks (an error, or closure before its stream ended) aborts the other, so a cut stream never looks
/// like a complete one.
final class GlueHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputDone = false
    private var outputDone = false
    private var broken = false

    private init() {}

    /// Two handlers that know each other; add one to each channel.
    static func pair() -> (GlueHandler, GlueHandler) {
        let first = GlueHandler()
        let second = GlueHandler()
        first.partner = second
        second.partner = first
        return (first, second)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    // MARK: Calls from the partner

    private func partnerWrite(_ data: NIOAny) {
        context?.write(data, promise: nil)
    }

    private func partnerFlush() {
        context?.flush()
    }

    private func partnerInputEnded() {
        guard let context, !outputDone else { return }
        outputDone = true
        context.close(mode: .output, promise: nil)
        closeIfDone()
    }

    private func partnerBroke() {
        guard let channel = context?.channel else { return }
        ChannelTeardown.abort(channel)
    }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    private var isWritable: Bool {
        context?.channel.isWritable ?? false
    }

    private func closeIfDone() {
        if inputDone && outputDone { context?.close(promise: nil) }
    }

    // MARK: Channel events

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.partnerWrite(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !broken && outputDone {
            // NIO closes a socket whose output is already shut as soon as it reads the end of input, without
            // reporting the end first: with no error seen, this is the peer finishing normally.
            inputEnded()
        } else if !(inputDone && outputDone) {
            partner?.partnerBroke()
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            inputEnded()
            return
        }
        // A completed TLS shutdown is a clean end in both directions, and NIOSSL may close the channel before it
        // reports the end of input.
        if let event = event as? TLSUserEvent, case .shutdownCompleted = event {
            outputDone = true
            inputEnded()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func inputEnded() {
        guard !inputDone else { return }
        inputDone = true
        partner?.partnerFlush()
        partner?.partnerInputEnded()
        closeIfDone()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        broken = true
        partner?.partnerBroke()
        ChannelTeardown.abort(context.channel)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            partner?.partnerBecameWritable()
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if partner?.isWritable ?? false {
            context.read()
        } else {
            pendingRead = true
        }
    }
}
