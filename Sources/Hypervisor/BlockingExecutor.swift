import Dispatch

/// Runs blocking libvirt calls on threads of their own, never on Swift's cooperative pool or an event loop.
///
/// libvirt keeps the last error per thread, so a call and the reading of its error happen in the same closure.
enum BlockingExecutor {
    private static let queue = DispatchQueue(label: "vmsync.hypervisor.blocking", attributes: .concurrent)

    static func run<T: Sendable>(_ body: @escaping @Sendable () throws(HypervisorError) -> T)
        async throws(HypervisorError) -> T
    {
        let result: Result<T, HypervisorError> = await withCheckedContinuation { continuation in
            queue.async {
                do throws(HypervisorError) {
                    continuation.resume(returning: .success(try body()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }
}
