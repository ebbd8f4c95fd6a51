import Hummingbird
import Logging
import TLSTransport

/// The request context of the Hummingbird API server: Hummingbird's core storage, the connection the request came on,
/// and the client identity that `PeerAuthenticationMiddleware` established.
struct APIRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// The connection serving this request (nil only outside `AuthenticatedHTTPChannel`).
    let connection: APIConnection?
    /// The authenticated client; set by `PeerAuthenticationMiddleware`.
    var peer: PeerIdentity?

    init(source: ApplicationRequestContextSource) {
        coreContext = CoreRequestContextStorage(source: source)
        connection = APIConnection.current
        peer = nil
    }

    /// The cluster API reads bodies itself, up to its own limit.
    var maxUploadSize: Int { ClusterAPIHandler.maximumBodyBytes }
}
