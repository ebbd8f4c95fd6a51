import NIOConcurrencyHelpers
import NIOCore
import TLSTransport

/// The connections a server holds open, so that stopping it ends each one — watches included — with close_notify
/// and FIN rather than waiting for clients to go.
final class OpenConnections: Sendable {
    private let channels = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])

    func insert(_ channel: any Channel) -> ObjectIdentifier {
        let key = ObjectIdentifier(channel)
        channels.withLockedValue { $0[key] = channel }
        return key
    }

    func remove(_ key: ObjectIdentifier) {
        _ = channels.withLockedValue { $0.removeValue(forKey: key) }
    }

    /// Ends every open connection (a plain close would wait out NIOSSL's shutdown timeout).
    func finishAll() {
        for channel in channels.withLockedValue({ $0.values }) { ChannelTeardown.finish(channel) }
    }
}
