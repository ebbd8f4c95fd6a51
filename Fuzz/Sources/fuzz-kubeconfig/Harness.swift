import ClusterAPI

@testable import KubeconfigReader

/// syncctl's kubeconfig reader: any file parses or fails with one CLI error; every context resolves or fails.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    guard let kubeconfig = try? Kubeconfig.parse(text, source: "fuzz") else { return 0 }
    _ = try? kubeconfig.credentials(context: nil)
    for context in kubeconfig.document["contexts"]?.array ?? [] {
        _ = try? kubeconfig.credentials(context: context["name"]?.string ?? "")
    }
    return 0
}
