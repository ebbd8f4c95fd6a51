import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import X509

/// Which TLS versions an endpoint speaks.
public enum TLSVersionPolicy: String, Sendable, Hashable {
    /// TLS 1.3 only (the default).
    case tls13
    /// TLS 1.2 or newer, for peers that cannot do 1.3.
    case tls12OrNewer = "tls12"

    var minimum: TLSVersion { self == .tls13 ? .tlsv13 : .tlsv12 }
}

/// The TLS material of one process: its own certified key and the bundle it trusts.
///
/// Listeners and dialers read the current material for every new handshake, so `reload` takes effect on the next
/// connection without restarting a listener; established connections keep the material they were made with.
public final class TLSContextProvider: Sendable {
    struct Material: Sendable {
        var identity: CertifiedKey
        var trust: TrustBundle
        var versions: TLSVersionPolicy
        var serverContext: NIOSSLContext
        var clientContext: NIOSSLContext
        /// The identity as NIOSSL takes it (for `MutualTLS.certificateReloader`).
        var chain: [NIOSSLCertificate]
        var key: NIOSSLPrivateKey

        /// The cluster this process belongs to: the one that issued its own certificate.
        var homeCluster: String? { CertificateSubject(identity.certificate).cluster }
    }

    private let material: NIOLockedValueBox<Material>

    /// Creates a provider from an identity and a trust bundle.
    public init(identity: CertifiedKey, trust: TrustBundle, versions: TLSVersionPolicy = .tls13) throws(TransportError)
    {
        self.material = NIOLockedValueBox(try Self.makeMaterial(identity: identity, trust: trust, versions: versions))
    }

    /// The identity presented in new handshakes.
    public var identity: CertifiedKey { material.withLockedValue { $0.identity } }
    /// The bundle new handshakes verify against.
    public var trust: TrustBundle { material.withLockedValue { $0.trust } }
    /// The TLS versions new handshakes accept.
    public var versions: TLSVersionPolicy { material.withLockedValue { $0.versions } }

    /// Replaces the identity and/or the trust bundle for every handshake from now on.
    public func reload(
        identity: CertifiedKey? = nil,
        trust: TrustBundle? = nil,
        versions: TLSVersionPolicy? = nil
    ) throws(TransportError) {
        let current = material.withLockedValue { $0 }
        let next = try Self.makeMaterial(
            identity: identity ?? current.identity,
            trust: trust ?? current.trust,
            versions: versions ?? current.versions
        )
        material.withLockedValue { $0 = next }
    }

    func snapshot() -> Material { material.withLockedValue { $0 } }

    private static func makeMaterial(
        identity: CertifiedKey,
        trust: TrustBundle,
        versions: TLSVersionPolicy
    ) throws(TransportError) -> Material {
        do {
            let chain = try identity.chain.map { try NIOSSLCertificate(bytes: PEM.der($0), format: .der) }
            let key = try NIOSSLPrivateKey(bytes: Array(try identity.privateKeyPEM.utf8), format: .pem)
            let roots = try trust.certificates.map { try NIOSSLCertificate(bytes: PEM.der($0), format: .der) }

            var server = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) },
                privateKey: .privateKey(key)
            )
            var client = TLSConfiguration.makeClientConfiguration()
            client.certificateChain = chain.map { .certificate($0) }
            client.privateKey = .privateKey(key)
            for index in [0, 1] {
                var configuration = index == 0 ? server : client
                // Verification itself happens in PeerVerifier; these settings make BoringSSL demand a certificate.
                configuration.certificateVerification = .noHostnameVerification
                configuration.trustRoots = .certificates(roots)
                configuration.minimumTLSVersion = versions.minimum
                configuration.maximumTLSVersion = .tlsv13
                if index == 0 { server = configuration } else { client = configuration }
            }
            server.sendCANameList = true
            return Material(
                identity: identity,
                trust: trust,
                versions: versions,
                serverContext: try NIOSSLContext(configuration: server),
                clientContext: try NIOSSLContext(configuration: client),
                chain: chain,
                key: key
            )
        } catch let error as TransportError {
            throw error
        } catch {
            throw TransportError(
                .invalidArgument, "TLS material for \(CertificateSubject(identity.certificate)) was refused: \(error)")
        }
    }
}
