import ClusterAPI
import Foundation

/// Kubernetes quantities in manifests (memory, CPU, sizes): any text or JSON value is a quantity below 2^63 or none.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    for quantity in [
        Quantity(text), Quantity(JSONValue.string(text)),
        (try? JSONValue.parse(Data(text.utf8))).flatMap { Quantity($0) },
    ] {
        guard let quantity else { continue }
        if !Quantity.inRange(quantity.value) { fatalError("\(text) gave \(quantity.value), out of range") }
        _ = quantity.bytes.saturatingAdd(quantity.bytes)
    }
    return 0
}
