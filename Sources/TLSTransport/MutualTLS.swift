public import NIOCertificateReloading
public import NIOCore
public import NIOSSL
import SwiftASN1
import X509

/// One process's mutual TLS as a value any server or client can take: its certificates, hot-reloaded from a
/// `TLSContextProvider`, and the check of the peer — `PeerVerifier` with the bundle in force at the handshake, the
/// role policy, and CAs imported from other clusters trusted only for synchronization.
///
/// vmsync's own listeners and dialers (`MutualTLSAcceptor`, `MutualTLSServer`, the tunnels, the API servers) verify
/// through it; a framework that takes NIOSSL configuration — grpc-swift's NIO transport for the sync endpoint — takes
/// `certificateReloader`, `verificationCallback(for:onVerdict:)` and `serverConfiguration()` / `clientConfiguration()`,
/// and so refuses and reloads exactly as they do.
public struct MutualTLS: Sendable {
    /// Where the identity and the trust bundle come from (`TLSContextProvider.reload` applies to the next handshake).
    public let provider: TLSContextProvider
    /// Who is let in (as a server) or accepted (as a client).
    public let policy: PeerPolicy

    public init(provider: TLSContextProvider, policy: PeerPolicy) {
        self.provider = provider
        self.policy = policy
    }

    /// The verifier of a peer on `side` with the bundle and home cluster in force now.
    public func verifier(for side: PeerVerifier.PeerSide) -> PeerVerifier {
        let material = provider.snapshot()
        return PeerVerifier(trust: material.trust, policy: policy, side: side, homeCluster: material.homeCluster)
    }

    /// NIOSSL's verification of a peer on `side`: the chain it presents is verified by `verifier(for:)` when the
    /// handshake asks (off the event loop), and the chain built to the trusted CA is handed back to NIOSSL. `onVerdict`
    /// hears every outcome — the peer's identity, or the precise reason it was refused.
    public func verificationCallback(
        for side: PeerVerifier.PeerSide,
        onVerdict: @escaping @Sendable (Result<PeerIdentity, TransportError>) -> Void = { _ in }
    ) -> @Sendable ([NIOSSLCertificate], EventLoopPromise<NIOSSLVerificationResultWithMetadata>) -> Void {
        { [self] presented, promise in
            let chain: [Certificate]
            do {
                chain = try presented.map { try Certificate(derEncoded: try $0.toDERBytes()) }
            } catch {
                onVerdict(.failure(TransportError(.malformedInput, "the peer's certificate chain could not be parsed")))
                promise.succeed(.failed)
                return
            }
            let verifier = verifier(for: side)
            promise.completeWithTask {
                let verdict = await verifier.verify(chain: chain)
                onVerdict(verdict)
                guard case .success(let identity) = verdict,
                    let validated = try? identity.validatedChain.map({
                        try NIOSSLCertificate(bytes: PEM.der($0), format: .der)
                    })
                else { return .failed }
                return .certificateVerified(VerificationMetadata(ValidatedCertificateChain(validated)))
            }
        }
    }

    /// The provider's current identity for every handshake (NIOSSL asks for it at each one).
    public var certificateReloader: ProviderCertificateReloader { ProviderCertificateReloader(provider: provider) }

    /// A server configuration: the reloaded identity, a client certificate required, TLS versions as the provider
    /// says. Pass `verificationCallback(for: .client)` to the handler (or the transport) with it.
    public func serverConfiguration() throws -> TLSConfiguration {
        var configuration = try TLSConfiguration.makeServerConfiguration(certificateReloader: certificateReloader)
        configure(&configuration)
        configuration.sendCANameList = true
        return configuration
    }

    /// A client configuration: the reloaded identity presented, the server verified (no host name check: the
    /// verification callback checks the role). Pass `verificationCallback(for: .server)` with it.
    public func clientConfiguration() throws -> TLSConfiguration {
        var configuration = try TLSConfiguration.makeClientConfiguration(certificateReloader: certificateReloader)
        configure(&configuration)
        return configuration
    }

    private func configure(_ configuration: inout TLSConfiguration) {
        let material = provider.snapshot()
        // The callback decides; this makes BoringSSL ask for the peer's certificate and call it.
        configuration.certificateVerification = .noHostnameVerification
        configuration.trustRoots = .certificates(
            material.trust.certificates.compactMap { try? NIOSSLCertificate(bytes: PEM.der($0), format: .der) })
        configuration.minimumTLSVersion = material.versions.minimum
        configuration.maximumTLSVersion = .tlsv13
    }
}

/// The identity a `TLSContextProvider` holds now, as NIOSSL's per-handshake override.
public struct ProviderCertificateReloader: CertificateReloader {
    let provider: TLSContextProvider

    public var sslContextConfigurationOverride: NIOSSLContextConfigurationOverride {
        let material = provider.snapshot()
        var override = NIOSSLContextConfigurationOverride()
        override.certificateChain = material.chain.map { .certificate($0) }
        override.privateKey = .privateKey(material.key)
        return override
    }
}
