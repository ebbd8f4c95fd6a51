import ClusterAPI
import Foundation
import GRDB
import Synchronization
import Testing

@testable import SyncController

/// The backends the contract tests run against: the real SQLite file, and the in-memory one that shows the protocol
/// can be implemented without it.
enum BackendUnderTest: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, memory

    var testDescription: String { rawValue }

    func make(retainedChanges: Int64 = 100_000) throws -> any StorageBackend {
        switch self {
        case .sqlite: try SQLiteBackend(path: Self.temporaryFile(), retainedChanges: retainedChanges)
        case .memory: InMemoryBackend()
        }
    }

    static func temporaryFile() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "backend-\(UUID().uuidString.prefix(8))"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory + "/store.sqlite"
    }
}

/// The first `count` elements of `stream`, or fewer if `timeout` passes first (so a missing event fails the test
/// instead of hanging it).
func collect<Element: Sendable>(_ stream: AsyncStream<Element>, count: Int, timeout: Duration = .seconds(20)) async
    -> [Element]
{
    guard count > 0 else { return [] }
    return await collect(stream, until: { $0.count >= count }, timeout: timeout)
}

/// The elements of `stream` until `done` says they are enough, or those seen when `timeout` passes.
func collect<Element: Sendable>(
    _ stream: AsyncStream<Element>, until done: @escaping @Sendable ([Element]) -> Bool,
    timeout: Duration = .seconds(20)
) async -> [Element] {
    await withTaskGroup(of: [Element]?.self) { group in
        let seen = SeenElements<Element>()
        group.addTask {
            for await element in stream {
                if done(seen.append(element)) { break }
            }
            return seen.all
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first ?? seen.all
    }
}

/// What `collect` has seen so far (read by the timeout's side too).
final class SeenElements<Element: Sendable>: Sendable {
    private let elements = Mutex<[Element]>([])
    func append(_ element: Element) -> [Element] {
        elements.withLock {
            $0.append(element)
            return $0
        }
    }
    var all: [Element] { elements.withLock { $0 } }
}

@Suite("Storage backend contract")
struct StorageBackendTests {
    static func value(_ text: String) -> Data { Data(text.utf8) }

    @Test(
        "compare-and-swap: create if absent, update and delete if at the revision read; a failed swap answers with what is stored",
        arguments: BackendUnderTest.allCases)
    func compareAndSwap(_ backend: BackendUnderTest) async throws {
        let store = try backend.make()
        guard case .swapped(let first) = try await store.create("/things/a", value: Self.value("1")) else {
            Issue.record("created")
            return
        }
        #expect(first == 1)
        guard case .failed(let existing) = try await store.create("/things/a", value: Self.value("2")) else {
            Issue.record("a second create fails")
            return
        }
        #expect(existing == StoredValue(key: "/things/a", value: Self.value("1"), revision: 1))

        guard case .swapped(let second) = try await store.update("/things/a", value: Self.value("2"), ifRevision: first)
        else {
            Issue.record("updated")
            return
        }
        #expect(second == 2)
        // A writer that read revision 1 loses, and learns what is there instead.
        guard
            case .failed(let current) = try await store.update(
                "/things/a", value: Self.value("stale"), ifRevision: first)
        else {
            Issue.record("a stale update fails")
            return
        }
        #expect(current?.revision == 2 && current?.value == Self.value("2"))
        guard case .failed(let stillThere) = try await store.delete("/things/a", ifRevision: first) else {
            Issue.record("a stale delete fails")
            return
        }
        #expect(stillThere?.revision == 2)
        guard
            case .failed(let absent) = try await store.update("/things/missing", value: Self.value("x"), ifRevision: 1)
        else {
            Issue.record("an update of an absent key fails")
            return
        }
        #expect(absent == nil)

        guard case .swapped(let third) = try await store.delete("/things/a", ifRevision: second) else {
            Issue.record("deleted")
            return
        }
        #expect(third == 3)
        #expect(try await store.get("/things/a") == nil)
        #expect(try await store.currentRevision() == 3, "failed swaps take no revision")
        // Created again after a delete: a new life at a new revision.
        guard case .swapped(let again) = try await store.create("/things/a", value: Self.value("new")) else {
            Issue.record("created again")
            return
        }
        #expect(again == 4)
    }

    @Test(
        "prefix lists are in key order, at the revision read, and stop at the prefix (/nodes/ does not reach /nodeusbdevices/)",
        arguments: BackendUnderTest.allCases)
    func prefixLists(_ backend: BackendUnderTest) async throws {
        let store = try backend.make()
        for key in [
            "/nodes/b", "/nodeusbdevices/x", "/nodes/a", "/configmaps/ns-a/one", "/configmaps/ns/two",
            "/configmaps/ns/one", "/nodes0",
        ] {
            _ = try await store.create(key, value: Self.value(key))
        }
        let nodes = try await store.list(prefix: "/nodes/")
        #expect(nodes.values.map(\.key) == ["/nodes/a", "/nodes/b"])
        #expect(nodes.revision == 7)
        #expect(
            try await store.list(prefix: "/configmaps/ns/").values.map(\.key) == [
                "/configmaps/ns/one", "/configmaps/ns/two",
            ])
        #expect(
            try await store.list(prefix: "/configmaps/").values.map(\.key) == [
                "/configmaps/ns-a/one", "/configmaps/ns/one", "/configmaps/ns/two",
            ])
        #expect(try await store.list(prefix: "/missing/").values.isEmpty)
        #expect(try await store.list(prefix: "").values.count == 7)
        #expect(nodes.values.first?.value == Self.value("/nodes/a"))
    }

    @Test(
        "a watch from a revision replays what followed it, then live changes, in revision order and only under its prefix",
        arguments: BackendUnderTest.allCases)
    func watchOrdering(_ backend: BackendUnderTest) async throws {
        let store = try backend.make()
        _ = try await store.create("/a/1", value: Self.value("a1"))  // 1
        _ = try await store.create("/b/1", value: Self.value("b1"))  // 2
        _ = try await store.update("/a/1", value: Self.value("a1'"), ifRevision: 1)  // 3
        let stream = try await store.watch(prefix: "/a/", from: 1)
        _ = try await store.create("/a/2", value: Self.value("a2"))  // 4
        _ = try await store.create("/b/2", value: Self.value("b2"))  // 5
        _ = try await store.delete("/a/1", ifRevision: 3)  // 6
        let events = await collect(stream, count: 3)
        #expect(events.map(\.revision) == [3, 4, 6])
        #expect(events.map(\.kind) == [.update, .create, .delete])
        #expect(events.map(\.key) == ["/a/1", "/a/2", "/a/1"])
        #expect(events.last?.value == Self.value("a1'"), "a delete carries the value as it was")
    }

    @Test(
        "concurrent writers: every watcher sees every change exactly once, in revision order",
        arguments: BackendUnderTest.allCases)
    func concurrentWriters(_ backend: BackendUnderTest) async throws {
        let store = try backend.make()
        let early = try await store.watch(prefix: "/w/", from: 0)
        let writers = 4
        let perWriter = 25
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    for index in 0..<perWriter {
                        _ = try await store.create("/w/\(writer)-\(index)", value: Self.value("\(index)"))
                    }
                }
            }
            // A watcher joining while the writes go on, from whatever revision it read.
            group.addTask {
                try await Task.sleep(for: .milliseconds(5))
                let from = try await store.currentRevision()
                let late = try await store.watch(prefix: "/w/", from: from)
                let events = await collect(late, count: writers * perWriter - Int(from))
                #expect(
                    events.map(\.revision) == Array(stride(from: from + 1, through: Int64(writers * perWriter), by: 1)))
            }
            try await group.waitForAll()
        }
        let events = await collect(early, count: writers * perWriter)
        #expect(events.map(\.revision) == Array(1...Int64(writers * perWriter)))
        #expect(Set(events.map(\.key)).count == writers * perWriter)
    }

    @Test(
        "compaction: a watch from before it is 410 Gone, from its end on it works", arguments: BackendUnderTest.allCases
    )
    func compaction(_ backend: BackendUnderTest) async throws {
        let store = try backend.make()
        for index in 1...10 { _ = try await store.create("/c/\(index)", value: Self.value("\(index)")) }
        try await store.compact(through: 6)
        let error = await #expect(throws: APIError.self) { try await store.watch(prefix: "/c/", from: 5) }
        #expect(error?.code == 410 && error?.reason == .gone)
        let events = await collect(try await store.watch(prefix: "/c/", from: 6), count: 4)
        #expect(events.map(\.revision) == [7, 8, 9, 10])
        #expect(try await store.list(prefix: "/c/").values.count == 10, "compaction forgets history, not values")
    }

    @Test("a watch whose consumer stops gives up its subscription", arguments: BackendUnderTest.allCases)
    func watchEnds(_ backend: BackendUnderTest) async throws {
        let store = try backend.make()
        do {
            let stream = try await store.watch(prefix: "/x/", from: 0)
            #expect(store.watcherCount == 1)
            _ = try await store.create("/x/1", value: Self.value("1"))
            #expect(await collect(stream, count: 1).count == 1)
        }
        // The stream is gone with its scope.
        let deadline = ContinuousClock.now + .seconds(10)
        while store.watcherCount > 0 && ContinuousClock.now < deadline { await Task.yield() }
        #expect(store.watcherCount == 0)
    }
}

