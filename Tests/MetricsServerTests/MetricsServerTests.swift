import Foundation
import Metrics
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Prometheus
import TestSupport
import Testing

@testable import MetricsServer

/// The `/metrics` endpoint: the request handler driven through NIO's HTTP codec on an `EmbeddedChannel`, and the
/// server on a real socket with curl as its client.
@Suite("The /metrics endpoint")
struct MetricsServerTests {
    /// A channel with the server's pipeline: NIO's HTTP codec with the server's head limits, the request deadline
    /// and the request handler (the scrape loop would read what comes out of it).
    private func channel(requestTimeout: TimeAmount = .seconds(30)) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try MetricsServer.configure(channel, requestTimeout: requestTimeout)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        return channel
    }

    /// Sends `request` and returns everything the channel wrote back.
    private func exchange(_ channel: EmbeddedChannel, _ request: String) throws -> String {
        try channel.writeInbound(ByteBuffer(string: request))
        var text = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
        return text
    }

    @Test(
        "GET and HEAD of /metrics (a query string too) go on to the scrape loop as their heads, one request at a time; nothing is answered for them here"
    )
    func scrape() throws {
        let channel = try channel()
        #expect(try exchange(channel, "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").isEmpty)
        let head = try #require(try channel.readInbound(as: HTTPRequestHead.self))
        #expect(head.method == .GET && head.uri == "/metrics" && head.isKeepAlive)
        // The scrape loop's answer; the next request is let through only after it (HTTP pipelining).
        try channel.writeOutbound(
            HTTPServerResponsePart.head(
                HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "5"])))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "up 1\n"))))
        #expect(
            try exchange(channel, "HEAD /metrics?name[]=up HTTP/1.1\r\nHost: a\r\n\r\n").hasPrefix("HTTP/1.1 200 OK"))
        #expect(try channel.readInbound(as: HTTPRequestHead.self) == nil, "waits for the first answer's end")
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        while try channel.readOutbound(as: ByteBuffer.self) != nil {}
        let second = try #require(try channel.readInbound(as: HTTPRequestHead.self))
        #expect(second.method == .HEAD && second.uri == "/metrics?name[]=up")
        #expect(channel.isActive)
        _ = try channel.finish()
    }

    @Test(
        "another path is 404, another method 405 naming the allowed ones; both keep the connection",
        arguments: [
            ("GET / HTTP/1.1", "404 Not Found", nil),
            ("GET /metricsx HTTP/1.1", "404 Not Found", nil),
            ("GET /healthz HTTP/1.1", "404 Not Found", nil),
            ("POST /metrics HTTP/1.1", "405 Method Not Allowed", "Allow: GET, HEAD"),
            ("DELETE /metrics HTTP/1.1", "405 Method Not Allowed", "Allow: GET, HEAD"),
        ] as [(String, String, String?)])
    func refused(requestLine: String, status: String, header: String?) throws {
        let channel = try channel()
        let answer = try exchange(channel, "\(requestLine)\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        #expect(answer.hasPrefix("HTTP/1.1 \(status)\r\n"), "\(answer)")
        if let header { #expect(answer.contains(header + "\r\n"), "\(answer)") }
        #expect(!answer.contains("Connection: close"))
        #expect(try channel.readInbound(as: HTTPRequestHead.self) == nil)
        _ = try exchange(channel, "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(
            try channel.readInbound(as: HTTPRequestHead.self)?.uri == "/metrics",
            "the connection serves the next request")
        _ = try channel.finish()
    }

    @Test("a body past the limit is answered 413 and the connection closed, without keeping the body")
    func largeBody() throws {
        let channel = try channel()
        let size = MetricsRequestHandler.maximumBodyBytes + 1
        let answer = try exchange(
            channel,
            "POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: \(size * 100)\r\n\r\n"
                + String(repeating: "x", count: size))
        #expect(
            answer.hasPrefix("HTTP/1.1 413 Payload Too Large\r\n") && answer.contains("Connection: close\r\n"),
            "\(answer)")
        #expect(!channel.isActive)
    }

    @Test(
        "a head past the decoder's limits (a long URI, a long header, too many headers) is answered 400 and the connection closed",
        arguments: [
            "GET /metrics?" + String(repeating: "a", count: 9000) + " HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: " + String(repeating: "b", count: 9000) + "\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n" + (0..<100).map { "X-\($0): v\r\n" }.joined() + "\r\n",
            "NOT HTTP AT ALL\r\n\r\n",
        ])
    func largeHead(request: String) throws {
        let channel = try channel()
        let answer = try exchange(channel, request)
        #expect(answer.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(answer.prefix(200))")
        #expect(!channel.isActive)
    }

    @Test("a connection that does not complete a request within the deadline is closed, even one that keeps sending")
    func requestDeadline() throws {
        let channel = try channel(requestTimeout: .seconds(10))
        _ = try exchange(channel, "GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n")
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        #expect(channel.isActive, "a request within the deadline")
        // A request dripping in: each byte resets nothing.
        for byte in "GET /metrics HTTP/1.1\r\nHost: a\r\n".utf8.prefix(12) {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
            channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        }
        #expect(!channel.isActive)
    }

    @Test(
        "the server on a socket: curl scrapes a Prometheus registry fed through swift-metrics, and gets 404, 405, 413 and 400 where due"
    )
    func curl() async throws {
        let registry = PrometheusCollectorRegistry()
        let factory = PrometheusMetricsFactory(registry: registry)
        let counter = Counter(label: "vmsync_test_total", dimensions: [("result", "success")], factory: factory)
        counter.increment(by: 3)
        Timer(label: "vmsync_test_duration_seconds", factory: factory).record(duration: .milliseconds(20))
        let server = try await MetricsServer.bind(ListenAddress(host: "127.0.0.1", port: 0)) { () async -> [UInt8] in
            var bytes: [UInt8] = []
            registry.emit(into: &bytes)
            return bytes
        }
        #expect(server.address.port != 0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await server.run() }
            let url = "http://\(server.address)/metrics"
            let scrape = try await run("/usr/bin/curl", ["-sS", "-i", url])
            #expect(scrape.status == 0, "\(scrape.stderr)")
            #expect(scrape.stdout.hasPrefix("HTTP/1.1 200 OK"), "\(scrape.stdout)")
            #expect(
                scrape.stdout.contains("# TYPE vmsync_test_total counter")
                    && scrape.stdout.contains(#"vmsync_test_total{result="success"} 3"#), "\(scrape.stdout)")
            #expect(scrape.stdout.contains("vmsync_test_duration_seconds_count 1"), "\(scrape.stdout)")

            func status(_ arguments: [String]) async throws -> String {
                try await run("/usr/bin/curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}"] + arguments).stdout
            }
            #expect(try await status(["http://\(server.address)/"]) == "404")
            #expect(try await status(["-X", "POST", url]) == "405")
            #expect(try await status(["--data-binary", String(repeating: "x", count: 64 << 10), url]) == "413")
            #expect(try await status(["-H", "X-Big: " + String(repeating: "b", count: 20_000), url]) == "400")
            // Two scrapes on one kept-alive connection.
            let twice = try await run("/usr/bin/curl", ["-sS", "-v", url, url])
            #expect(
                twice.stderr.contains("Re-using existing connection")
                    || twice.stderr.contains("Reusing existing connection"), "\(twice.stderr)")
            group.cancelAll()
        }
        // Stopped: nothing listens any more.
        let after = try await run(
            "/usr/bin/curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://\(server.address)/metrics"])
        #expect(after.status != 0 && after.stdout == "000")
    }

    @Test(
        "--metrics-listen addresses: HOST:PORT and [v6]:PORT; anything else says what is wrong",
        arguments: [
            ("127.0.0.1:9464", "127.0.0.1", 9464), ("[::1]:9464", "::1", 9464), ("0.0.0.0:0", "0.0.0.0", 0),
            ("localhost:80", "localhost", 80),
        ])
    func listenAddress(text: String, host: String, port: Int) throws {
        let address = try ListenAddress(parsing: text)
        #expect(address.host == host && address.port == port)
        #expect(address.description == text)
    }

    @Test(
        "a --metrics-listen value that is not HOST:PORT is refused with the reason",
        arguments: ["9464", "host:", "host:70000", ":9464", "::1:9464", "a:b"])
    func badListenAddress(text: String) {
        #expect(throws: ListenAddressError.self) { try ListenAddress(parsing: text) }
    }
}
