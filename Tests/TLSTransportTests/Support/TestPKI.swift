import Foundation
import TLSTransport
import X509

/// Certificates minted at test time.
enum TestPKI {
    static func authority(_ cluster: String, now: Date = Date(), policy: PKIPolicy = .default) throws
        -> CertificateAuthority
    {
        try CertificateAuthority.create(cluster: cluster, policy: policy, now: now)
    }

    static func provider(
        _ authority: CertificateAuthority,
        role: PeerRole,
        name: String,
        trusting trusted: [CertificateAuthority]? = nil,
        issuedAt now: Date = Date(),
        versions: TLSVersionPolicy = .tls13
    ) throws -> TLSContextProvider {
        let identity = try authority.issue(LeafRequest(role: role, name: name, ipAddresses: ["127.0.0.1"]), now: now)
        let trust = TrustBundle((trusted ?? [authority]).map(\.certificate))
        return try TLSContextProvider(identity: identity, trust: trust, versions: versions)
    }
}

/// A scratch directory removed at the end of the test.
final class TemporaryDirectory {
    let url: URL
    var path: String { url.path }

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent(
            "vmsync-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { url.appendingPathComponent(name).path }

    func write(_ text: String, to name: String) throws -> String {
        try text.write(toFile: file(name), atomically: true, encoding: .utf8)
        return file(name)
    }

    deinit { try? FileManager.default.removeItem(at: url) }
}

/// Where the repository's files are (for the certs/ scripts).
enum Repository {
    static let root: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        fatalError("Package.swift not found above \(#filePath)")
    }()
}
