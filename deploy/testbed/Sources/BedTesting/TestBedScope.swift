import Foundation
public import TestBed
public import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Starts one local test bed for a whole suite and stops it (by the launcher's PID) when the suite is done.
public struct TestBedScope: SuiteTrait, TestScoping {
    public var nodes = 2
    public var segments = 1
    public var isolated = false
    public var isRecursive: Bool { false }

    @TaskLocal public static var current: TestBed?

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        // One bed at a time in the whole test process: suites of different test targets run in parallel.
        await BedTurn.shared.take()
        do {
            let bed = try await TestBed.start(nodes: nodes, segments: segments, isolated: isolated)
            do {
                try await Self.$current.withValue(bed) { try await function() }
            } catch {
                await bed.stop()
                throw error
            }
            await bed.stop()
        } catch {
            await BedTurn.shared.give()
            throw error
        }
        await BedTurn.shared.give()
    }
}

extension Trait where Self == TestBedScope {
    /// The suite runs against a local bed of `nodes` libvirt nodes.
    public static func testBed(nodes: Int = 2) -> TestBedScope { TestBedScope(nodes: nodes) }

    /// The suite runs against a bed of `nodes` nodes split across `segments` switches joined by a router (one
    /// cluster's network each); `isolated` nodes reach only the other segments' switch hosts.
    public static func testBed(nodes: Int, segments: Int, isolated: Bool = false) -> TestBedScope {
        TestBedScope(nodes: nodes, segments: segments, isolated: isolated)
    }
}

/// Whether this machine can run the real-QEMU tier (root for namespaces, libvirtd and QEMU installed).
public let canRunTestBed =
    getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/libvirtd")
    && FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64")

/// The bed of the running suite.
public func currentBed() throws -> TestBed {
    try #require(TestBedScope.current, "the suite must carry the .testBed() trait")
}

/// The turn to run a bed: the real-QEMU suites of every test target take it one after another (two beds at once would
/// make the 2 cores of a CI machine emulate their guests side by side), in the order they asked.
actor BedTurn {
    static let shared = BedTurn()
    private var taken = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func take() async {
        guard taken else {
            taken = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func give() {
        if waiting.isEmpty { taken = false } else { waiting.removeFirst().resume() }
    }
}
