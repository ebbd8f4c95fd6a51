public import ClusterAPI
public import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
public import TLSTransport

/// A client of the cluster API over mutual TLS (syncctl, node agents, tests): requests with JSON bodies, kept-alive
/// connections, watches as async sequences. Every failure is an `APIError` (the server's `Status`, or a transport
/// problem described as one).
public final class APIClient: Sendable {
    /// The server.
    public let endpoint: Endpoint
    private let provider: TLSContextProvider
    private let serverPolicy: PeerPolicy
    private let idle = NIOLockedValueBox<[HTTPConnection]>([])
    /// How long a request (connecting, the handshake, the exchange) may take; a watch may stay silent for its
    /// `timeoutSeconds` plus this long. A server that stopped answering, or a link that went dark, ends in a
    /// `Timeout` error instead of a caller that waits forever.
    public let requestTimeout: Duration

    /// A client of the controller at `endpoint`, authenticating with `provider`'s identity; the server must present
    /// a `controller` certificate of a trusted CA.
    public init(
        endpoint: Endpoint, provider: TLSContextProvider,
        serverPolicy: PeerPolicy = PeerPolicy(allowedRoles: [.controller]),
        requestTimeout: Duration = .seconds(30)
    ) {
        self.endpoint = endpoint
        self.provider = provider
        self.serverPolicy = serverPolicy
        self.requestTimeout = requestTimeout
    }

    private var timeoutAmount: TimeAmount {
        let parts = requestTimeout.components
        return .nanoseconds(parts.seconds * 1_000_000_000 + parts.attoseconds / 1_000_000_000)
    }

    deinit {
        for connection in idle.withLockedValue({ $0 }) { connection.channel.close(promise: nil) }
    }

    /// The endpoint of a server URL: `https://host:port`, or `unix:///path/to/socket` (TLS over a unix socket, e.g.
    /// for agents inside network namespaces that share the controller's filesystem).
    public static func endpoint(server: String) throws(APIError) -> Endpoint {
        if server.hasPrefix("unix://") { return .unix(path: String(server.dropFirst("unix://".count))) }
        guard let url = URL(string: server), url.scheme == "https", let host = url.host else {
            throw APIError.badRequest("the server \"\(server)\" is neither https://HOST:PORT nor unix:///PATH")
        }
        return .tcp(host: host, port: url.port ?? 443)
    }

    // MARK: Typed verbs

    public func get(_ kind: ResourceKind, namespace: String? = nil, name: String) async throws(APIError) -> JSONValue {
        try await request("GET", kind.objectPath(namespace: namespace ?? defaultNamespace(kind), name: name))
    }

    public func list(
        _ kind: ResourceKind, namespace: String? = nil, labelSelector: String? = nil, fieldSelector: String? = nil
    )
        async throws(APIError) -> JSONValue
    {
        var query: [String] = []
        if let labelSelector { query.append("labelSelector=" + Self.escape(labelSelector)) }
        if let fieldSelector { query.append("fieldSelector=" + Self.escape(fieldSelector)) }
        let path =
            kind.collectionPath(namespace: kind.namespaced ? namespace : nil)
            + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        return try await request("GET", path)
    }

    public func create(_ kind: ResourceKind, _ object: JSONValue) async throws(APIError) -> JSONValue {
        let namespace = object["metadata"]?["namespace"]?.string ?? defaultNamespace(kind)
        return try await request("POST", kind.collectionPath(namespace: namespace), body: object)
    }

    public func update(_ kind: ResourceKind, _ object: JSONValue, status: Bool = false) async throws(APIError)
        -> JSONValue
    {
        let namespace = object["metadata"]?["namespace"]?.string ?? defaultNamespace(kind)
        let name = object["metadata"]?["name"]?.string ?? ""
        return try await request(
            "PUT", kind.objectPath(namespace: namespace, name: name) + (status ? "/status" : ""), body: object)
    }

    public func patch(
        _ kind: ResourceKind, namespace: String? = nil, name: String, _ patch: JSONValue, status: Bool = false
    )
        async throws(APIError) -> JSONValue
    {
        try await request(
            "PATCH",
            kind.objectPath(namespace: namespace ?? defaultNamespace(kind), name: name) + (status ? "/status" : ""),
            body: patch,
            contentType: "application/merge-patch+json")
    }

