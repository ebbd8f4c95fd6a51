public import Foundation
public import X509

/// A cluster's PKI kept in a local directory: the CA, the trust bundle (`kubevirt-ca`), the external inbox
/// (`kubevirt-external-ca`) and the certificates issued from it.
///
/// Layout: `ca.pem`, `ca-key.pem` (mode 0600), `ca-bundle.pem`, `external-ca.pem`, and
/// `issued/ROLE-NAME.pem` + `issued/ROLE-NAME-key.pem` (0600). Files are replaced atomically.
public struct PKIDirectory: Sendable {
    /// The directory.
    public var url: URL
    /// Lifetimes used when creating and renewing.
    public var policy: PKIPolicy

    /// A PKI directory at `url` (created on `initialize`).
    public init(url: URL, policy: PKIPolicy = .default) {
        self.url = url
        self.policy = policy
    }

    /// The default location: `$XDG_CONFIG_HOME/vmsync/pki`, else `~/.config/vmsync/pki`.
    public static var defaultURL: URL {
        let environment = ProcessInfo.processInfo.environment
        let base =
            environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0) }
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".config")
        return base.appendingPathComponent("vmsync/pki")
    }

    var caURL: URL { url.appendingPathComponent("ca.pem") }
    var caKeyURL: URL { url.appendingPathComponent("ca-key.pem") }
    /// The trust bundle file.
    public var bundleURL: URL { url.appendingPathComponent("ca-bundle.pem") }
    /// The external inbox file.
    public var inboxURL: URL { url.appendingPathComponent("external-ca.pem") }
    var issuedURL: URL { url.appendingPathComponent("issued") }

    /// Creates the directory and a new CA for `cluster`. Refuses to overwrite an existing CA.
    @discardableResult
    public func initialize(cluster: String, now: Date = Date()) throws(TransportError) -> CertificateAuthority {
        if FileManager.default.fileExists(atPath: caURL.path) {
            throw TransportError(.invalidArgument, "\(url.path) already holds a CA; use `ca rotate` to renew it")
        }
        let authority = try CertificateAuthority.create(cluster: cluster, policy: policy, now: now)
        try createDirectory(url)
        try write(try authority.certifiedKey.certificatePEM, to: caURL)
        try write(try authority.certifiedKey.privateKeyPEM, to: caKeyURL, secret: true)
        try write(try TrustBundle([authority.certificate]).pem, to: bundleURL)
        try write("", to: inboxURL)
        return authority
    }

    /// The current CA.
    public func authority() throws(TransportError) -> CertificateAuthority {
        guard FileManager.default.fileExists(atPath: caURL.path) else {
            throw TransportError(.fileSystem, "\(url.path) holds no CA; run `syncctl ca init --cluster NAME` first")
        }
        let key = try CertifiedKey(certificatePEM: try read(caURL), privateKeyPEM: try read(caKeyURL))
        return try CertificateAuthority(certifiedKey: key, policy: policy)
    }

    /// The trust bundle.
    public func bundle() throws(TransportError) -> TrustBundle {
        try TrustBundle(pem: try read(bundleURL))
    }

    /// Issues a certificate and stores it under `issued/`; returns it with the paths written.
    public func issue(
        _ request: LeafRequest,
        now: Date = Date()
    ) throws(TransportError) -> (key: CertifiedKey, certificate: URL, privateKey: URL) {
        let issued = try authority().issue(request, now: now)
        try createDirectory(issuedURL)
        let (certificateURL, keyURL) = issuedFiles(role: request.role, name: request.name)
        try write(try issued.certificatePEM, to: certificateURL)
        try write(try issued.privateKeyPEM, to: keyURL, secret: true)
        return (issued, certificateURL, keyURL)
    }

    /// Where the certificate and key issued for `role` and `name` are kept.
    public func issuedFiles(role: PeerRole, name: String) -> (certificate: URL, privateKey: URL) {
        let stem = "\(role.rawValue)-\(role.fixedCommonName == nil ? name : "sync")"
        return (issuedURL.appendingPathComponent("\(stem).pem"), issuedURL.appendingPathComponent("\(stem)-key.pem"))
    }

    /// The certificate and key issued earlier for `role` and `name`, if both are stored.
    public func storedIssue(role: PeerRole, name: String) throws(TransportError) -> CertifiedKey? {
        let files = issuedFiles(role: role, name: name)
        guard FileManager.default.fileExists(atPath: files.certificate.path) else { return nil }
        return try CertifiedKey(certificatePEM: try read(files.certificate), privateKeyPEM: try read(files.privateKey))
    }

    /// Whether this directory holds the CA's private key (only the CA's host does; users and nodes get issued files).
    public var holdsCAKey: Bool { FileManager.default.fileExists(atPath: caKeyURL.path) }

    /// The certificates issued so far, as stored.
    public func issued() throws(TransportError) -> [Certificate] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: issuedURL.path) else { return [] }
        var result: [Certificate] = []
        for name in names.sorted() where name.hasSuffix(".pem") && !name.hasSuffix("-key.pem") {
            result += try PEM.certificates(from: try read(issuedURL.appendingPathComponent(name)), source: name)
        }
        return result
    }

    /// Puts `text` into the external inbox, merges the inbox into the bundle, clears the inbox, and returns every
    /// decision taken.
    public func importExternal(_ text: String, now: Date = Date()) throws(TransportError) -> [BundleDecision] {
        try write(text, to: inboxURL)
        return try mergeInbox(now: now)
    }

    /// Merges whatever is in the inbox into the bundle and clears the inbox.
    public func mergeInbox(now: Date = Date()) throws(TransportError) -> [BundleDecision] {
        let current = try authority().certificate
        var bundle = try bundle()
        let inbox = (try? read(inboxURL)) ?? ""
        let decisions = bundle.mergeExternal(inbox, currentCA: current, overlap: policy.caOverlap, now: now)
        try write(try bundle.pem, to: bundleURL)
        try write("", to: inboxURL)
        return decisions
    }

    /// Renews the CA when it has passed its renewal point (or when forced): the new CA joins the bundle, the old one
    /// stays there through the overlap window. Returns the new CA, or nil when nothing was due.
    public func rotate(force: Bool = false, now: Date = Date()) throws(TransportError) -> CertificateAuthority? {
        let current = try authority()
        guard force || current.needsRenewal(now: now) else { return nil }
        let next = try current.renewed(now: now)
        var bundle = try bundle()
        bundle.insert(next.certificate)
        bundle.prune(currentCA: next.certificate, overlap: policy.caOverlap, now: now)
        try write(try next.certifiedKey.privateKeyPEM, to: caKeyURL, secret: true)
        try write(try next.certifiedKey.certificatePEM, to: caURL)
        try write(try bundle.pem, to: bundleURL)
        return next
    }

    // MARK: Files

    func read(_ file: URL) throws(TransportError) -> String {
        do {
            return try String(contentsOf: file, encoding: .utf8)
        } catch {
            throw TransportError(.fileSystem, "cannot read \(file.path): \(Self.reason(error))")
        }
    }

    func write(_ text: String, to file: URL, secret: Bool = false) throws(TransportError) {
        try SecretFile.write(Data(text.utf8), to: file.path, mode: secret ? 0o600 : 0o644)
    }

    private func createDirectory(_ directory: URL) throws(TransportError) {
        do {
            try FileManager.default.createDirectory(
                at: directory,
                withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700]
            )
        } catch {
            throw TransportError(.fileSystem, "cannot create \(directory.path): \(Self.reason(error))")
        }
    }

    private static func reason(_ error: any Error) -> String {
        let nsError = error as NSError
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError {
            return String(cString: strerror(Int32(underlying.code)))
        }
        return nsError.localizedDescription
    }
}
