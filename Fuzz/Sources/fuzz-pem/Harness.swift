@testable import TLSTransport

/// The PEM scanner behind the trust bundle's external inbox (`kubevirt-external-ca`): any text splits into blocks
/// and garbage, each block typed and numbered in order.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    var expected = 1
    for entry in PEMScanner.entries(in: text) {
        if case .block(_, _, let index) = entry {
            if !(index == expected) { fatalError("block numbered \(index), expected \(expected)") }
            expected += 1
        }
    }
    return 0
}
