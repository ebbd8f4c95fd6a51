import ClusterAPI
import Foundation
import Logging
import NIOConcurrencyHelpers
import StateMirror
import TLSTransport
import TestSupport
import Testing

/// The sync endpoint and dialer against Python's grpcio (PyPI), an independent gRPC implementation, calling KubeVirt's
/// service by its method and message names over mutual TLS with KubeVirt's identities.
@Suite("Sync endpoint: interoperability with Python grpcio")
struct SyncInteropTests {
    @Test(
        "grpcio calls the endpoint: a known migration succeeds, an unknown one is NOT_FOUND, a missing or garbled status INVALID_ARGUMENT, cancel answers"
    )
    func pythonClient() async throws {
        let directory = try await PythonSyncPeer.workspace()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pki = try TwoClusters()
        let clientKey = try TwoClusters.syncClient(of: pki.a)
        try clientKey.write(certificateTo: directory + "/client.pem", keyTo: directory + "/client-key.pem")
        try TrustBundle([pki.b.certificate]).pem.write(toFile: directory + "/ca.pem", atomically: true, encoding: .utf8)
        let receiver = RecordingReceiver(known: ["known"])
        let server = try TwoClusters.provider(TwoClusters.syncServer(of: pki.b), trusting: [pki.b, pki.a])
        let unused = try TwoClusters.provider(TwoClusters.syncClient(of: pki.a), trusting: [pki.a, pki.b])
        try await SyncPair.with(server: server, client: unused, receiver: receiver) { pair in
            let status = #"{"phase":"Running","nodeName":"node-a","migrationState":{"sourceState":{"node":"node-a"}}}"#
            let calls = [
                #"{"method":"SyncSourceMigrationStatus","migrationID":"known","status":\#(status)}"#,
                #"{"method":"SyncSourceMigrationStatus","migrationID":"unknown-id","status":\#(status)}"#,
                #"{"method":"SyncSourceMigrationStatus","migrationID":"known"}"#,
                #"{"method":"SyncTargetMigrationStatus","migrationID":"known"}"#,
                #"{"method":"SyncTargetMigrationStatus","migrationID":"known","status":"not an object"}"#,
                #"{"method":"SyncTargetMigrationStatus","migrationID":"known","status":\#(status)}"#,
                #"{"method":"CancelMigration","uid":"uid-1"}"#,
            ]
            let result = try await PythonSyncPeer.call(
                calls, at: pair.address, workspace: directory, ca: directory + "/ca.pem",
                certificate: directory + "/client.pem", key: directory + "/client-key.pem", serverName: "localhost")
            try #require(result.status == 0, "\(result.stderr)")
            let answers = try result.stdout.split(separator: "\n").map { try JSONValue.parse(Data($0.utf8)) }
            try #require(answers.count == calls.count, "\(result.stdout) \(result.stderr)")
            #expect(answers[0] == ["code": "OK", "message": "success"])
            #expect(
                answers[1] == [
                    "code": "NOT_FOUND", "details": "target: unable to locate VMI for migrationID unknown-id",
                ])
            #expect(answers[2] == ["code": "INVALID_ARGUMENT", "details": "must pass source status"])
            #expect(answers[3] == ["code": "INVALID_ARGUMENT", "details": "must pass target status"])
            #expect(answers[4]["code"] == "INVALID_ARGUMENT", "\(answers[4])")
            #expect(answers[4]["details"]?.string?.contains("is not a JSON object") == true, "\(answers[4])")
            #expect(answers[5] == ["code": "OK", "message": "success"])
            #expect(answers[6] == ["code": "OK", "message": "migration canceled"])
            let seen = receiver.calls.withLockedValue { $0 }
            // The refused requests never reached the receiver; the unknown one did (it is the receiver that says so).
            #expect(seen.count == 4, "\(seen)")
            if case .source(let first, let peer) = seen.first {
                #expect(first.status.nodeName == "node-a" && first.status.phase == .running)
                #expect(peer.cluster == "cluster-a")
            } else {
                Issue.record("the first call arrived as \(seen)")
            }
        }
    }

    @Test("the dialer calls a grpcio server: KubeVirt's client identity is presented, answers and refusals read back")
    func pythonServer() async throws {
        let directory = try await PythonSyncPeer.workspace()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pki = try TwoClusters()
        try TwoClusters.syncServer(of: pki.b).write(
            certificateTo: directory + "/server.pem", keyTo: directory + "/server-key.pem")
        try TrustBundle([pki.a.certificate]).pem.write(toFile: directory + "/ca.pem", atomically: true, encoding: .utf8)
        let python = try ChildProcess(
            "/usr/bin/env",
            [
                "python3", PythonSyncPeer.script, "server", directory, directory + "/ca.pem", directory + "/server.pem",
                directory + "/server-key.pem",
            ])
        defer { _ = python }
        var port: Int?
        for _ in 0..<300 where port == nil {
            if let line = python.stdout.split(separator: "\n").first,
                let value = try? JSONValue.parse(Data(line.utf8))["port"]?.int
            {
                port = Int(value)
            } else {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        guard let port else {
            let said = await python.stop()
            Issue.record("the Python server did not start: \(said)")
            return
        }
        let client = try TwoClusters.provider(TwoClusters.syncClient(of: pki.a), trusting: [pki.a, pki.b])
        let dialer = SyncDialer(provider: client, logger: .init(label: "test"), callTimeout: .seconds(10))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await dialer.run() }
            defer { dialer.shutdown() }
            let address = "127.0.0.1:\(port)"
            var status = VirtualMachineInstance.Status()
            status.phase = .running
            let known = try await dialer.sendSourceStatus(to: address, migrationID: "known", status: status)
            #expect(known == "success")
            do throws(SyncCallError) {
                _ = try await dialer.sendTargetStatus(to: address, migrationID: "other", status: status)
                Issue.record("an unknown migrationID was accepted")
            } catch {
                #expect(error.kind == .refused(nil))
                #expect(error.description.contains("source: unable to locate VMI for migrationID other"), "\(error)")
            }
            let canceled = try await dialer.cancelMigration(at: address, migrationUID: "uid-7")
            #expect(canceled == "migration canceled")
        }
        let said = await python.stop()
        let lines = said.split(separator: "\n").compactMap { try? JSONValue.parse(Data($0.utf8)) }.filter {
            $0["method"] != nil
        }
        try #require(lines.count == 3, "\(said)")
        for line in lines {
            #expect(line["peer"] == ["kubevirt.io:system:client:virt-synchronization-controller"], "\(line)")
        }
        #expect(lines[0]["method"] == "SyncSourceMigrationStatus" && lines[0]["status"]?["phase"] == "Running")
        #expect(lines[1]["method"] == "SyncTargetMigrationStatus" && lines[1]["migrationID"] == "other")
        #expect(lines[2]["method"] == "CancelMigration" && lines[2]["uid"] == "uid-7")
    }
}
