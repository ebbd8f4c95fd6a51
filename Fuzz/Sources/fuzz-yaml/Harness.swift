import ClusterAPI
import Foundation

/// The manifest loader (apply bodies, syncctl -f): any text loads or fails with an APIError.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    guard let documents = try? YAML.documents(text) else { return 0 }
    // What loads can be written as YAML and as JSON again.
    for document in documents {
        _ = YAML.text(document)
        _ = document.jsonData()
    }
    return 0
}
