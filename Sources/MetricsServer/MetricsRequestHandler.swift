public import NIOCore
public import NIOHTTP1

/// Sorts the requests of one `/metrics` connection: the head of a `GET` or `HEAD` of `/metrics` goes on to the
/// server's scrape loop once the request is complete; another path is answered 404 here, another method on
/// `/metrics` 405. A request body (a scrape has none) is counted, not kept; past `maximumBodyBytes` the request is
/// answered 413 and the connection closed.
public final class MetricsRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias InboundOut = HTTPRequestHead
    public typealias OutboundOut = HTTPServerResponsePart

    /// The most body bytes a request may carry.
    public static let maximumBodyBytes = 4 << 10

    private enum State {
        /// Between requests.
        case idle
        /// Reading the body of the request with this head.
        case reading(HTTPRequestHead, bodyBytes: Int)
        /// The request was answered early (too large): the rest of it is dropped until the connection closes.
        case closing
    }

    private var state = State.idle

    public init() {}

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (unwrapInboundIn(data), state) {
        case (.head(let head), .idle):
            state = .reading(head, bodyBytes: 0)
        case (.body(let chunk), .reading(let head, let bodyBytes)):
            let total = bodyBytes + chunk.readableBytes
            guard total <= Self.maximumBodyBytes else {
                state = .closing
                respond(
                    context, to: head, .payloadTooLarge,
                    "a request to this server carries at most \(Self.maximumBodyBytes) body bytes\n", keepAlive: false)
                return
            }
            state = .reading(head, bodyBytes: total)
        case (.end, .reading(let head, _)):
            state = .idle
            route(context, head)
        case (_, .closing):
            break
        case (.head, _), (.body, _), (.end, _):
            // Parts out of order cannot come from NIO's decoder; close rather than guess.
            state = .closing
            context.close(promise: nil)
        }
    }

    /// A request NIO's decoder could not parse (answered 400 by `HTTPServerProtocolErrorHandler` before this), a
    /// connection cut mid-request: the connection is done.
    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        state = .closing
        context.close(promise: nil)
    }

    private func route(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard path == "/metrics" else {
            respond(
                context, to: head, .notFound, "not found: this server serves only GET /metrics\n",
                keepAlive: head.isKeepAlive)
            return
        }
        guard head.method == .GET || head.method == .HEAD else {
            respond(
                context, to: head, .methodNotAllowed, "method not allowed: /metrics answers GET and HEAD\n",
                keepAlive: head.isKeepAlive,
                extraHeaders: [("Allow", "GET, HEAD")])
            return
        }
        context.fireChannelRead(wrapInboundOut(head))
    }

    private func respond(
        _ context: ChannelHandlerContext, to request: HTTPRequestHead, _ status: HTTPResponseStatus, _ text: String,
        keepAlive: Bool,
        extraHeaders: [(String, String)] = []
    ) {
        let body = ByteBuffer(string: text)
        var headers = HTTPHeaders(
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", String(body.readableBytes))]
                + extraHeaders)
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))),
            promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// Closes a connection that takes longer than `timeout` to deliver a request: counted from the connection's start or
/// the end of the previous answer to the end of the next request (a silent kept-alive connection, a request dripping
/// in byte by byte). While an answer is written it never fires.
final class RequestTimeout: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        arm(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) {
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { arm(context) }
        context.write(data, promise: promise)
    }

    private func arm(_ context: ChannelHandlerContext) {
        timer?.cancel()
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }
}
