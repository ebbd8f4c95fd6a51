import ClusterAPI
import TLSTransport

/// Who may do what, by the role in the client certificate: `controller` and `user` may do everything; a `node` reads
/// everything but writes only its own Node, the status of VMIs on it and of migrations it is the source or target of; other roles may not use the cluster API.
enum Authorization {
    static func check(
        _ request: APIRequest, kind: ResourceKind, namespace: String?, name: String?, subresource: Subresource
    ) throws(APIError) {
        let peer = request.peer
        switch peer.role {
        case .controller, .user:
            return
        case .node:
            if kind.kind == Kinds.secret.kind {
                // vmsync's VMIs name no Secret, so no node needs one.
                throw APIError.forbidden(
                    "secrets is forbidden: node \"\(peer.name)\" may read only the Secrets a VMI on it uses, and none does (\(request.method) \(request.path))"
                )
            }
            if request.method == "GET" { return }
            if kind.kind == "Node", name == peer.name || (request.method == "POST" && bodyName(request) == peer.name) {
                return
            }
            if kind.kind == Kinds.certificateSigningRequest.kind, request.method == "POST", name == nil {
                // Its own renewal; the handler checks that the request is for this node.
                return
            }
            if kind.kind == "VirtualMachineInstance", subresource == .status,
                request.method == "PUT" || request.method == "PATCH"
            {
                // That the VMI is on this node now (and, when it hands the VMI over, that the new node is the target of
                // its migration), the handler checks against the store.
                return
            }
            if kind.kind == "VirtualMachineInstanceMigration", subresource == .status,
                request.method == "PUT" || request.method == "PATCH"
            {
                // Only the source or target node of the migration; the handler checks against the store.
                return
            }
            throw APIError.forbidden(
                "\(kind.resource)\(name.map { " \"\($0)\"" } ?? "") is forbidden: node \"\(peer.name)\" may write only its own Node and the status of VMIs on it (\(request.method) \(request.path))"
            )
        case .syncClient, .syncServer:
            throw APIError.forbidden("the \(peer.role.rawValue) role may not use the cluster API (\(peer))")
        }
    }

    private static func bodyName(_ request: APIRequest) -> String? {
        (try? request.bodyValue())?["metadata"]?["name"]?.string
    }
}