@Suite("SQLite backend")
struct SQLiteBackendTests {
    @Test(
        "an access that loses SQLite's WAL locking race (SQLITE_PROTOCOL, 'locking protocol', seen on a loaded machine) is tried again rather than failed; other errors fail at once; a race lost every time fails naming the operation"
    )
    func lockRaceRetried() async throws {
        let attempts = Mutex(0)
        let value = try await SQLiteBackend.access("update of /k") {
            let attempt = attempts.withLock {
                $0 += 1
                return $0
            }
            if attempt < 3 { throw DatabaseError(resultCode: .SQLITE_PROTOCOL, message: "locking protocol") }
            return 42
        }
        #expect(value == 42 && attempts.withLock { $0 } == 3)

        attempts.withLock { $0 = 0 }
        let refused = await #expect(throws: APIError.self) {
            try await SQLiteBackend.access("update of /k") { () async throws -> Int in
                attempts.withLock { $0 += 1 }
                throw DatabaseError(resultCode: .SQLITE_CONSTRAINT, message: "CHECK constraint failed")
            }
        }
        #expect(
            attempts.withLock { $0 } == 1 && refused?.message.contains("update of /k") == true,
            "\(String(describing: refused))")

        attempts.withLock { $0 = 0 }
        let lost = await #expect(throws: APIError.self) {
            try await SQLiteBackend.access("update of /k") { () async throws -> Int in
                attempts.withLock { $0 += 1 }
                throw DatabaseError(resultCode: .SQLITE_PROTOCOL, message: "locking protocol")
            }
        }
        #expect(
            attempts.withLock { $0 } == SQLiteBackend.lockRaceAttempts
                && lost?.message.contains("update of /k") == true, "\(String(describing: lost))")
    }

    @Test("values, revisions and history survive reopening; the revision goes on from where it was")
    func durable() async throws {
        let path = try BackendUnderTest.temporaryFile()
        do {
            let store = try SQLiteBackend(path: path)
            for index in 1...5 { _ = try await store.create("/d/\(index)", value: Data("\(index)".utf8)) }
        }
        let reopened = try SQLiteBackend(path: path)
        #expect(try await reopened.currentRevision() == 5)
        #expect(try await reopened.list(prefix: "/d/").values.count == 5)
        let events = await collect(try await reopened.watch(prefix: "/d/", from: 2), count: 3)
        #expect(events.map(\.revision) == [3, 4, 5])
        guard case .swapped(let revision) = try await reopened.create("/d/6", value: Data("6".utf8)) else {
            Issue.record("created")
            return
        }
        #expect(revision == 6)
    }

    @Test("changes beyond the retained number are compacted away as writes go on")
    func retention() async throws {
        let store = try SQLiteBackend(path: try BackendUnderTest.temporaryFile(), retainedChanges: 10)
        for index in 1...1000 { _ = try await store.create("/r/\(index)", value: Data("\(index)".utf8)) }
        let error = await #expect(throws: APIError.self) { try await store.watch(prefix: "/r/", from: 5) }
        #expect(error?.code == 410)
        let events = await collect(try await store.watch(prefix: "/r/", from: 990), count: 10)
        #expect(events.map(\.revision) == Array(991...1000))
    }
}
