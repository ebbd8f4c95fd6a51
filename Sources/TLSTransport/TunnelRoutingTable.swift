import NIOConcurrencyHelpers
import NIOCore

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
    /// The connections carrying each channel (tunnel and target sides), closed when its route is withdrawn.
    private let carrying = NIOLockedValueBox<[String: [ObjectIdentifier: any Channel]]>([:])

    /// An empty table.
    public init() {}

    /// How long a retired route's open connections may go on.
    static let retireGrace = TimeAmount.seconds(30)

    /// Serves `channel` by connecting it to `target`, for peers that `peers` allows.
    public func allow(channel: String, to target: Endpoint, peers: PeerPolicy) throws(TransportError) {
        if let problem = TunnelProtocol.validate(channel) {
            throw TransportError(.invalidArgument, problem)
        }
        entries.withLockedValue { $0[channel] = Entry(target: target, peers: peers) }
    }

    /// Stops serving `channel` and closes the connections that carry it: a withdrawn route leaves nothing open. With
    /// `closingOpen: false` the route is retired instead: no new connection, and those open may finish by themselves
    /// (a migration that succeeded, whose source may still be confirming over its libvirt connection) — for at most
    /// `retireGrace`, then they are closed too.
    public func remove(channel: String, closingOpen: Bool = true) {
        let open = entries.withLockedValue { entries -> [ObjectIdentifier: any Channel] in
            entries.removeValue(forKey: channel)
            return carrying.withLockedValue { $0.removeValue(forKey: channel) } ?? [:]
        }
        for connection in open.values {
            if closingOpen {
                connection.close(promise: nil)
            } else {
                connection.eventLoop.scheduleTask(in: Self.retireGrace) { connection.close(promise: nil) }
            }
        }
    }

    /// Records `connections` as carrying `channel` until they close; false (nothing recorded) when the route was
    /// withdrawn meanwhile — the caller closes them.
    func carry(channel: String, on connections: [any Channel]) -> Bool {
        let recorded = entries.withLockedValue { entries -> Bool in
            guard entries[channel] != nil else { return false }
            carrying.withLockedValue { carrying in
                for connection in connections {
                    carrying[channel, default: [:]][ObjectIdentifier(connection)] = connection
                }
            }
            return true
        }
        guard recorded else { return false }
        for connection in connections {
            let key = ObjectIdentifier(connection)
            connection.closeFuture.whenComplete { [weak self] _ in
                _ = self?.carrying.withLockedValue { $0[channel]?.removeValue(forKey: key) }
            }
        }
        return true
    }

    /// How many connections carry `channel` now.
    public func connections(carrying channel: String) -> Int {
        carrying.withLockedValue { $0[channel]?.count ?? 0 }
    }

    /// The channels currently served.
    public var channels: [String] { entries.withLockedValue { Array($0.keys).sorted() } }

    /// The decision for `peer` opening `channel`.
    public func route(peer: PeerIdentity, channel: String) -> TunnelRoute {
        guard let entry = entries.withLockedValue({ $0[channel] }) else {
            return .refuse("channel \"\(channel)\" is not served here")
        }
        guard entry.peers.admits(peer) else {
            return .refuse("\(peer) is not authorized for channel \"\(channel)\"")
        }
        return .forward(entry.target)
    }
}
