import ClusterAPI
public import Foundation
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
                let value = keyValue.count > 1 ? (String(keyValue[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "") : ""
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
    case stream(status: Int, contentType: String, lines: AsyncStream<Data>)

    static func json(_ value: JSONValue, status: Int = 200, yaml: Bool = false) -> APIResponse {
        if yaml { return .full(status: status, contentType: "application/yaml", body: Data(YAML.text(value).utf8)) }
        return .full(status: status, contentType: "application/json", body: value.jsonData())
    }

    static func error(_ error: APIError, yaml: Bool = false) -> APIResponse {
        json(error.status, status: error.code, yaml: yaml)
    }

    static func text(_ text: String, status: Int = 200, contentType: String = "text/plain; charset=utf-8") -> APIResponse {
        .full(status: status, contentType: contentType, body: Data(text.utf8))
    }

    var status: Int {
        switch self {
        case .full(let status, _, _), .stream(let status, _, _): status
        }
    }
}
