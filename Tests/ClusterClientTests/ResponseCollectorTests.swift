import ClusterAPI
import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import ClusterClient

/// The API client's response handler, driven through `EmbeddedChannel`: whole answers, watch streams cut anywhere,
/// refusals, silence and a server that goes away.
@Suite("Response collector (EmbeddedChannel)")
struct ResponseCollectorTests {
    func head(_ status: HTTPResponseStatus, keepAlive: Bool = true) -> HTTPClientResponsePart {
        var head = HTTPResponseHead(version: .http1_1, status: status)
        if !keepAlive { head.headers.add(name: "Connection", value: "close") }
        return .head(head)
    }

    func body(_ text: String) -> HTTPClientResponsePart { .body(ByteBuffer(string: text)) }

    @Test(
        "a whole answer: status, the body from every chunk, and whether the connection may be kept",
        arguments: [true, false])
    func fullAnswer(keepAlive: Bool) throws {
        let collector = ResponseCollector()
        let channel = try connected(EmbeddedChannel(handler: collector))
        let promise = channel.eventLoop.makePromise(of: (Int, Data, Bool).self)
        collector.expect(.full(promise))
        try channel.writeInbound(head(.created, keepAlive: keepAlive))
        try channel.writeInbound(body("{\"a\":"))
        try channel.writeInbound(body("1}"))
        try channel.writeInbound(HTTPClientResponsePart.end(nil))
        let (status, data, kept) = try promise.futureResult.wait()
        #expect(status == 201 && String(decoding: data, as: UTF8.self) == "{\"a\":1}" && kept == keepAlive)
    }

    @Test(
        "a watch: lines split across chunks arrive whole and in order, blank lines are skipped, the end finishes the stream"
    )
    func watchLines() async throws {
        let collector = ResponseCollector()
        let channel = try connected(EmbeddedChannel(handler: collector))
        let started = channel.eventLoop.makePromise(of: Void.self)
        let (lines, continuation) = AsyncThrowingStream.makeStream(of: Data.self)
        collector.expect(.stream(started: started, lines: continuation))
        try channel.writeInbound(head(.ok))
        try started.futureResult.wait()
        try channel.writeInbound(body("{\"type\":\"ADDED\"}\n{\"ty"))
        try channel.writeInbound(body("pe\":\"MODIFIED\"}\n\n"))
        try channel.writeInbound(HTTPClientResponsePart.end(nil))
        var received: [String] = []
        for try await line in lines { received.append(String(decoding: line, as: UTF8.self)) }
        #expect(received == ["{\"type\":\"ADDED\"}", "{\"type\":\"MODIFIED\"}"])
    }

    @Test("a watch the server refuses fails with the server's Status (code and message), not an empty stream")
    func watchRefused() async throws {
        let collector = ResponseCollector()
        let channel = try connected(EmbeddedChannel(handler: collector))
        let started = channel.eventLoop.makePromise(of: Void.self)
        let (lines, continuation) = AsyncThrowingStream.makeStream(of: Data.self)
        collector.expect(.stream(started: started, lines: continuation))
        try channel.writeInbound(head(.forbidden))
        try channel.writeInbound(
            body(
                #"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"message":"node a may not watch secrets"}"#
            ))
        try channel.writeInbound(HTTPClientResponsePart.end(nil))
        #expect(throws: APIError.self) { try started.futureResult.wait() }
        let error = await #expect(throws: APIError.self) { for try await _ in lines {} }
        #expect(
            error?.code == 403 && error?.message.contains("may not watch secrets") == true,
            "\(String(describing: error))")
    }

    @Test("a watch silent for longer than its silence timeout ends with a Timeout error and the connection is closed")
    func watchSilence() async throws {
        let collector = ResponseCollector()
        let channel = try connected(EmbeddedChannel(handler: collector))
        collector.silenceTimeout = .seconds(5)
        let started = channel.eventLoop.makePromise(of: Void.self)
        let (lines, continuation) = AsyncThrowingStream.makeStream(of: Data.self)
        collector.expect(.stream(started: started, lines: continuation))
        try channel.writeInbound(head(.ok))
        try channel.writeInbound(body("{\"type\":\"ADDED\"}\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        #expect(channel.isActive, "4 s of silence is allowed")
        try channel.writeInbound(body("{\"type\":\"MODIFIED\"}\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        #expect(channel.isActive, "each line re-arms the deadline")
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
        var received = 0
        let error = await #expect(throws: APIError.self) { for try await _ in lines { received += 1 } }
        #expect(
            received == 2 && error?.code == 504 && error?.message.contains("silent") == true,
            "\(String(describing: error))")
    }

    @Test("a server that closes its side fails the outstanding request with 503 and the client closes too")
    func serverGoes() throws {
        let collector = ResponseCollector()
        let channel = try connected(EmbeddedChannel(handler: collector))
        let promise = channel.eventLoop.makePromise(of: (Int, Data, Bool).self)
        collector.expect(.full(promise))
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        let error = #expect(throws: APIError.self) { try promise.futureResult.wait() }
        #expect(error?.code == 503 && error?.message.contains("closed the connection") == true)
        #expect(!channel.isActive)
    }
}

/// An embedded channel made active, as an accepted or dialled connection is.
func connected(_ channel: EmbeddedChannel) throws -> EmbeddedChannel {
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    return channel
}
