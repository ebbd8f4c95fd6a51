public import Foundation
public import ServiceLifecycle
import X509

/// Keeps a process's own certificate fresh: once the leaf in `provider` passes the policy's renewal point, a new one
/// is issued for the same request and loaded, so the next handshake presents it while open connections stay up.
///
/// `issue` is where certificates come from — the cluster CA directly on the controller, a signing request to the
/// controller on a node. Daemons run it as one of their services; a failed renewal goes to `onFailure` and is retried
/// at the next check.
public struct LeafRenewal: Service {
    /// What to ask for on every renewal.
    public var request: LeafRequest
    /// Whose identity is renewed.
    public var provider: TLSContextProvider
    /// When renewal is due.
    public var policy: PKIPolicy
    /// Issues a certificate for a request.
    public var issue: @Sendable (LeafRequest) async throws -> CertifiedKey
    /// Hears every failed renewal (the daemons log it); the current certificate stays in use meanwhile.
    public var onFailure: @Sendable (any Error) -> Void

    /// Creates a renewal driver.
    public init(
        request: LeafRequest,
        provider: TLSContextProvider,
        policy: PKIPolicy = .default,
        onFailure: @escaping @Sendable (any Error) -> Void = { _ in },
        issue: @escaping @Sendable (LeafRequest) async throws -> CertifiedKey
    ) {
        self.request = request
        self.provider = provider
        self.policy = policy
        self.onFailure = onFailure
        self.issue = issue
    }

    /// Checks at `checkInterval` until cancelled or the service group shuts down.
    public func run() async {
        await cancelWhenGracefulShutdown { await self.run(checkingEvery: nil, onError: self.onFailure) }
    }

    /// Renews if due at `now`; returns whether it did.
    @discardableResult
    public func renewIfDue(now: Date = Date()) async throws -> Bool {
        guard policy.needsRenewal(provider.identity.certificate, now: now) else { return false }
        try provider.reload(identity: try await issue(request))
        return true
    }

    /// How often to look: a twentieth of the current certificate's lifetime, between 1 s and 60 s.
    public var checkInterval: Duration {
        let certificate = provider.identity.certificate
        let lifetime = certificate.notValidAfter.timeIntervalSince(certificate.notValidBefore)
        return .milliseconds(Int64(min(60, max(1, lifetime / 20)) * 1000))
    }

    /// Checks periodically until cancelled. A failed renewal is retried at the next check; the current certificate
    /// stays in use until it expires.
    public func run(checkingEvery interval: Duration? = nil, onError: @Sendable (any Error) -> Void = { _ in }) async {
        let interval = interval ?? checkInterval
        while !Task.isCancelled {
            do {
                try await renewIfDue()
            } catch {
                onError(error)
            }
            try? await Task.sleep(for: interval)
        }
    }
}
