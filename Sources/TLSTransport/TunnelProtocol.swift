import NIOCore

/// The tunnel's only framing: the dialing side names the channel, the receiving side accepts or refuses.
///
/// Request: `"VMST"`, version 1, a 2-byte big-endian length, the channel name (UTF-8).
/// Reply: 0 (accepted) or 1 (refused), a 2-byte big-endian length, a UTF-8 message.
/// After an accepting reply the connection carries raw bytes in both directions.
enum TunnelProtocol {
    static let magic: [UInt8] = Array("VMST".utf8)
    static let version: UInt8 = 1
    static let maximumNameLength = 512
    static let maximumMessageLength = 4096

    static func encodeRequest(_ name: String, into buffer: inout ByteBuffer) {
        buffer.writeBytes(magic)
        buffer.writeInteger(version)
        let bytes = Array(name.utf8)
        buffer.writeInteger(UInt16(bytes.count))
        buffer.writeBytes(bytes)
    }

    /// Parses a complete request from the front of `buffer`; nil if more bytes are needed.
    static func decodeRequest(_ buffer: inout ByteBuffer) throws(TransportError) -> String? {
        guard buffer.readableBytes >= 7 else {
            if let partial = buffer.getBytes(at: buffer.readerIndex, length: min(buffer.readableBytes, 4)),
                partial != Array(magic.prefix(partial.count))
            {
                throw TransportError(.protocolViolation, "the peer did not open the tunnel with a channel request")
            }
            return nil
        }
        guard buffer.getBytes(at: buffer.readerIndex, length: 4) == magic else {
            throw TransportError(.protocolViolation, "the peer did not open the tunnel with a channel request")
        }
        guard let version = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt8.self), version == Self.version
        else {
            throw TransportError(
                .protocolViolation,
                "the peer speaks tunnel protocol version \(buffer.getInteger(at: buffer.readerIndex + 4, as: UInt8.self) ?? 0), this side speaks \(Self.version)"
            )
        }
        let length = Int(buffer.getInteger(at: buffer.readerIndex + 5, as: UInt16.self) ?? 0)
        guard length <= maximumNameLength else {
            throw TransportError(
                .protocolViolation, "channel name of \(length) bytes exceeds the limit of \(maximumNameLength)")
        }
        guard buffer.readableBytes >= 7 + length else { return nil }
        buffer.moveReaderIndex(forwardBy: 7)
        guard let name = buffer.readString(length: length), validate(name) == nil else {
            throw TransportError(.protocolViolation, "channel name is not valid (UTF-8 letters, digits and ._:/- only)")
        }
        return name
    }

    static func encodeReply(accepted: Bool, message: String, into buffer: inout ByteBuffer) {
        let bytes = Array(message.utf8.prefix(maximumMessageLength))
        buffer.writeInteger(UInt8(accepted ? 0 : 1))
        buffer.writeInteger(UInt16(bytes.count))
        buffer.writeBytes(bytes)
    }

    /// Parses a complete reply from the front of `buffer`; nil if more bytes are needed.
    static func decodeReply(_ buffer: inout ByteBuffer) throws(TransportError) -> (accepted: Bool, message: String)? {
        guard buffer.readableBytes >= 3,
            let status = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
            let length = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt16.self)
        else { return nil }
        guard status <= 1, Int(length) <= maximumMessageLength else {
            throw TransportError(.protocolViolation, "the tunnel peer sent a garbled reply")
        }
        guard buffer.readableBytes >= 3 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 3)
        let message = buffer.readString(length: Int(length)) ?? ""
        return (status == 0, message)
    }

    /// Nil when `name` is a valid channel name, else why not.
    static func validate(_ name: String) -> String? {
        if name.isEmpty { return "channel name is empty" }
        if name.utf8.count > maximumNameLength { return "channel name is longer than \(maximumNameLength) bytes" }
        let allowed = name.unicodeScalars.allSatisfy {
            $0.isASCII
                && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "._:/-".unicodeScalars.contains($0))
        }
        return allowed ? nil : "channel name \"\(name)\" may hold only letters, digits and ._:/-"
    }
}
