import NIOCore

/// Keeps what a connection receives before its tunnel is joined — bytes and the end of input — and replays it into
/// the handlers added behind it once the tunnel is up.
///
/// Turning autoRead off is not enough: NIO drains a socket whose peer half-closed, so a client that writes and
/// shuts down before the tunnel exists would otherwise lose its data and its end-of-stream.
final class InputHold: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var held: ByteBuffer?
    private var ended = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if held == nil {
            held = incoming
        } else {
            held!.writeBuffer(&incoming)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            ended = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Passes on what was held to the handlers behind this one, then steps aside.
    func release(context: ChannelHandlerContext) {
        if let held, held.readableBytes > 0 {
            context.fireChannelRead(wrapInboundOut(held))
            context.fireChannelReadComplete()
        }
        held = nil
        if ended {
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// Releases the hold installed in `channel`'s pipeline, if any.
    static func release(in channel: any Channel) {
        guard let context = try? channel.pipeline.syncOperations.context(handlerType: InputHold.self),
            let hold = context.handler as? InputHold
        else { return }
        hold.release(context: context)
    }
}
