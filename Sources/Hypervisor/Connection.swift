internal import CLibvirt
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// libvirt keepalive: a probe every `interval` seconds, the connection declared dead after `count` unanswered ones.
public struct KeepAlive: Sendable, Hashable {
    /// Seconds between probes.
    public var interval: Int32
    /// Unanswered probes before the connection is closed.
    public var count: UInt32

    /// Creates a keepalive setting.
    public init(interval: Int32, count: UInt32) {
        self.interval = interval
        self.count = count
    }

    /// 5 s × 5, as Harvester configures libvirt's peer-to-peer keepalive.
    public static let `default` = KeepAlive(interval: 5, count: 5)
}

/// An open connection to one libvirt daemon (or libvirt's `test:///` driver). Thread-safe: libvirt connections may
/// be used from several threads; every blocking call runs off the cooperative pool.
public final class Connection: @unchecked Sendable {
    /// The URI the connection was opened with.
    public let uri: String
    let pointer: OpaquePointer
    private let isClosed = Mutex(false)
    /// Event callback registrations; libvirt keeps the connection alive while any exists, so `close` drops them.
    let eventRegistrations = Mutex<Set<Int32>>([])
    /// The hypervisor's version once asked (`hypervisorVersion()`).
    let knownVersion = Mutex<HypervisorVersion?>(nil)

    private init(uri: String, pointer: OpaquePointer) {
        self.uri = uri
        self.pointer = pointer
    }

    /// Opens `uri` (e.g. `qemu+unix:///system?socket=/run/vmsync/a1/libvirt-sock`, `test:///default`) and, for
    /// connections that go through a daemon, turns on keepalive.
    public static func open(_ uri: String, keepAlive: KeepAlive? = .default) async throws(HypervisorError) -> Connection
    {
        LibvirtEventLoop.ensureRunning()
        let connection = try await BlockingExecutor.run { () throws(HypervisorError) -> Connection in
            guard let pointer = virConnectOpen(uri) else {
                let error = HypervisorError.last("open of \(uri)")
                throw HypervisorError(.connectionFailed, error.message, libvirtCode: error.libvirtCode)
            }
            return Connection(uri: uri, pointer: pointer)
        }
        if let keepAlive, !uri.hasPrefix("test:") {
            try await connection.call("keepalive setup on \(uri)") { pointer in
                virConnectSetKeepAlive(pointer, keepAlive.interval, keepAlive.count)
            }
        }
        return connection
    }

    /// Closes the connection; later calls fail with `connectionFailed`. Closing twice does nothing.
    public func close() async {
        let first = isClosed.withLock { closed in
            defer { closed = true }
            return !closed
        }
        guard first else { return }
        let handle = LibvirtHandle(pointer)
        let registrations = eventRegistrations.withLock { registrations in
            defer { registrations.removeAll() }
            return registrations
        }
        _ = try? await BlockingExecutor.run { () throws(HypervisorError) -> Int32 in
            for identifier in registrations {
                virConnectDomainEventDeregisterAny(handle.pointer, identifier)
            }
            return virConnectClose(handle.pointer)
        }
    }

    /// Whether the daemon is still reachable (false after keepalive declared it dead, or after `close`).
    public var isAlive: Bool {
        get async {
            guard !isClosed.withLock({ $0 }) else { return false }
            let handle = LibvirtHandle(pointer)
            return
                (try? await BlockingExecutor.run { () throws(HypervisorError) -> Bool in
                    virConnectIsAlive(handle.pointer) == 1
                }) ?? false
        }
    }

    /// Defines (persistently) the domain described by `spec`, replacing the definition of a stopped domain of the
    /// same name.
    public func define(_ spec: DomainSpec) async throws(HypervisorError) -> Domain {
        try await define(xml: try spec.xml(), name: spec.name)
    }