    public func delete(_ kind: ResourceKind, namespace: String? = nil, name: String) async throws(APIError) -> JSONValue
    {
        try await request("DELETE", kind.objectPath(namespace: namespace ?? defaultNamespace(kind), name: name))
    }

    private func defaultNamespace(_ kind: ResourceKind) -> String? { kind.namespaced ? "default" : nil }

    static func escape(_ text: String) -> String {
        text.addingPercentEncoding(
            withAllowedCharacters: .urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=+"))) ?? text
    }

    // MARK: Requests

    /// Sends one GET and returns the body undecoded (a failure status still throws).
    public func raw(_ path: String) async throws(APIError) -> Data {
        let (status, body) = try await exchange("GET", path, body: nil, contentType: "")
        guard (200..<300).contains(status) else {
            throw APIError(status: (try? JSONValue.parse(body)) ?? .null)
                ?? APIError(.internalError, code: status, "GET \(path) answered \(status)")
        }
        return body
    }

    /// Sends one request and returns the decoded body; a `Status` failure or a transport problem throws.
    public func request(
        _ method: String, _ path: String, body: JSONValue? = nil, contentType: String = "application/json"
    )
        async throws(APIError) -> JSONValue
    {
        let (status, responseBody) = try await exchange(method, path, body: body.map { $0.jsonData() }, contentType: contentType)
        let value =
            responseBody.isEmpty
            ? JSONValue.null
            : ((try? JSONValue.parse(responseBody)) ?? .string(String(decoding: responseBody, as: UTF8.self)))
        guard (200..<300).contains(status) else {
            throw APIError(status: value)
                ?? APIError(
                    .internalError, code: status, "the server answered \(status): \(value.string ?? value.jsonString())")
        }
        return value
    }

    /// One exchange on a kept-alive connection (kept for the next when the server allows): the status and the body. A
    /// kept-alive connection the server closed meanwhile (its idle timeout) is retried once on a fresh one.
    private func exchange(_ method: String, _ path: String, body data: Data?, contentType: String)
        async throws(APIError) -> (status: Int, body: Data)
    {
        for attempt in 0..<2 {
            let connection = try await takeConnection(fresh: attempt > 0)
            do {
                let (status, responseBody, keepAlive) = try await connection.exchange(
                    method: method, path: path, body: data, contentType: contentType, host: endpoint.description,
                    timeout: timeoutAmount)
                if keepAlive {
                    idle.withLockedValue { $0.append(connection) }
                } else {
                    connection.channel.close(promise: nil)
                }
                return (status, responseBody)
            } catch let error as APIError {
                throw error
            } catch {
                connection.channel.close(promise: nil)
                if attempt == 0, connection.reused { continue }
                throw APIError(
                    .serviceUnavailable, code: 503, "\(method) \(path) on \(endpoint): the connection failed: \(error)")
            }
        }
        throw APIError(.serviceUnavailable, code: 503, "\(method) \(path) on \(endpoint): no connection")
    }

    /// Watches `kind`: the events as they come (`resourceVersion` nil: the current objects first, as ADDED). The
    /// sequence ends when the server ends the watch; a 410 arrives as an error.
    public func watch(
        _ kind: ResourceKind, namespace: String? = nil, labelSelector: String? = nil, fieldSelector: String? = nil,
        resourceVersion: String? = nil, timeoutSeconds: Int? = nil
    ) async throws(APIError)
        -> AsyncThrowingStream<(type: String, object: JSONValue), any Error>
    {
        var query = ["watch=true"]
        if let labelSelector { query.append("labelSelector=" + Self.escape(labelSelector)) }
        if let fieldSelector { query.append("fieldSelector=" + Self.escape(fieldSelector)) }
        if let resourceVersion { query.append("resourceVersion=" + resourceVersion) }
        if let timeoutSeconds { query.append("timeoutSeconds=\(timeoutSeconds)") }
        let path =
            kind.collectionPath(namespace: kind.namespaced ? namespace : nil) + "?" + query.joined(separator: "&")
        let connection = try await takeConnection(fresh: true)
        let lines: AsyncThrowingStream<Data, any Error>
        do {
            let silence = timeoutSeconds.map { TimeAmount.seconds(Int64(clamping: $0)) + timeoutAmount }
            lines = try await connection.stream(
                path: path, host: endpoint.description, startTimeout: timeoutAmount, silenceTimeout: silence)
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError(.serviceUnavailable, code: 503, "watch of \(path) on \(endpoint): \(error)")
        }
        // Read on the consumer's task, as it asks: no task of the client's own outlives the consumer.
        let reader = WatchReader(lines: lines, channel: connection.channel)
        return AsyncThrowingStream { try await reader.next() }
    }

    private func takeConnection(fresh: Bool) async throws(APIError) -> HTTPConnection {
        if !fresh, let reused = idle.withLockedValue({ $0.popLast() }) {
            if reused.channel.isActive { return reused }
        }
        do {
            let collector = ResponseCollector()
            let (channel, _) = try await MutualTLSClient.connect(
                to: endpoint, provider: provider, policy: serverPolicy, connectTimeout: timeoutAmount
            ) { channel in
                try channel.pipeline.syncOperations.addHTTPClientHandlers()
                try channel.pipeline.syncOperations.addHandler(collector)
            }
            return HTTPConnection(channel: channel, collector: collector)
        } catch {
            throw APIError(
                .serviceUnavailable, code: 503, "cannot reach the cluster API at \(endpoint): \(error.message)")
        }
    }
}

/// A watch's lines as events, for the one consumer of its stream: the connection closes when the watch ends, fails or
/// the stream is dropped — with close_notify and FIN at once (a plain close would hold the connection for NIOSSL's
/// shutdown timeout).
private final class WatchReader: @unchecked Sendable {
    private var lines: AsyncThrowingStream<Data, any Error>.Iterator
    private let channel: any Channel

