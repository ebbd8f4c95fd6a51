import Crypto
public import Foundation
import SwiftASN1
public import X509

/// A certificate (with the chain above it, if any) together with its private key.
public struct CertifiedKey: Sendable, Hashable {
    /// The leaf first, then any intermediates. The root is never included.
    public var chain: [Certificate]
    /// The private key belonging to `chain[0]`.
    public var privateKey: Certificate.PrivateKey

    /// The certificate this key certifies.
    public var certificate: Certificate { chain[0] }
    /// When the certificate expires.
    public var notValidAfter: Date { chain[0].notValidAfter }

    /// Pairs a chain with its key, checking that the key belongs to the leaf.
    public init(chain: [Certificate], privateKey: Certificate.PrivateKey) throws(TransportError) {
        guard let leaf = chain.first else {
            throw TransportError(.malformedInput, "a certified key needs at least one certificate")
        }
        guard leaf.publicKey == privateKey.publicKey else {
            throw TransportError(
                .malformedInput,
                "private key does not match the certificate \"\(leaf.subject)\""
            )
        }
        self.chain = chain
        self.privateKey = privateKey
    }

    /// Reads a certificate chain and a private key from PEM text.
    public init(certificatePEM: String, privateKeyPEM: String) throws(TransportError) {
        let chain = try PEM.certificates(from: certificatePEM, source: "certificate PEM")
        let key: Certificate.PrivateKey
        do {
            key = try Certificate.PrivateKey(pemEncoded: privateKeyPEM)
        } catch {
            throw TransportError(.malformedInput, "private key PEM could not be parsed: \(error)")
        }
        try self.init(chain: chain, privateKey: key)
    }

    /// Replaces the files a daemon was started with (`--cert`, `--key`), so a restart presents this certificate: the
    /// key with mode 0600 from its first byte, each file replaced atomically, the key first.
    public func write(certificateTo certificatePath: String, keyTo keyPath: String) throws(TransportError) {
        try SecretFile.write(Data(try privateKeyPEM.utf8), to: keyPath, mode: 0o600)
        try SecretFile.write(Data(try certificatePEM.utf8), to: certificatePath, mode: 0o644)
    }

    /// The chain as PEM, leaf first.
    public var certificatePEM: String {
        get throws(TransportError) { try PEM.encode(chain) }
    }

    /// The private key as PEM (PKCS#8).
    public var privateKeyPEM: String {
        get throws(TransportError) {
            do {
                return try privateKey.serializeAsPEM().pemString + "\n"
            } catch {
                throw TransportError(.issuanceFailed, "private key could not be encoded: \(error)")
            }
        }
    }
}

/// PEM helpers shared by the PKI, the bundle and the TLS configuration.
public enum PEM {
    /// Encodes certificates as concatenated PEM blocks.
    public static func encode(_ certificates: [Certificate]) throws(TransportError) -> String {
        var text = ""
        for certificate in certificates {
            do {
                text += try certificate.serializeAsPEM().pemString + "\n"
            } catch {
                throw TransportError(
                    .issuanceFailed, "certificate \"\(certificate.subject)\" could not be encoded: \(error)")
            }
        }
        return text
    }

    /// Parses every `CERTIFICATE` block; any other block or unparsable content is an error.
    public static func certificates(from text: String, source: String) throws(TransportError) -> [Certificate] {
        let documents: [PEMDocument]
        do {
            documents = try PEMDocument.parseMultiple(pemString: text)
        } catch {
            throw TransportError(.malformedInput, "\(source) is not valid PEM: \(error)")
        }
        guard !documents.isEmpty else {
            throw TransportError(.malformedInput, "\(source) contains no PEM certificate")
        }
        var result: [Certificate] = []
        for (index, document) in documents.enumerated() {
            guard document.discriminator == "CERTIFICATE" else {
                throw TransportError(
                    .malformedInput,
                    "\(source) entry \(index + 1) is a \"\(document.discriminator)\" block, not a certificate"
                )
            }
            do {
                result.append(try Certificate(derEncoded: document.derBytes))
            } catch {
                throw TransportError(
                    .malformedInput, "\(source) entry \(index + 1) is not a parsable certificate: \(error)")
            }
        }
        return result
    }

    /// DER bytes of a certificate.
    public static func der(_ certificate: Certificate) -> [UInt8] {
        var serializer = DER.Serializer()
        // Serialising a certificate that was parsed or built by X509 cannot fail.
        try? serializer.serialize(certificate)
        return serializer.serializedBytes
    }

    /// The SHA-256 fingerprint of a certificate's DER encoding, as lowercase hex.
    public static func fingerprint(_ certificate: Certificate) -> String {
        SHA256.hash(data: der(certificate)).map { String(format: "%02x", $0) }.joined()
    }
}
