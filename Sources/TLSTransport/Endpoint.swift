import NIOCore
import NIOPosix

/// A place to listen on or connect to: a TCP host and port, or a unix socket path.
public enum Endpoint: Sendable, Hashable, CustomStringConvertible {
    /// A TCP address; port 0 when binding picks a free port.
    case tcp(host: String, port: Int)
    /// A unix domain socket path.
    case unix(path: String)

    /// Parses `unix:/path`, `/path`, `host:port` or `[v6]:port`.
    public init(parsing text: String) throws(TransportError) {
        if text.hasPrefix("unix:") {
            self = .unix(path: String(text.dropFirst(5)))
        } else if text.hasPrefix("/") {
            self = .unix(path: text)
        } else if let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        {
            var host = String(text[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            self = .tcp(host: host, port: port)
        } else {
            throw TransportError(.invalidArgument, "\"\(text)\" is neither HOST:PORT nor a unix socket path")
        }
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }

    func bind(_ bootstrap: ServerBootstrap) async throws -> any Channel {
        switch self {
        case .tcp(let host, let port): try await bootstrap.bind(host: host, port: port).get()
        case .unix(let path):
            try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
        }
    }

    func connect(_ bootstrap: ClientBootstrap) -> EventLoopFuture<any Channel> {
        switch self {
        case .tcp(let host, let port): bootstrap.connect(host: host, port: port)
        case .unix(let path): bootstrap.connect(unixDomainSocketPath: path)
        }
    }

    /// The endpoint a bound channel actually listens on (with the chosen port).
    static func bound(_ channel: any Channel, requested: Endpoint) -> Endpoint {
        if case .tcp(let host, _) = requested, let port = channel.localAddress?.port {
            return .tcp(host: host, port: port)
        }
        return requested
    }
}
