import Foundation
import Logging
import NIOCore
import NIOPosix
import TLSTransport
import TestSupport
import X509

#if canImport(Glibc)
    import Glibc
#endif

/// `vmsync-bench`: TLSTransport against its anchors, side by side in one run.
@main
struct Benchmark {
    static func main() async throws {
        var arguments = Array(CommandLine.arguments.dropFirst())
        let which = arguments.first.map { $0.hasPrefix("--") ? "all" : arguments.removeFirst() } ?? "all"
        func option(_ name: String, _ fallback: Int) -> Int {
            guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count,
                let value = Int(arguments[index + 1])
            else { return fallback }
            return value
        }
        let bytes = option("--bytes", 1 << 30)
        let rounds = option("--rounds", 3)
        let seconds = option("--seconds", 5)
        guard
            [
                "tunnel", "handshakes", "migration", "controlplane", "cluster-migration", "tcg-memory-copy",
                "reconcile-scale", "mirror", "cross-cluster", "all",
            ].contains(which)
        else {
            FileHandle.standardError.write(
                Data(
                    "vmsync-bench: unknown benchmark \"\(which)\" (tunnel, handshakes, migration, controlplane, cluster-migration, tcg-memory-copy, reconcile-scale, mirror, cross-cluster, all)\n"
                        .utf8))
            exit(2)
        }
        if ["tunnel", "all"].contains(which) { try await tunnel(bytes: bytes, rounds: rounds) }
        if ["handshakes", "all"].contains(which) { try await handshakes(seconds: seconds) }
        if ["migration", "all"].contains(which) { try await MigrationBenchmark.run(rounds: option("--rounds", 4)) }
        if ["controlplane", "all"].contains(which) {
            if arguments.contains("--compare-http-servers") {
                try await ControlPlaneBenchmark.compareHTTPServers(
                    objects: option("--objects", 10_000), watchers: option("--watchers", 100),
                    rounds: option("--rounds", 2))
            } else {
                try await ControlPlaneBenchmark.run(
                    objects: option("--objects", 10_000), watchers: option("--watchers", 100))
            }
        }
        if ["reconcile-scale", "all"].contains(which) {
            try await ReconcileScaleBenchmark.run(
                nodes: option("--nodes", 100), vms: option("--vms", 1000), rounds: option("--rounds", 20))
        }
        if ["cross-cluster", "all"].contains(which) {
            try await CrossClusterMigrationBenchmark.run(
                rounds: option("--rounds", 4), gateway: arguments.contains("--gateway"))
        }
        if ["mirror", "all"].contains(which) {
            try await MirrorBenchmark.run(migrations: option("--migrations", 1000), rounds: option("--rounds", 200))
        }
        if ["tcg-memory-copy", "all"].contains(which) {
            try await TCGMemoryCopyBenchmark.run(rounds: option("--rounds", 6))
        }
        if ["cluster-migration", "all"].contains(which) {
            let limit = option("--max-downtime-ms", 0)
            try await ClusterMigrationBenchmark.run(
                rounds: option("--rounds", 8), maxDowntimeMs: limit > 0 ? limit : nil)
        }
    }

    // MARK: Tunnel throughput

    static func tunnel(bytes: Int, rounds: Int) async throws {
        let authority = try CertificateAuthority.create(cluster: "bench")
        let trust = TrustBundle([authority.certificate])
        let exitProvider = try TLSContextProvider(
            identity: try authority.issue(LeafRequest(role: .node, name: "exit")), trust: trust)
        let entryProvider = try TLSContextProvider(
            identity: try authority.issue(LeafRequest(role: .node, name: "entry")), trust: trust)
        let sink = try Sink()
        let routes = TunnelRoutingTable()
        try routes.allow(
            channel: "bench", to: .tcp(host: "127.0.0.1", port: sink.port), peers: PeerPolicy(allowedRoles: [.node]))
        let exitEnd = try await TunnelExit.start(
            on: .tcp(host: "127.0.0.1", port: 0), provider: exitProvider, peers: .anyRole, routes: routes)
        let entry = try await TunnelEntry.start(
            listeningOn: .tcp(host: "127.0.0.1", port: 0), remote: exitEnd.endpoint, channel: "bench",
            provider: entryProvider, exitPolicy: .anyRole)
        guard case .tcp(_, let entryPort) = entry.endpoint else { return }

        print("tunnel throughput, \(bytes >> 20) MiB per transfer, \(rounds) rounds (raw TCP and tunnel alternating)")
        var ratios: [Double] = []
        for round in 1...rounds {
            let raw = try await transfer(bytes: bytes, to: sink.port, sink: sink)
            let tunnelled = try await transfer(bytes: bytes, to: entryPort, sink: sink)
            let ratio = tunnelled / raw
            ratios.append(ratio)
            print(
                String(
                    format: "  round %d: raw TCP %8.1f MiB/s   tunnel %8.1f MiB/s   ratio %.3f",
                    round, raw / 1_048_576, tunnelled / 1_048_576, ratio))
        }
        let median = ratios.sorted()[ratios.count / 2]
        print(String(format: "  tunnel / raw TCP, median of %d: %.3f (goal >= 0.8)", rounds, median))
        await entry.close()
        await exitEnd.close()
        sink.close()
        try await tunnelLatency(exitProvider: exitProvider, entryProvider: entryProvider)
    }

