import ClusterAPI
import ClusterClient
import Foundation
import TLSTransport
import TestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// The cluster API of a real sync-controller process on loopback: create/get latency, listing 10,000 objects,
/// watch delivery to 100 watchers, and the controller's memory with 10,000 objects. The anchor is the same
/// client's `GET /healthz` round trip on the same kind of connection (mutual TLS, HTTP/1.1): the transport floor.
enum ControlPlaneBenchmark {
    /// One run's figures (milliseconds, creates per second, KiB).
    struct Figures {
        var anchor = 0.0
        var create = 0.0
        var get = 0.0
        var fillRate = 0.0
        var list = 0.0
        var watch = 0.0
        var idleRSS = 0
        var fullRSS = 0
    }

    /// Runs the controller with each HTTP server in turn, `rounds` times each (A B A B …, so drift hits both alike),
    /// and prints every figure's median per server side by side with the ratio hummingbird / nio.
    static func compareHTTPServers(objects: Int, watchers: Int, rounds: Int) async throws {
        let servers = ["nio", "hummingbird"]
        var figures: [String: [Figures]] = [:]
        for round in 0..<rounds {
            for server in round % 2 == 0 ? servers : servers.reversed() {
                print("controlplane: round \(round + 1) of \(rounds), --http-server \(server)")
                figures[server, default: []].append(
                    try await run(objects: objects, watchers: watchers, httpServer: server))
            }
        }
        func median(_ server: String, _ value: (Figures) -> Double) -> Double {
            percentile((figures[server] ?? []).map(value), 50)
        }
        let rows: [(String, (Figures) -> Double, String)] = [
            ("GET /healthz p50 (anchor)", { $0.anchor }, "ms"),
            ("create p50", { $0.create }, "ms"),
            ("get p50", { $0.get }, "ms"),
            ("fill rate (8 writers)", { $0.fillRate }, "creates/s"),
            ("list of all, served+received p50", { $0.list }, "ms"),
            ("watch delivery p50", { $0.watch }, "ms"),
            ("RSS idle", { Double($0.idleRSS) / 1024 }, "MiB"),
            ("RSS with all objects", { Double($0.fullRSS) / 1024 }, "MiB"),
        ]
        print(
            "controlplane: medians of \(rounds) runs per server, alternated; ratio = hummingbird / nio (for the fill rate, higher is better)"
        )
        print("| figure | nio | hummingbird | ratio |")
        print("| --- | --- | --- | --- |")
        for (name, value, unit) in rows {
            let old = median("nio", value)
            let new = median("hummingbird", value)
            func text(_ value: Double) -> String { String(format: "%.2f", value) }
            print("| \(name) | \(text(old)) \(unit) | \(text(new)) \(unit) | \(String(format: "%.3f", new / old)) |")
        }
        for server in servers {
            let runs = (figures[server] ?? []).map {
                String(
                    format: "create %.2f get %.2f fill %.0f list %.0f watch %.2f idle %.1f", $0.create, $0.get,
                    $0.fillRate, $0.list, $0.watch, Double($0.idleRSS) / 1024)
            }
            print("controlplane: \(server) runs: \(runs.joined(separator: "; "))")
        }
    }

    @discardableResult
    static func run(objects: Int, watchers: Int, httpServer: String? = nil) async throws -> Figures {
        var figures = Figures()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "bench-cp-\(UUID().uuidString.prefix(6))"
        ).path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pki = PKIDirectory(url: URL(fileURLWithPath: directory + "/pki"))
        _ = try pki.initialize(cluster: "bench")
        let controllerKey = try pki.issue(
            LeafRequest(role: .controller, name: "controller", ipAddresses: ["127.0.0.1"]))
        let user = try pki.issue(LeafRequest(role: .user, name: "bench"))
        let binary = URL(
            fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "/"
        )
        .deletingLastPathComponent().appendingPathComponent("sync-controller").path
        let controller = try ChildProcess(
            binary,
            [
                "--data", directory + "/data", "--listen", "127.0.0.1:0", "--cert", controllerKey.certificate.path,
                "--key", controllerKey.privateKey.path, "--ca", pki.bundleURL.path, "--log-level", "error",
            ] + (httpServer.map { ["--http-server", $0] } ?? []))
        defer { _ = controller }
        var endpoint: Endpoint?
        for _ in 0..<400 {
            if let line = controller.stdout.split(separator: "\n").first(where: {
                $0.contains("serving the cluster API on ")
            }) {
                endpoint = try Endpoint(
                    parsing: String(line.components(separatedBy: "serving the cluster API on ").last ?? ""))
                break
            }
            try await Task.sleep(for: .milliseconds(25))
        }
        guard let endpoint else { throw BenchError("sync-controller did not start: \(await controller.stop())") }
        let provider = try TLSContextProvider(identity: user.key, trust: try pki.bundle())
        let client = APIClient(endpoint: endpoint, provider: provider)
        try await Task.sleep(for: .milliseconds(500))
        let idleRSS = rss(controller.pid)

