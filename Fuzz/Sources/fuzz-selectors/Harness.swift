import ClusterAPI
import Foundation

/// `labelSelector` and `fieldSelector` query parameters: any text parses or fails with an APIError; a parsed selector
/// matches without trapping and reads back as itself.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    if let labels = try? LabelSelector(text) {
        _ = labels.matches(["app": "web", "kubevirt.io/domain": "vm1", "": ""])
        _ = labels.matches([:])
        if let again = try? LabelSelector(labels.description) {
            if !(again.description == labels.description) {
                fatalError("label selector \(labels) reads back as \(again)")
            }
        }
    }
    if let fields = try? FieldSelector(text) {
        _ = fields.matches([
            "metadata": ["name": "vm1", "namespace": "default"], "spec": ["nodeName": "a1"],
            "status": ["phase": "Running"],
        ])
        _ = fields.matches(.null)
    }
    return 0
}
