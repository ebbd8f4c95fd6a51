import ClusterAPI
import Foundation
import Synchronization

/// Storage changes turned into watch events, kept for a short window by revision: every watcher of a change (a
/// hundred informers and clients may watch one kind) shares one parse of it and one encoding of its watch line.
final class DecodedChanges: Sendable {
    /// How many revisions back an event is kept: watchers read changes as they come, so a short window is enough.
    private static let window: Int64 = 512
    private let events = Mutex<[Int64: WatchEvent]>([:])

    /// The watch event of `change` (nil when its value is not a stored object).
    @Sendable func event(_ change: StorageEvent) -> WatchEvent? {
        if let event = events.withLock({ $0[change.revision] }) { return event }
        guard let document = ObjectEncoding.document(change.value, revision: change.revision),
            let object = try? JSONValue.parse(document)
        else {
            return nil
        }
        let type: WatchEvent.Kind
        switch change.kind {
        case .create: type = .added
        case .update: type = .modified
        case .delete: type = .deleted
        }
        var event = WatchEvent(type: type, object: object, resourceVersion: change.revision)
        // The line as `WatchEvent.line` writes it (members in sorted order), around the document as it is.
        var line = Data(#"{"object":"#.utf8)
        line.append(document)
        line.append(contentsOf: #","type":"\#(type.rawValue)"}"#.utf8)
        line.append(UInt8(ascii: "\n"))
        event.encoded = line
        events.withLock { events in
            events[change.revision] = event
            if events.count > 2 * Int(Self.window) {
                let cutoff = change.revision - Self.window
                events = events.filter { $0.key > cutoff }
            }
        }
        return event
    }
}
