public import ClusterAPI
public import Foundation

/// Where the cluster's objects are kept, as an ordered key-value store with a revision counter: the narrow surface an
/// embedded SQLite file and a replicated etcd cluster can both offer, so that the object semantics above it
/// (`ObjectStore`) are written once.
///
/// Keys are strings such as `/<resource>/<namespace>/<name>`; values are opaque bytes. Every successful write bumps one
/// store-wide revision and is recorded, at that revision, in a change feed that watches replay from. Writes are
/// conditional (create if absent, update or delete if the key is still at the revision the caller read), which is all
/// optimistic concurrency needs. Nothing here knows what a value means.
public protocol StorageBackend: Sendable {
    /// The value at `key`, or nil.
    func get(_ key: String) async throws(APIError) -> StoredValue?

    /// Every value whose key starts with `prefix`, in key order, with the revision they were read at.
    func list(prefix: String) async throws(APIError) -> (values: [StoredValue], revision: Int64)

    /// Stores `value` at `key` if the key is absent; otherwise fails with what is there.
    func create(_ key: String, value: Data) async throws(APIError) -> SwapOutcome

    /// Replaces the value at `key` if the key is still at `revision`; otherwise fails with what is there (nil if
    /// nothing is).
    func update(_ key: String, value: Data, ifRevision revision: Int64) async throws(APIError) -> SwapOutcome

    /// Deletes `key` if it is still at `revision`; otherwise fails with what is there (nil if nothing is).
    func delete(_ key: String, ifRevision revision: Int64) async throws(APIError) -> SwapOutcome

    /// The changes of keys starting with `prefix` after `revision`, in revision order: first those already recorded,
    /// then each as it commits. Fails with `.gone` (410) when the feed no longer reaches back to `revision`. The stream
    /// ends when the watcher falls too far behind (it lists and watches again) or the store closes.
    func watch(prefix: String, from revision: Int64) async throws(APIError) -> AsyncStream<StorageEvent>

    /// Forgets the changes up to and including `revision` (watches from before it are then `.gone`).
    func compact(through revision: Int64) async throws(APIError)

    /// The newest revision.
    func currentRevision() async throws(APIError) -> Int64

    /// Watches open now (for `/metrics`).
    var watcherCount: Int { get }
}

/// A value as stored, with the revision of the write that last changed it.
public struct StoredValue: Sendable, Hashable {
    public var key: String
    public var value: Data
    public var revision: Int64

    public init(key: String, value: Data, revision: Int64) {
        self.key = key
        self.value = value
        self.revision = revision
    }
}

/// What a conditional write did.
public enum SwapOutcome: Sendable, Hashable {
    /// Written, at this new revision.
    case swapped(revision: Int64)
    /// Not written: the key holds this instead (nil: it is absent). The caller decides again from it, without a
    /// second read, as Kubernetes does with etcd's transaction answer.
    case failed(current: StoredValue?)
}

/// One committed change, as watches deliver it.
public struct StorageEvent: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        case create = "CREATE"
        case update = "UPDATE"
        case delete = "DELETE"
    }

    public var kind: Kind
    public var key: String
    /// The value written; for a delete, the value as it was before.
    public var value: Data
    /// The revision of the change.
    public var revision: Int64

    public init(kind: Kind, key: String, value: Data, revision: Int64) {
        self.kind = kind
        self.key = key
        self.value = value
        self.revision = revision
    }
}

extension StorageBackend {
    /// The smallest key greater than every key starting with `prefix` (the end of a prefix range scan), or nil when
    /// there is none (an empty prefix, or one of only 0xFF bytes).
    public static func rangeEnd(ofPrefix prefix: String) -> [UInt8]? {
        var bytes = Array(prefix.utf8)
        while let last = bytes.last {
            if last < 0xFF {
                bytes[bytes.count - 1] = last + 1
                return bytes
            }
            bytes.removeLast()
        }
        return nil
    }
}