    /// Round trips of small messages (what libvirt's RPCs and NBD replies are): raw TCP to an echo server against
    /// the same through a tunnel, alternating.
    static func tunnelLatency(exitProvider: TLSContextProvider, entryProvider: TLSContextProvider, trips: Int = 2000)
        async throws
    {
        let echo = try Echo()
        let routes = TunnelRoutingTable()
        try routes.allow(
            channel: "echo", to: .tcp(host: "127.0.0.1", port: echo.port), peers: PeerPolicy(allowedRoles: [.node]))
        let exitEnd = try await TunnelExit.start(
            on: .tcp(host: "127.0.0.1", port: 0), provider: exitProvider, peers: .anyRole, routes: routes)
        let entry = try await TunnelEntry.start(
            listeningOn: .tcp(host: "127.0.0.1", port: 0), remote: exitEnd.endpoint, channel: "echo",
            provider: entryProvider, exitPolicy: .anyRole)
        guard case .tcp(_, let entryPort) = entry.endpoint else { return }
        print("tunnel latency, \(trips) round trips of 64 bytes (raw TCP and tunnel alternating)")
        var medians: [String: [Double]] = [:]
        for _ in 0..<3 {
            for (name, port) in [("raw", echo.port), ("tunnel", entryPort)] {
                let rtts = try await pingPong(port: port, trips: trips)
                medians[name, default: []].append(rtts.sorted()[rtts.count / 2])
            }
        }
        let raw = medians["raw"]!.sorted()[1]
        let tunnelled = medians["tunnel"]!.sorted()[1]
        print(
            String(
                format: "  median round trip: raw TCP %.1f µs, tunnel %.1f µs → +%.1f µs per round trip", raw * 1e6,
                tunnelled * 1e6, (tunnelled - raw) * 1e6))
        await entry.close()
        await exitEnd.close()
        echo.close()
    }

