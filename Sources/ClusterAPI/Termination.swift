import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Graceful shutdown for the daemons: returns when SIGTERM or SIGINT arrives (taken by a dispatch source, so the
/// default action no longer kills the process first).
public enum Termination {
    public static func wait() async {
        let state = State()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            for number in [SIGTERM, SIGINT] {
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
                source.setEventHandler { state.fire(continuation) }
                source.resume()
                state.keep(source)
            }
        }
    }

    private final class State: @unchecked Sendable {
        private let lock = NSLock()
        private var fired = false
        private var sources: [any DispatchSourceSignal] = []

        func keep(_ source: any DispatchSourceSignal) { lock.withLock { sources.append(source) } }

        func fire(_ continuation: CheckedContinuation<Void, Never>) {
            let first = lock.withLock { () -> Bool in
                defer { fired = true }
                return !fired
            }
            if first { continuation.resume() }
        }
    }
}
