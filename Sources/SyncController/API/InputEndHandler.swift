import NIOCore

/// Tells when a client's side of the connection ends: its FIN (with or without TLS's close_notify) or the connection's
/// close. With remote half-closure allowed a FIN alone closes nothing, so a watch that waits only for the close would
/// stream to a client that is gone until its next event fails to send — or, with no events, until its timeout.
final class InputEndHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let promise: EventLoopPromise<Void>

    /// Completes when the client's input has ended or the connection closed.
    let ended: EventLoopFuture<Void>

    init(eventLoop: any EventLoop) {
        promise = eventLoop.makePromise()
        ended = promise.futureResult
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { promise.succeed() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.succeed()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        promise.succeed()
    }
}