    init(lines: AsyncThrowingStream<Data, any Error>, channel: any Channel) {
        self.lines = lines.makeAsyncIterator()
        self.channel = channel
    }

    func next() async throws -> (type: String, object: JSONValue)? {
        do {
            while let line = try await lines.next() {
                guard let event = try? JSONValue.parse(line), let type = event["type"]?.string else { continue }
                if type == "ERROR" {
                    throw APIError(status: event["object"] ?? .null)
                        ?? APIError.internalError("watch error: \(event.jsonString())")
                }
                return (type, event["object"] ?? .null)
            }
        } catch {
            ChannelTeardown.finish(channel)
            throw error
        }
        ChannelTeardown.finish(channel)
        return nil
    }

    deinit { ChannelTeardown.finish(channel) }
}

/// One HTTP/1.1 connection: one exchange at a time, answered through `ResponseCollector` on the event loop.
final class HTTPConnection: Sendable {
    let channel: any Channel
    private let collector: ResponseCollector
    private let used = NIOLockedValueBox(false)

    init(channel: any Channel, collector: ResponseCollector) {
        self.channel = channel
        self.collector = collector
    }

    /// Whether an exchange already ran on it (a failure then may just mean the server closed an idle connection).
    var reused: Bool { used.withLockedValue { $0 } }

    func exchange(method: String, path: String, body: Data?, contentType: String, host: String, timeout: TimeAmount)
        async throws -> (Int, Data, Bool)
    {
        used.withLockedValue { $0 = true }
        var headers = HTTPHeaders([("Host", host), ("Accept", "application/json"), ("User-Agent", "vmsync")])
        if let body {
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Content-Length", value: String(body.count))
        } else if method != "GET" {
            headers.add(name: "Content-Length", value: "0")
        }
        let head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: path, headers: headers)
        let promise = channel.eventLoop.makePromise(of: (Int, Data, Bool).self)
        let channel = channel
        let collector = collector
        channel.eventLoop.execute {
            collector.expect(.full(promise))
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            if let body {
                channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
            }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil)).whenFailure { promise.fail($0) }
        }
        let deadline = channel.eventLoop.scheduleTask(in: timeout) {
            collector.timeOut(
                APIError(
                    .timeout, code: 504,
                    "\(method) \(path) on \(host): no answer within \(timeout.nanoseconds / 1_000_000) ms"))
            channel.close(promise: nil)
        }
        defer { deadline.cancel() }
        return try await promise.futureResult.get()
    }

    /// Starts a streamed (watch) request: its head must come within `startTimeout`, and after that the stream ends
    /// with a `Timeout` error when nothing arrives for `silenceTimeout` (nil: it may stay silent).
    func stream(path: String, host: String, startTimeout: TimeAmount, silenceTimeout: TimeAmount?) async throws
        -> AsyncThrowingStream<Data, any Error>
    {
        used.withLockedValue { $0 = true }
        let headers = HTTPHeaders([("Host", host), ("Accept", "application/json"), ("User-Agent", "vmsync")])
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
        let (lines, continuation) = AsyncThrowingStream.makeStream(of: Data.self)
        let started = channel.eventLoop.makePromise(of: Void.self)
        let channel = channel
        let collector = collector
        channel.eventLoop.execute {
            collector.expect(.stream(started: started, lines: continuation))
            collector.silenceTimeout = silenceTimeout
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            channel.writeAndFlush(HTTPClientRequestPart.end(nil)).whenFailure { started.fail($0) }
        }
        let deadline = channel.eventLoop.scheduleTask(in: startTimeout) {
            collector.timeOut(
                APIError(
                    .timeout, code: 504,
                    "watch \(path) on \(host): no answer within \(startTimeout.nanoseconds / 1_000_000) ms"))
            channel.close(promise: nil)
        }
        defer { deadline.cancel() }
        try await started.futureResult.get()
        return lines
    }
}

