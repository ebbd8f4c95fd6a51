import ClusterAPI
import Foundation
import Hummingbird

/// Authenticates every request by its connection's client certificate: the identity `PeerVerifier` verified during
/// the TLS handshake (cluster, role, name) becomes the request's `peer`, which the handler authorizes by role. A
/// request without one — which mutual TLS never lets through — is answered 401 with a `Status`.
struct PeerAuthenticationMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext

    func handle(
        _ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response
    ) async throws -> Response {
        guard let peer = context.connection?.peer else {
            let error = APIError(.unauthorized, code: 401, "the request came without a verified client certificate")
            return Response(
                status: .unauthorized, headers: [.contentType: "application/json"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: error.status.jsonData())))
        }
        var context = context
        context.peer = peer
        return try await next(request, context)
    }
}
