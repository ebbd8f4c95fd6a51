import NIOConcurrencyHelpers

/// What the receiving end of a tunnel does with a named channel.
public enum TunnelRoute: Sendable, Hashable {
    /// Connect the channel to this local target.
    case forward(Endpoint)
    /// Refuse the channel, telling the peer why.
    case refuse(String)
}

/// Which channels a tunnel exit serves, where each goes, and which peers may open it.
///
/// Entries are added and removed while the exit runs (a migration registers its streams when it starts and removes
/// them when it ends). A channel that is not registered, or is opened by a peer its entry does not allow, is refused.
public final class TunnelRoutingTable: Sendable {
    struct Entry: Sendable {
        var target: Endpoint
        var peers: PeerPolicy
    }

    private let entries = NIOLockedValueBox<[String: Entry]>([:])

    /// An empty table.
    public init() {}

    /// Serves `channel` by connecting it to `target`, for peers that `peers` allows.
    public func allow(channel: String, to target: Endpoint, peers: PeerPolicy) throws(TransportError) {
        if let problem = TunnelProtocol.validate(channel) {
            throw TransportError(.invalidArgument, problem)
        }
        entries.withLockedValue { $0[channel] = Entry(target: target, peers: peers) }
    }

    /// Stops serving `channel`; connections already open stay.
    public func remove(channel: String) {
        _ = entries.withLockedValue { $0.removeValue(forKey: channel) }
    }

    /// The channels currently served.
    public var channels: [String] { entries.withLockedValue { Array($0.keys).sorted() } }

    /// The decision for `peer` opening `channel`.
    public func route(peer: PeerIdentity, channel: String) -> TunnelRoute {
        guard let entry = entries.withLockedValue({ $0[channel] }) else {
            return .refuse("channel \"\(channel)\" is not served here")
        }
        guard entry.peers.allowedRoles.contains(peer.role),
            entry.peers.allowedNames.map({ $0.contains(peer.name) }) ?? true
        else {
            return .refuse("\(peer) is not authorized for channel \"\(channel)\"")
        }
        return .forward(entry.target)
    }
}
