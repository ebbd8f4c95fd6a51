/// The roles a cluster certificate can carry.
///
/// The role is written into the subject's organizational unit (`OU=node`), so certificates made with the
/// `openssl` CLI (see `certs/`) carry it the same way. The two peer-sync identities additionally use the
/// common names KubeVirt's synchronization controller uses, and are recognised by those names alone.
public enum PeerRole: String, CaseIterable, Hashable, Sendable, Codable {
    /// A cluster's sync controller: serves the cluster API, is a client of node agents.
    case controller
    /// A node agent: a client of the cluster API and both ends of node-to-node tunnels.
    case node
    /// A human or tool using the cluster API (syncctl, kubectl, curl).
    case user
    /// The client side of controller-to-controller synchronization.
    case syncClient = "sync-client"
    /// The server side of controller-to-controller synchronization.
    case syncServer = "sync-server"

    /// KubeVirt's common name for the synchronization controller acting as a client.
    public static let syncClientCommonName = "kubevirt.io:system:client:virt-synchronization-controller"
    /// KubeVirt's common name for the synchronization controller acting as a server.
    public static let syncServerCommonName = "kubevirt.io:system:node:virt-synchronization-controller"

    /// Whether certificates of this role may authenticate a TLS server.
    public var servesTLS: Bool {
        switch self {
        case .controller, .node, .syncServer: true
        case .user, .syncClient: false
        }
    }

    /// Whether certificates of this role may authenticate a TLS client.
    public var actsAsTLSClient: Bool {
        switch self {
        case .controller, .node, .user, .syncClient: true
        case .syncServer: false
        }
    }

    /// The common name a certificate of this role must carry, when the role fixes it.
    public var fixedCommonName: String? {
        switch self {
        case .syncClient: Self.syncClientCommonName
        case .syncServer: Self.syncServerCommonName
        default: nil
        }
    }

    /// Parses a role name as written on the command line or in a certificate's OU.
    public init(parsing text: String) throws(TransportError) {
        guard let role = PeerRole(rawValue: text.lowercased()) else {
            let known = PeerRole.allCases.map(\.rawValue).joined(separator: ", ")
            throw TransportError(.invalidArgument, "unknown role \"\(text)\"; known roles: \(known)")
        }
        self = role
    }
}
