import NIOConcurrencyHelpers
import NIOCore

/// What the receiving end of a tunnel does with a named channel.
public enum TunnelRoute: Sendable, Hashable {
    /// Connect the channel to this local target.
    case forward(Endpoint)
    /// Carry the channel on to another tunnel exit (a gateway's next hop): the same channel is opened there.
    case relay(TunnelHop)
    /// Refuse the channel, telling the peer why.
    case refuse(String)
}

/// The next tunnel exit a gateway carries a channel to: dialled with `provider`'s identity, its certificate checked
/// against `exitPolicy`.
public struct TunnelHop: Sendable, Hashable, CustomStringConvertible {
    public var remote: Endpoint
    public var provider: TLSContextProvider
    public var exitPolicy: PeerPolicy

    public init(remote: Endpoint, provider: TLSContextProvider, exitPolicy: PeerPolicy) {
        self.remote = remote
        self.provider = provider
        self.exitPolicy = exitPolicy
    }

    public static func == (lhs: TunnelHop, rhs: TunnelHop) -> Bool {
        lhs.remote == rhs.remote && lhs.provider === rhs.provider && lhs.exitPolicy == rhs.exitPolicy
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(remote)
        hasher.combine(ObjectIdentifier(provider))
        hasher.combine(exitPolicy)
    }

    public var description: String { "\(remote)" }
}

/// Which channels a tunnel exit serves, where each goes, and which peers may open it.
///
/// Entries are added and removed while the exit runs (a migration registers its streams when it starts and removes
/// them when it ends). A channel that is not registered, or is opened by a peer its entry does not allow, is refused.
public final class TunnelRoutingTable: Sendable {
    struct Entry: Sendable {
        var target: Endpoint
        /// Peers any of these policies admits may open the channel.
        var peers: [PeerPolicy]
    }

    private let entries = NIOLockedValueBox<[String: Entry]>([:])
    /// The connections carrying each channel (tunnel and target sides), closed when its route is withdrawn.
    private let carrying = NIOLockedValueBox<[String: [ObjectIdentifier: any Channel]]>([:])

    /// Decides channels no entry names (a gateway's, from what its cluster knows at the moment the channel opens).
    private let resolve: (@Sendable (PeerIdentity, String) -> TunnelRoute)?

    /// An empty table.
    public init() { resolve = nil }

    /// A table that asks `resolve` about every channel no entry names.
    public init(resolve: @escaping @Sendable (_ peer: PeerIdentity, _ channel: String) -> TunnelRoute) {
        self.resolve = resolve
    }

    /// How long a retired route's open connections may go on.
    static let retireGrace = TimeAmount.seconds(30)

    /// Serves `channel` by connecting it to `target`, for peers that `peers` allows.
    public func allow(channel: String, to target: Endpoint, peers: PeerPolicy) throws(TransportError) {
        try allow(channel: channel, to: target, anyOf: [peers])
    }

    /// Serves `channel` by connecting it to `target`, for peers any of `policies` allows (e.g. the peer cluster's
    /// source node, and this cluster's gateway carrying that node's channel).
    public func allow(channel: String, to target: Endpoint, anyOf policies: [PeerPolicy]) throws(TransportError) {
        if let problem = TunnelProtocol.validate(channel) {
            throw TransportError(.invalidArgument, problem)
        }
        entries.withLockedValue { $0[channel] = Entry(target: target, peers: policies) }
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
            guard entries[channel] != nil || resolve != nil else { return false }
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
                self?.carrying.withLockedValue { carrying in
                    carrying[channel]?.removeValue(forKey: key)
                    // A resolved channel is never removed: its key goes with its last connection.
                    if carrying[channel]?.isEmpty == true { carrying.removeValue(forKey: channel) }
                }
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
            return resolve?(peer, channel) ?? .refuse("channel \"\(channel)\" is not served here")
        }
        guard entry.peers.contains(where: { $0.admits(peer) }) else {
            return .refuse("\(peer) is not authorized for channel \"\(channel)\"")
        }
        return .forward(entry.target)
    }
}
