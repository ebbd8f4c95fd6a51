internal import CLibvirt
import Foundation

/// libvirt's default event loop, registered once and run on a thread of its own. Keepalive and (later) domain
/// events need it; it must be registered before the first connection opens.
enum LibvirtEventLoop {
    private static let started: Bool = {
        vmsync_libvirt_silence_errors()
        guard virEventRegisterDefaultImpl() == 0 else { return false }
        let thread = Thread {
            while true {
                if virEventRunDefaultImpl() != 0 {
                    // A failing iteration is retried after a pause rather than spinning.
                    Thread.sleep(forTimeInterval: 0.1)
                }
            }
        }
        thread.name = "vmsync.libvirt-events"
        thread.start()
        return true
    }()

    /// Starts the loop if it is not running yet; returns whether it runs.
    @discardableResult
    static func ensureRunning() -> Bool { started }
}
