import NIOCore

@testable import TLSTransport

/// The tunnel's channel request and reply frames, as a peer sends them, in pieces of any size.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // The first byte chooses how the stream is cut into reads.
    let step = max(1, Int(bytes.first ?? 1))
    for decoder in 0..<2 {
        var buffer = ByteBufferAllocator().buffer(capacity: bytes.count)
        var offset = 0
        reading: while offset < bytes.count {
            let end = min(bytes.count, offset + step)
            buffer.writeBytes(bytes[offset..<end])
            offset = end
            do {
                if decoder == 0 {
                    if let name = try TunnelProtocol.decodeRequest(&buffer) {
                        if !(TunnelProtocol.validate(name) == nil) {
                            fatalError("accepted an invalid channel name \(name)")
                        }
                        break reading
                    }
                } else if try TunnelProtocol.decodeReply(&buffer) != nil {
                    break reading
                }
            } catch {
                break reading
            }
        }
    }
    return 0
}