        func timed(_ body: () async throws -> Void) async rethrows -> Double {
            let start = ContinuousClock.now
            try await body()
            let elapsed = ContinuousClock.now - start
            return Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) / 1e15
        }
        // Warm-up, then alternate anchor and measured requests so both see the same conditions.
        for _ in 0..<50 { _ = try await client.request("GET", "/healthz") }
        var healthz: [Double] = []
        var creates: [Double] = []
        var gets: [Double] = []
        for index in 0..<500 {
            healthz.append(try await timed { _ = try await client.request("GET", "/healthz") })
            creates.append(
                try await timed {
                    _ = try await client.create(
                        Kinds.configMap,
                        [
                            "apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": .string("lat-\(index)")],
                            "data": ["k": "v"],
                        ])
                })
            gets.append(try await timed { _ = try await client.get(Kinds.configMap, name: "lat-\(index)") })
        }
        let floor = percentile(healthz, 50)
        (figures.anchor, figures.create, figures.get, figures.idleRSS) = (
            floor, percentile(creates, 50), percentile(gets, 50), idleRSS
        )
        print(
            String(
                format: "controlplane: GET /healthz (anchor) p50 %.2f ms p99 %.2f ms", floor, percentile(healthz, 99)))
        print(
            String(
                format: "controlplane: create p50 %.2f ms p99 %.2f ms (%.1f× the anchor; each create is fsynced)",
                percentile(creates, 50), percentile(creates, 99), percentile(creates, 50) / floor))
        print(
            String(
                format: "controlplane: get    p50 %.2f ms p99 %.2f ms (%.1f× the anchor)", percentile(gets, 50),
                percentile(gets, 99), percentile(gets, 50) / floor))

        // Fill to `objects` with a few concurrent writers.
        let fill = try await timed {
            try await withThrowingTaskGroup(of: Void.self) { group in
                let writers = 8
                for writer in 0..<writers {
                    group.addTask {
                        let own = APIClient(endpoint: endpoint, provider: provider)
                        for index in stride(from: 500 + writer, to: objects, by: writers) {
                            _ = try await own.create(
                                Kinds.configMap,
                                [
                                    "apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": ["name": .string("obj-\(index)"), "labels": ["bench": "yes"]],
                                    "data": ["payload": .string(String(repeating: "x", count: 200))],
                                ])
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        figures.fillRate = Double(objects - 500) / (fill / 1000)
        print(
            String(
                format: "controlplane: filled to %d objects in %.1f s (%.0f creates/s, 8 writers)", objects,
                fill / 1000, Double(objects - 500) / (fill / 1000)))
        var lists: [Double] = []
        var raws: [Double] = []
        var count = 0
        var bytes = 0
        for _ in 0..<5 {
            raws.append(
                try await timed {
                    bytes = try await client.raw(Kinds.configMap.collectionPath(namespace: "default")).count
                })
            lists.append(try await timed { count = try await client.list(Kinds.configMap)["items"]?.array?.count ?? 0 })
        }
        print(
            String(
                format:
                    "controlplane: list of %d objects (%.1f MiB): served and received in p50 %.0f ms; decoded into objects by the client in p50 %.0f ms",
                count, Double(bytes) / 1_048_576, percentile(raws, 50), percentile(lists, 50)))
        let fullRSS = rss(controller.pid)
        (figures.list, figures.fullRSS) = (percentile(raws, 50), fullRSS)
        print(
            String(
                format: "controlplane: controller RSS %.1f MiB idle, %.1f MiB with %d objects (ratio %.2f)",
                Double(idleRSS) / 1024, Double(fullRSS) / 1024, objects, Double(fullRSS) / Double(max(idleRSS, 1))))

        // Watch delivery: `watchers` open watches; each created object's arrival at every watcher.
        let arrivals = ArrivalLog()
        let version = try await client.list(Kinds.configMap, labelSelector: "watch=bench")["metadata"]?[
            "resourceVersion"]?.string
        var tasks: [Task<Void, Never>] = []
        for _ in 0..<watchers {
            let own = APIClient(endpoint: endpoint, provider: provider)
            let events = try await own.watch(
                Kinds.configMap, namespace: "default", labelSelector: "watch=bench", resourceVersion: version)
            tasks.append(
                Task {
                    do {
                        for try await event in events {
                            arrivals.record(event.object["metadata"]?["name"]?.string ?? "")
                            _ = own
                        }
                    } catch {}
                })
        }
        try await Task.sleep(for: .milliseconds(500))
        var delays: [Double] = []
        for index in 0..<20 {
            let name = "w-\(index)"
            let sent = ContinuousClock.now
            _ = try await client.create(
                Kinds.configMap,
                [
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": ["name": .string(name), "labels": ["watch": "bench"]],
                ])
            let deadline = sent + .seconds(10)
            while arrivals.count(name) < watchers && ContinuousClock.now < deadline {
                try await Task.sleep(for: .microseconds(200))
            }
            delays += arrivals.delays(name, since: sent)
        }
        for task in tasks { task.cancel() }
        print(
            String(
                format:
                    "controlplane: watch delivery to %d watchers p50 %.2f ms p99 %.2f ms (%d of %d deliveries; %.1f× the anchor)",
                watchers, percentile(delays, 50), percentile(delays, 99), delays.count, watchers * 20,
                percentile(delays, 50) / floor))
        figures.watch = percentile(delays, 50)
        _ = await controller.stop()
        return figures
    }

    static func percentile(_ values: [Double], _ p: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * p / 100))]
    }

    /// VmRSS in KiB.
    static func rss(_ pid: Int32) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return 0 }
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }
}

/// When each watcher saw each object.
final class ArrivalLog: @unchecked Sendable {
    private let lock = NSLock()
    private var seen: [String: [ContinuousClock.Instant]] = [:]
    func record(_ name: String) { lock.withLock { seen[name, default: []].append(.now) } }
    func count(_ name: String) -> Int { lock.withLock { seen[name]?.count ?? 0 } }
    func delays(_ name: String, since start: ContinuousClock.Instant) -> [Double] {
        lock.withLock {
            (seen[name] ?? []).map {
                let d = $0 - start
                return Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15
            }
        }
    }
}