    static func pingPong(port: Int, trips: Int) async throws -> [Double] {
        try await onThread {
            let fd = try connectTCP(port: port)
            defer { close(fd) }
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            var message = [UInt8](repeating: 0x5a, count: 64)
            var rtts: [Double] = []
            for _ in 0..<trips {
                let start = DispatchTime.now().uptimeNanoseconds
                guard message.withUnsafeBytes({ send(fd, $0.baseAddress, 64, Int32(MSG_NOSIGNAL)) }) == 64 else {
                    throw BenchError("send failed")
                }
                var got = 0
                while got < 64 {
                    let count = message.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, 64 - got, 0) }
                    guard count > 0 else { throw BenchError("echo closed") }
                    got += count
                }
                rtts.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            }
            return rtts
        }
    }

    /// Sends `bytes` to 127.0.0.1:`port` and waits until the sink has read all of them; returns bytes per second.
    static func transfer(bytes: Int, to port: Int, sink: Sink) async throws -> Double {
        let start = DispatchTime.now()
        async let received = sink.receiveOne()
        try await onThread {
            let fd = try connectTCP(port: port)
            defer { close(fd) }
            let chunk = [UInt8](repeating: 0xa5, count: 1 << 20)
            var sent = 0
            while sent < bytes {
                let count = min(chunk.count, bytes - sent)
                let written = chunk.withUnsafeBytes { send(fd, $0.baseAddress, count, Int32(MSG_NOSIGNAL)) }
                guard written > 0 else { throw BenchError("send: \(String(cString: strerror(errno)))") }
                sent += written
            }
            shutdown(fd, Int32(SHUT_WR))
        }
        let count = try await received
        guard count == bytes else { throw BenchError("sink received \(count) of \(bytes) bytes") }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        return Double(bytes) / elapsed
    }

    // MARK: Handshakes

    static func handshakes(seconds: Int) async throws {
        let authority = try CertificateAuthority.create(cluster: "bench")
        let trust = TrustBundle([authority.certificate])
        let serverProvider = try TLSContextProvider(
            identity: try authority.issue(LeafRequest(role: .node, name: "srv")), trust: trust)
        let clientKey = try authority.issue(LeafRequest(role: .node, name: "cli"))
        let clientProvider = try TLSContextProvider(identity: clientKey, trust: trust)
        // openssl s_time drops each connection right after its handshake; the server would log every one.
        var quiet = Logger(label: "vmsync.bench")
        quiet.logLevel = .critical
        let server = try await MutualTLSServer.start(
            on: .tcp(host: "127.0.0.1", port: 0), provider: serverProvider, policy: .anyRole, logger: quiet
        ) { channel, _ in
            channel.close(mode: .output).flatMapError { _ in channel.eventLoop.makeSucceededVoidFuture() }
        }
        guard case .tcp(_, let port) = server.endpoint else { return }

        print("mutual-TLS handshakes per second, sequential, \(seconds) s each (ECDSA P-256, TLS 1.3)")
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds) * 1_000_000_000
        var count = 0
        while DispatchTime.now().uptimeNanoseconds < deadline {
            let (channel, _) = try await MutualTLSClient.connect(
                to: server.endpoint, provider: clientProvider, policy: .anyRole)
            channel.close(promise: nil)
            count += 1
        }
        let ours = Double(count) / Double(seconds)
        print(String(format: "  TLSTransport client: %8.1f handshakes/s", ours))

        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vmsync-bench-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let certificate = directory.appendingPathComponent("cli.pem").path
        let key = directory.appendingPathComponent("cli-key.pem").path
        let bundle = directory.appendingPathComponent("ca.pem").path
        try clientKey.certificatePEM.write(toFile: certificate, atomically: true, encoding: .utf8)
        try clientKey.privateKeyPEM.write(toFile: key, atomically: true, encoding: .utf8)
        try trust.pem.write(toFile: bundle, atomically: true, encoding: .utf8)
        let output = try await run(
            opensslPath,
            [
                "s_time", "-connect", "127.0.0.1:\(port)", "-new", "-time", "\(seconds)",
                "-cert", certificate, "-key", key, "-CAfile", bundle,
            ],
            timeout: TimeInterval(seconds * 3 + 10)
        ).stdout
        // "N connections in T.TTs; X.XX connections/user sec" and "N connections in T real seconds"
        if let line = output.split(separator: "\n").first(where: { $0.contains("real seconds") }),
            let connections = Double(line.split(separator: " ")[0]),
            let realSeconds = Double(line.split(separator: " ")[3])
        {
            let theirs = connections / realSeconds
            print(String(format: "  openssl s_time:      %8.1f handshakes/s", theirs))
            print(String(format: "  TLSTransport / openssl: %.3f", ours / theirs))
        } else {
            print("  openssl s_time gave no figure:\n\(output)")
        }
        await server.close()
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A TCP echo server on 127.0.0.1: every connection gets back what it sends.
final class Echo: @unchecked Sendable {
    let fd: Int32
    let port: Int

    init() throws {
        let sink = try Sink()
        fd = sink.fd
        port = sink.port
        let fd = self.fd
        Thread.detachNewThread {
            while true {
                let connection = accept(fd, nil, nil)
                guard connection >= 0 else { return }
                var one: Int32 = 1
                setsockopt(connection, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                Thread.detachNewThread {
                    defer { Glibc.close(connection) }
                    var buffer = [UInt8](repeating: 0, count: 65536)
                    while true {
                        let count = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
                        if count <= 0 { return }
                        guard
                            buffer.withUnsafeBytes({ send(connection, $0.baseAddress, count, Int32(MSG_NOSIGNAL)) })
                                == count
                        else { return }
                    }
                }
            }
        }
    }

    func close() {
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
    }
}

/// A TCP sink on 127.0.0.1 that counts what each connection sends.
final class Sink: @unchecked Sendable {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else { throw BenchError("sink: \(String(cString: strerror(errno)))") }
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    func receiveOne() async throws -> Int {
        try await onThread {
            let connection = accept(self.fd, nil, nil)
            guard connection >= 0 else { throw BenchError("accept: \(String(cString: strerror(errno)))") }
            defer { Glibc.close(connection) }
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            var total = 0
            while true {
                let count = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
                if count <= 0 { return total }
                total += count
            }
        }
    }

    func close() { Glibc.close(fd) }
}

func connectTCP(port: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard result == 0 else {
        close(fd)
        throw BenchError("connect: \(String(cString: strerror(errno)))")
    }
    return fd
}