/// Collects the response to the one outstanding request: whole, or as lines of a streamed (watch) body.
final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart

    enum Expectation {
        case full(EventLoopPromise<(Int, Data, Bool)>)
        case stream(started: EventLoopPromise<Void>, lines: AsyncThrowingStream<Data, any Error>.Continuation)
    }

    // Touched only on the channel's event loop.
    private var expectation: Expectation?
    /// A watch that stays silent this long after its head ends with a `Timeout` error.
    var silenceTimeout: TimeAmount?
    private var silence: Scheduled<Void>?
    private var status = 0
    private var keepAlive = true
    private var body = Data()
    private var streaming = false

    func expect(_ expectation: Expectation) {
        self.expectation = expectation
        status = 0
        body = Data()
        streaming = false
    }

    /// Fails the outstanding request with `error` (its deadline passed); the caller closes the channel.
    func timeOut(_ error: APIError) {
        fail(error)
    }

    /// Re-arms the silence deadline of a streaming watch.
    private func heard(_ context: ChannelHandlerContext) {
        silence?.cancel()
        guard streaming, let timeout = silenceTimeout else { return }
        let channel = context.channel
        silence = context.eventLoop.scheduleTask(in: timeout) { [weak self] in
            self?.fail(
                APIError(.timeout, code: 504, "the watch stayed silent for \(timeout.nanoseconds / 1_000_000) ms"))
            channel.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        defer { heard(context) }
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
            keepAlive = head.isKeepAlive
            if case .stream(let started, _) = expectation, status == 200 {
                streaming = true
                started.succeed(())
            }
        case .body(let buffer):
            body.append(contentsOf: buffer.readableBytesView)
            if streaming, case .stream(_, let lines) = expectation {
                while let newline = body.firstIndex(of: 10) {
                    let line = Data(body[body.startIndex..<newline])
                    body = Data(body[(newline + 1)...])
                    if !line.isEmpty { lines.yield(line) }
                }
            }
        case .end:
            let finished = expectation
            let wasStreaming = streaming
            expectation = nil
            streaming = false
            switch finished {
            case .full(let promise): promise.succeed((status, body, keepAlive))
            case .stream(let started, let lines):
                if wasStreaming {
                    lines.finish()
                } else {
                    let error =
                        APIError(status: (try? JSONValue.parse(body)) ?? .null)
                        ?? APIError(.internalError, code: status, "the watch was answered with \(status)")
                    started.fail(error)
                    lines.finish(throwing: error)
                }
            case nil: break
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The server ended its side (idle keep-alive connection closed, or shutting down): close ours too.
        if let event = event as? ChannelEvent, event == .inputClosed {
            fail(APIError(.serviceUnavailable, code: 503, "the server closed the connection"))
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(APIError(.serviceUnavailable, code: 503, "the server closed the connection"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
        context.close(promise: nil)
    }

    private func fail(_ error: any Error) {
        let pending = expectation
        expectation = nil
        silence?.cancel()
        silence = nil
        switch pending {
        case .full(let promise): promise.fail(error)
        case .stream(let started, let lines):
            started.fail(error)
            lines.finish(throwing: error)
        case nil: break
        }
    }
}
