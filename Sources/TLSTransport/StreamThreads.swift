public import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// Event loops for bulk streams (migration tunnels), one per core, whose threads run at a chosen nice value: on a
/// busy machine the guests' own threads come first and the streams take what is left (Linux keeps the nice value
/// per thread, so the rest of the process keeps its priority).
public final class StreamThreads: Sendable {
    /// The loops to hand to `TunnelEntry.start` and `TunnelExit.start`.
    public let group: any EventLoopGroup
    private let loops: MultiThreadedEventLoopGroup

    private init(loops: MultiThreadedEventLoopGroup) {
        self.loops = loops
        self.group = loops
    }

    /// Starts the loops and sets their threads' nice value (0 leaves it as the process's).
    public static func start(nice: Int32) async throws(TransportError) -> StreamThreads {
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        guard nice != 0 else { return StreamThreads(loops: loops) }
        for loop in loops.makeIterator() {
            let failure = try? await loop.submit { () -> Int32 in
                setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice) == 0 ? 0 : errno
            }.get()
            if failure != 0 {
                try? await loops.shutdownGracefully()
                throw TransportError(
                    .invalidArgument,
                    "cannot run stream threads at nice \(nice): \(String(cString: strerror(failure ?? EINVAL)))")
            }
        }
        return StreamThreads(loops: loops)
    }

    /// The nice value of the calling thread.
    static func currentNice() -> Int32 {
        errno = 0
        return getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
    }

    /// The nice value the loops' threads run at.
    public func nice() async -> Int32? {
        var iterator = loops.makeIterator()
        guard let loop = iterator.next() else { return nil }
        return try? await loop.submit { Self.currentNice() }.get()
    }

    /// Stops the loops (after the channels on them have closed).
    public func shutdown() async {
        try? await loops.shutdownGracefully()
    }
}
