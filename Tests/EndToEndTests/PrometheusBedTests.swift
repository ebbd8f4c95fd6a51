import BedTesting
import ClusterAPI
import ClusterBed
import Foundation
import TestBed
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Debian's Prometheus.
let prometheusPath = "/usr/bin/prometheus"

extension EndToEnd {
    /// A real Prometheus scrapes the daemons of a cluster on the bed while it migrates a guest.
    @Suite(
        "Prometheus scrapes the controller and an agent", .serialized, .enabled(if: canRunTestBed),
        .enabled(
            if: prometheusInstalled(),
            "prometheus is not installed (apt-get install prometheus; .ci/packages does): the scrape test cannot run"),
        .testBed(nodes: 2))
    struct PrometheusBedTests {
        @Test(
            "Prometheus (its own process, config and storage, in the bed's switch namespace) scrapes the controller and the source agent every second; after a migration it holds vmsync_migrations_total for a success, the job's duration and bytes, the migration controller's reconciles, and both targets are up"
        )
        func scrapeDuringMigration() async throws {
            let bed = try currentBed()
            let cluster = try await BedCluster.start(bed)
            defer { cluster.stopAll() }
            try await cluster.apply(
                MigrationManifests.storageClasses(sharedDirectory: bed.report.sharedDirectory), as: "classes.yaml")
            try await cluster.apply(
                MigrationManifests.bootableVM("scraped-vm", storageClass: "shared", image: bed.report.guest.bootDisk),
                as: "vm.yaml")
            let source = try await cluster.waitForRunning("scraped-vm")

            // The scrape targets, as an operator's prometheus.yml names them.
            let directory = bed.report.directory + "/prometheus-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: directory + "/data", withIntermediateDirectories: true)
            try """
            global:
              scrape_interval: 1s
              scrape_timeout: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: vmsync-controller
                static_configs:
                  - targets: ["\(cluster.controllerMetrics)"]
              - job_name: vmsync-node-agent
                static_configs:
                  - targets: ["\(cluster.agentMetrics(source))"]
                    labels:
                      node: "\(source)"
            """.write(toFile: directory + "/prometheus.yml", atomically: true, encoding: .utf8)
            let web = "127.0.0.1:9090"
            let prometheus = try bed.startOnSwitch(
                prometheusPath,
                [
                    "--config.file=\(directory)/prometheus.yml", "--storage.tsdb.path=\(directory)/data",
                    "--web.listen-address=\(web)",
                    "--storage.tsdb.retention.time=1h", "--log.level=warn",
                ])
            defer { kill(prometheus.pid, SIGKILL) }

            /// The instant vector of `query` from Prometheus's HTTP API, as (labels, value) pairs.
            func query(_ query: String) async throws -> [(labels: JSONValue, value: Double)] {
                let answer = try await bed.runOnSwitch([
                    "/usr/bin/curl", "-sS", "--get", "--data-urlencode", "query=\(query)", "http://\(web)/api/v1/query",
                ])
                guard answer.status == 0 else { throw TestBedError("curl: \(answer.stderr)") }
                let body = try JSONValue.parse(Data(answer.stdout.utf8))
                guard body["status"] == "success" else {
                    throw TestBedError("Prometheus refused \(query): \(answer.stdout)")
                }
                return (body["data"]?["result"]?.array ?? []).map {
                    ($0["metric"] ?? [:], Double($0["value"]?.array?.last?.string ?? "") ?? .nan)
                }
            }
            /// Waits until `query` has a series whose value passes `check`; returns its value.
            func waitFor(
                _ what: String, _ text: String, timeout: TimeInterval = 60, _ check: @escaping (Double) -> Bool
            ) async throws -> Double {
                try await cluster.waitFor("Prometheus: \(what) (\(text))", timeout: timeout) {
                    try await query(text).first { check($0.value) }?.value
                }
            }

            // Both targets scraped before the migration (the counters' series exist from the daemons' start).
            _ = try await cluster.waitFor("Prometheus: both targets up", timeout: 60) { () async throws -> Bool? in
                let up = try await query("up")
                let jobs = Dictionary(up.map { ($0.labels["job"]?.string ?? "", $0.value) }, uniquingKeysWith: { $1 })
                return jobs["vmsync-controller"] == 1 && jobs["vmsync-node-agent"] == 1 ? true : nil
            }
            #expect(try await query(#"vmsync_migrations_total{result="succeeded"}"#).first?.value == 0)

            let result = try await cluster.syncctl(["migrate", "scraped-vm", "--wait"])
            #expect(result.status == 0, "\(result.stdout)\(result.stderr)")

            let succeeded = try await waitFor(
                "a successful migration counted",
                #"vmsync_migrations_total{job="vmsync-controller",result="succeeded"}"#
            ) { $0 >= 1 }
            #expect(succeeded == 1, "counted once")
            #expect(try await query(#"sum(vmsync_migrations_total{result=~"failed|aborted"})"#).first?.value == 0)
            let jobs = try await waitFor(
                "the migration job's duration on the source agent",
                #"vmsync_migration_duration_seconds_count{job="vmsync-node-agent"}"#
            ) { $0 >= 1 }
            #expect(jobs == 1)
            let seconds =
                try await query(#"vmsync_migration_duration_seconds_sum{job="vmsync-node-agent"}"#).first?.value ?? 0
            #expect(seconds > 0 && seconds < 120, "the job took \(seconds) s")
            let bytes = try await waitFor(
                "the bytes it sent", #"vmsync_migration_data_processed_bytes_sum{job="vmsync-node-agent"}"#
            ) { $0 > 0 }
            #expect(bytes > Double(1 << 20), "the guest's memory in use at least: \(bytes) bytes")
            let reconciles = try await waitFor(
                "the migration controller's reconciles", #"sum(vmsync_reconcile_total{controller="migration"})"#
            ) { $0 > 0 }
            print(
                "Prometheus: migrations succeeded \(succeeded), job \(seconds) s, \(bytes) bytes, \(reconciles) migration reconciles"
            )
            // The API server's own, and the agent's reconciles of the migration it sent (waited for like the others:
            // the agent's last reconciles may reach Prometheus a scrape after the controller's count).
            _ = try await waitFor("the API's watches", #"sum(vmsync_api_requests_total{verb="WATCH"})"#) { $0 > 0 }
            _ = try await waitFor(
                "the source agent's migration reconciles",
                #"vmsync_reconcile_total{job="vmsync-node-agent",controller="agent-migration",result="success"}"#
            ) { $0 > 0 }
            let up = try await query("up")
            #expect(
                up.count == 2 && up.allSatisfy { $0.value == 1 },
                "\(up.map { "\($0.labels["job"]?.string ?? "?") \($0.value)" })")

            // Exactly the Prometheus this test started stops.
            let output = await prometheus.stop()
            #expect(kill(prometheus.pid, 0) != 0, "Prometheus \(prometheus.pid) stopped: \(output.suffix(500))")
            _ = try await cluster.syncctl(["delete", "vm", "scraped-vm"])
        }
    }
}

/// Whether Debian's Prometheus is installed (without it the suite is skipped, and Swift Testing prints why).
func prometheusInstalled() -> Bool {
    FileManager.default.isExecutableFile(atPath: prometheusPath)
}
