import ClusterAPI
public import Foundation
public import NIOCore
public import TLSTransport

/// One HTTP request to the cluster API, already read in full.
public struct APIRequest: Sendable {
    public var method: String
    /// The path without the query.
    public var path: String
    public var query: [String: String]
    public var headers: [(name: String, value: String)]
    public var body: Data
    /// Who sent it (from the client certificate).
    public var peer: PeerIdentity

    public init(method: String, uri: String, headers: [(name: String, value: String)], body: Data, peer: PeerIdentity) {
        self.method = method
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = String(parts.first ?? "/")
        var query: [String: String] = [:]
        if parts.count > 1 {
            for pair in parts[1].split(separator: "&") {
                let keyValue = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let key = String(keyValue[0]).removingPercentEncoding ?? String(keyValue[0])
                let value =
                    keyValue.count > 1
                    ? (String(keyValue[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "") : ""
                query[key] = value
            }
        }
        self.query = query
        self.headers = headers
        self.body = body
        self.peer = peer
    }

    /// The first header called `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// Whether the client wants YAML back.
    var wantsYAML: Bool { (header("Accept") ?? "").contains("yaml") }

    /// Whether the client asks for a meta.k8s.io Table (kubectl get).
    var wantsTable: Bool { (header("Accept") ?? "").contains("as=Table") }

    /// The body as a JSON value: JSON, or YAML when the content type says so (or the text is not JSON).
    func bodyValue() throws(APIError) -> JSONValue {
        guard !body.isEmpty else { throw APIError.badRequest("the request has no body") }
        let type = (header("Content-Type") ?? "").lowercased()
        if type.contains("yaml") { return try YAML.document(String(decoding: body, as: UTF8.self)) }
        if type.contains("json") || body.first == UInt8(ascii: "{") || body.first == UInt8(ascii: "[") {
            return try JSONValue.parse(body)
        }
        return try YAML.document(String(decoding: body, as: UTF8.self))
    }
}

/// What the API answers.
public enum APIResponse: Sendable {
    /// A complete body.
    case full(status: Int, contentType: String, body: Data)
    /// A watch: one JSON line per event until the stream ends or the client goes.
    case stream(status: Int, contentType: String, lines: LineStream)

    static func json(_ value: JSONValue, status: Int = 200, yaml: Bool = false) -> APIResponse {
        if yaml { return .full(status: status, contentType: "application/yaml", body: Data(YAML.text(value).utf8)) }
        return .full(status: status, contentType: "application/json", body: value.jsonData())
    }

    static func error(_ error: APIError, yaml: Bool = false) -> APIResponse {
        json(error.status, status: error.code, yaml: yaml)
    }

    static func text(_ text: String, status: Int = 200, contentType: String = "text/plain; charset=utf-8")
        -> APIResponse
    {
        .full(status: status, contentType: contentType, body: Data(text.utf8))
    }

    var status: Int {
        switch self {
        case .full(let status, _, _), .stream(let status, _, _): status
        }
    }
}

/// The body of a streamed answer (a watch): a producer of lines that the server runs as a child task of the
/// connection's own task, through a buffer of at most `bufferLimit` lines, while it writes the lines out. Nothing
/// outlives the connection: when the writing ends (the lines end, the client goes, a write fails), the producer is
/// cancelled and waited for.
public struct LineStream: Sendable {
    /// Lines produced and not yet written beyond which the producer's `yield` reports `.dropped` (a client that does
    /// not read).
    public let bufferLimit: Int
    let produce: @Sendable (AsyncStream<Data>.Continuation) async -> Void

    public init(bufferLimit: Int, produce: @escaping @Sendable (AsyncStream<Data>.Continuation) async -> Void) {
        self.bufferLimit = bufferLimit
        self.produce = produce
    }

    /// Fixed lines (an answer known at once, as the 410 ERROR event of a compacted watch).
    public static func lines(_ lines: [Data]) -> LineStream {
        LineStream(bufferLimit: max(1, lines.count)) { continuation in
            for line in lines { continuation.yield(line) }
        }
    }

    /// Runs the producer while `write` reads its lines; the lines end early when `gone` completes (the client's input
    /// ended or its connection closed), so an idle watch does not outlive its client.
    public func run(
        endingWhen gone: EventLoopFuture<Void>?, _ write: (AsyncStream<Data>) async throws -> Void
    ) async throws {
        let (lines, continuation) = AsyncStream<Data>.makeStream(bufferingPolicy: .bufferingOldest(bufferLimit))
        gone?.whenComplete { _ in continuation.finish() }
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                await produce(continuation)
                continuation.finish()
            }
            try await write(lines)
            group.cancelAll()
        }
    }
}
