import ClusterAPI
import Foundation
import SwiftProtobuf
import SyncMessages

/// The sync endpoint's decoding of a peer's request: any bytes either fail to parse as a `VMIStatusRequest` or parse,
/// and then its status is read with bounds (a VMI status, or a `SyncMessageError`) — never a trap; what parses
/// serialises to bytes that parse to the same message.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Data(bytes: data, count: size)
    guard let request = try? Kubevirt_Synchronization_VMIStatusRequest(serializedBytes: bytes) else { return 0 }
    _ = try? request.status()
    guard let again: Data = try? request.serializedBytes(),
        let reread = try? Kubevirt_Synchronization_VMIStatusRequest(serializedBytes: again)
    else {
        fatalError("a parsed request does not serialise and parse again")
    }
    if reread != request { fatalError("round trip changed the request: \(request) → \(reread)") }
    // The cancel request shares the decoder's paths for strings.
    _ = try? Kubevirt_Synchronization_MigrationCancelRequest(serializedBytes: bytes)
    return 0
}
