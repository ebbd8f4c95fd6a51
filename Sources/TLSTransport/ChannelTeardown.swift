public import NIOCore
import NIOPosix
import NIOSSL

#if canImport(Glibc)
    import Glibc
#endif

/// The two ways a tunnel connection ends.
///
/// NIOSSL, with remote half-closure enabled, finishes a TLS shutdown promptly only when the full close follows our own
/// half-close or answers the peer's close_notify; a full close of an active connection waits out the shutdown timeout.
/// So a stream that ended is half-closed (close_notify + FIN, and NIOSSL completes the close when the peer answers),
/// and a stream that broke is aborted below TLS with a reset, which the far side sees as a broken stream, never as a
/// clean end of data.
public enum ChannelTeardown {
    /// How long a half-closed connection may wait for its peer before it is aborted.
    public static let grace: TimeAmount = .seconds(3)

    /// Ends our side of the stream cleanly; aborts if the peer has not finished within `grace`.
    public static func finish(_ channel: any Channel) {
        channel.close(mode: .output, promise: nil)
        channel.eventLoop.scheduleTask(in: grace) {
            if channel.isActive { abort(channel) }
        }
    }

    /// Tears the connection down with a reset, bypassing TLS's close_notify.
    public static func abort(_ channel: any Channel, retries: Int = 50) {
        channel.eventLoop.execute {
            guard channel.isActive else {
                // Not active yet (an accepted connection whose tunnel failed before it finished activating) or
                // already closed: look again shortly, and close it in the end either way, so no client waits forever.
                if retries > 0 {
                    channel.eventLoop.scheduleTask(in: .milliseconds(10)) { abort(channel, retries: retries - 1) }
                } else {
                    channel.close(promise: nil)
                }
                return
            }
            // A reset rather than a FIN (unix sockets ignore this).
            _ = (channel as? any SocketOptionProvider)?.setSoLinger(linger(l_onoff: 1, l_linger: 0))
            if let tls = try? channel.pipeline.syncOperations.context(handlerType: NIOSSLHandler.self) {
                // Closing from the TLS handler's context goes straight to the socket.
                tls.close(promise: nil)
            } else {
                channel.close(promise: nil)
            }
        }
    }
}
