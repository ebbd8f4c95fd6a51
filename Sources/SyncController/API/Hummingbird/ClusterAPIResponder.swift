import ClusterAPI
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The cluster API as one Hummingbird responder: `ClusterAPIHandler` does the routing (Kubernetes paths are its
/// business), so every request reaches it whole — body read up to `ClusterAPIHandler.maximumBodyBytes` — and its
/// answer becomes a response; a watch becomes a streamed body that writes each event as it comes.
struct ClusterAPIResponder: HTTPResponder {
    typealias Context = APIRequestContext
    let handler: ClusterAPIHandler

    func respond(to request: Request, context: APIRequestContext) async throws -> Response {
        guard let peer = context.peer else {
            // PeerAuthenticationMiddleware runs first; without it nobody is authenticated.
            throw HTTPError(.unauthorized)
        }
        var body = ByteBuffer()
        var tooLarge = false
        for try await var chunk in request.body {
            // The rest of an oversized body is read and dropped, so the answer reaches a client still sending it.
            if tooLarge || body.readableBytes + chunk.readableBytes > ClusterAPIHandler.maximumBodyBytes {
                tooLarge = true
            } else {
                body.writeBuffer(&chunk)
            }
        }
        let headers = request.headers.map { ($0.name.rawName, $0.value) }
        let apiRequest = APIRequest(
            method: request.method.rawValue, uri: request.head.path ?? "/", headers: headers,
            body: Data(body.readableBytesView), peer: peer)
        let answer: APIResponse
        if tooLarge {
            context.connection?.closeAfterResponse()
            answer = .error(
                APIError(
                    .requestEntityTooLarge, code: 413,
                    "the request body is larger than \(ClusterAPIHandler.maximumBodyBytes) bytes"))
        } else {
            answer = await handler.handle(apiRequest)
        }
        var fields = HTTPFields()
        switch answer {
        case .full(let status, let contentType, let data):
            fields[.contentType] = contentType
            if context.connection?.closesAfterResponse == true { fields[.connection] = "close" }
            return Response(
                status: .init(code: status), headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
        case .stream(let status, let contentType, let lines):
            fields[.contentType] = contentType
            fields[.connection] = "close"
            context.connection?.closeAfterResponse()
            return Response(
                status: .init(code: status), headers: fields,
                body: Self.stream(lines, until: context.connection?.inputEnded))
        }
    }

    /// Writes each line as it arrives; ends when the lines do, or when the client goes (a watch with no events must
    /// not outlive its client).
    static func stream(_ lines: LineStream, until gone: EventLoopFuture<Void>?) -> ResponseBody {
        ResponseBody { writer in
            do {
                try await lines.run(endingWhen: gone) { lines in
                    for await line in lines { try await writer.write(ByteBuffer(bytes: line)) }
                }
                try await writer.finish(nil)
            } catch {
                // The client went: nothing more to write.
            }
        }
    }
}