    /// Defines a domain from raw libvirt XML (used for the migratable XML of another host).
    public func define(xml: String, name: String) async throws(HypervisorError) -> Domain {
        let domain = try await call("definition of domain \"\(name)\" on \(uri)") { pointer in
            virDomainDefineXML(pointer, xml)
        }
        return Domain(connection: self, pointer: domain, name: name)
    }

    /// The domain called `name`.
    public func domain(named name: String) async throws(HypervisorError) -> Domain {
        let domain = try await call("lookup of domain \"\(name)\" on \(uri)") { pointer in
            virDomainLookupByName(pointer, name)
        }
        return Domain(connection: self, pointer: domain, name: name)
    }

    /// The names of all domains, running or defined.
    public func domainNames() async throws(HypervisorError) -> [String] {
        try await run("listing of domains on \(uri)") { pointer throws(HypervisorError) -> [String] in
            var list: UnsafeMutablePointer<virDomainPtr?>?
            let count = virConnectListAllDomains(pointer, &list, 0)
            guard count >= 0, let list else { throw HypervisorError.last("listing of domains on \(self.uri)") }
            defer { free(list) }
            var names: [String] = []
            for index in 0..<Int(count) {
                guard let domain = list[index] else { continue }
                if let name = virDomainGetName(domain) { names.append(String(cString: name)) }
                virDomainFree(domain)
            }
            return names.sorted()
        }
    }

    // MARK: Calls

    /// Runs `body` with the connection pointer on the blocking executor; a nil result is the libvirt error.
    func call(
        _ operation: String,
        _ body: @escaping @Sendable (OpaquePointer) -> OpaquePointer?
    ) async throws(HypervisorError) -> OpaquePointer {
        try await run(operation) { pointer throws(HypervisorError) -> LibvirtHandle in
            guard let value = body(pointer) else { throw HypervisorError.last(operation) }
            return LibvirtHandle(value)
        }.pointer
    }

    /// Runs `body` with the connection pointer; a negative result is the libvirt error.
    func call(_ operation: String, _ body: @escaping @Sendable (OpaquePointer) -> Int32) async throws(HypervisorError) {
        _ = try await run(operation) { pointer throws(HypervisorError) -> Int32 in
            let result = body(pointer)
            if result < 0 { throw HypervisorError.last(operation) }
            return result
        }
    }

    func run<T: Sendable>(
        _ operation: String,
        _ body: @escaping @Sendable (OpaquePointer) throws(HypervisorError) -> T
    ) async throws(HypervisorError) -> T {
        guard !isClosed.withLock({ $0 }) else {
            throw HypervisorError(.connectionFailed, "\(operation): the connection to \(uri) is closed")
        }
        let handle = LibvirtHandle(pointer)
        let uri = uri
        return try await BlockingExecutor.run { () throws(HypervisorError) -> T in
            do throws(HypervisorError) {
                return try body(handle.pointer)
            } catch {
                // A call on a connection keepalive (or the daemon) closed fails with a generic libvirt error.
                guard error.code == .libvirt, virConnectIsAlive(handle.pointer) != 1 else { throw error }
                throw HypervisorError(
                    .connectionFailed, "\(error.message) (the connection to \(uri) is lost)",
                    libvirtCode: error.libvirtCode)
            }
        }
    }
}

extension Connection {
    /// Runs `body` on the current thread if the connection is open, holding off `close` meanwhile (for callers
    /// already off the cooperative pool, such as stream teardown).
    func runSynchronously<T: Sendable>(_ body: (OpaquePointer) -> T) throws(HypervisorError) -> T {
        let result: T? = isClosed.withLock { closed in closed ? nil : body(pointer) }
        guard let result else { throw HypervisorError(.connectionFailed, "the connection to \(uri) is closed") }
        return result
    }
}

/// A libvirt object pointer crossing threads. libvirt's connection and domain objects are thread-safe and
/// reference-counted; the owning Swift object keeps them alive for the duration of every call.
struct LibvirtHandle: @unchecked Sendable {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
}
