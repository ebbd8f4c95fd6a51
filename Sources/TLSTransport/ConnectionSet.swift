import NIOConcurrencyHelpers
import NIOCore

/// The open channels of a listener, so that shutting it down also ends what it accepted.
final class ConnectionSet: Sendable {
    private let channels = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])

    func track(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        channels.withLockedValue { $0[key] = channel }
        channel.closeFuture.whenComplete { _ in
            _ = self.channels.withLockedValue { $0.removeValue(forKey: key) }
        }
    }

    var count: Int { channels.withLockedValue { $0.count } }

    /// Aborts every open connection and waits until they are closed.
    func closeAll() async {
        let open = channels.withLockedValue { Array($0.values) }
        for channel in open {
            ChannelTeardown.abort(channel)
        }
        for channel in open {
            try? await channel.closeFuture.get()
        }
    }
}

/// Something that happened on a tunnel, for logs, metrics and tests.
public enum TunnelEvent: Sendable, CustomStringConvertible {
    /// A channel was accepted and joined to its target.
    case opened(channel: String, peer: PeerIdentity)
    /// A connection or channel was refused, with the reason.
    case refused(channel: String?, error: TransportError)

    public var description: String {
        switch self {
        case .opened(let channel, let peer): "opened \"\(channel)\" for \(peer)"
        case .refused(let channel, let error): "refused \(channel.map { "\"\($0)\"" } ?? "connection"): \(error)"
        }
    }
}
