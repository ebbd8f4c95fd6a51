/// The one error type of TLSTransport: a switchable code plus a message naming the operation and the subject.
public struct TransportError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, as something callers can switch over.
    public enum Code: String, Hashable, Sendable {
        /// PEM or DER input could not be parsed.
        case malformedInput
        /// A key or certificate could not be created or signed.
        case issuanceFailed
        /// The peer presented no certificate although one is required.
        case noPeerCertificate
        /// The peer's chain does not lead to a certificate in the trust bundle.
        case untrustedCertificate
        /// A certificate in the peer's chain has expired.
        case certificateExpired
        /// A certificate in the peer's chain is not valid yet.
        case certificateNotYetValid
        /// The peer's certificate carries a role this endpoint does not accept.
        case roleNotAllowed
        /// The peer's certificate lacks the key usage needed for its side of the handshake.
        case wrongKeyUsage
        /// The peer sent something that is not TLS.
        case plaintextPeer
        /// The remote side refused our certificate (we only see its TLS alert).
        case rejectedByPeer
        /// The TLS handshake failed for a reason not covered above.
        case handshakeFailed
        /// A tunnel's channel name was refused by the receiving side.
        case channelRefused
        /// The tunnel protocol was violated (oversized or garbled frame).
        case protocolViolation
        /// A connection could not be established or was lost.
        case connectionFailed
        /// Reading or writing a file failed.
        case fileSystem
        /// An argument or configuration value is invalid.
        case invalidArgument
    }

    /// The switchable code.
    public var code: Code
    /// A sentence naming the operation and the subject.
    public var message: String

    /// Creates an error with a code and a message.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
