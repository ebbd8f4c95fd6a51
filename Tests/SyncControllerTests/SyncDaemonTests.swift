import ClusterAPI
import ClusterClient
import Foundation
import TLSTransport
import TestSupport
import Testing

/// Two real `sync-controller` processes with their sync endpoints (certificates issued from their PKIs, each having
/// imported the other's CA), driven through their cluster APIs as a user would.
@Suite("sync-controller: the sync endpoint between two daemons")
struct SyncDaemonTests {
    static func phase(_ object: JSONValue) -> String { object["status"]?["phase"]?.string ?? "" }

    /// A Ready node with a tunnel endpoint, registered through the API with its own certificate.
    static func node(_ name: String, in cluster: ClusterFixture) async throws {
        let client = try cluster.client("node-\(name)")
        _ = try await client.create(
            Kinds.node,
            [
                "apiVersion": "v1", "kind": "Node",
                "metadata": [
                    "name": .string(name),
                    "labels": [
                        "kubernetes.io/hostname": .string(name), "host-model-cpu.node.kubevirt.io/EPYC": "true",
                        "cpu-model.node.kubevirt.io/Westmere": "true",
                    ],
                ],
                "status": ["allocatable": ["memory": "4Gi"], "tunnelEndpoint": "127.0.0.1:9187"],
            ])
        var condition = Resources.condition("Ready", true, reason: "AgentReady")
        condition["lastHeartbeatTime"] = .string(Resources.now())
        _ = try await client.patch(
            Kinds.node, name: name,
            [
                "status": [
                    "allocatable": ["memory": "4Gi"], "conditions": [condition], "tunnelEndpoint": "127.0.0.1:9187",
                ]
            ],
            status: true)
    }

    @Test(
        "the daemons publish their synchronizationAddresses; until the CAs are exchanged the source says the peer does not trust it; syncctl ca export | syncctl ca import exchanges them through the APIs (no restart) and the migration reaches Scheduled on both sides; grpcio gets KubeVirt's answers; kill -9 of either controller loses nothing (the news waits in the peer's outbox, a cancel holds the finalizer until the peer hears); --sync-listen without an address to advertise is refused"
    )
    func twoDaemons() async throws {
        let a = try ClusterFixture(cluster: "alpha")
        let b = try ClusterFixture(cluster: "beta")
        let (aPort, bPort) = (try freeLoopbackPort(), try freeLoopbackPort())
        try await a.start(["--pki", a.directory + "/pki", "--sync-listen", "127.0.0.1:\(aPort)"])
        try await b.start(["--pki", b.directory + "/pki", "--sync-listen", "127.0.0.1:\(bPort)"])
        defer {
            _ = a
            _ = b
        }
        let userA = try a.client()
        let userB = try b.client()
        let kubeVirt = try await userB.get(Kinds.kubeVirt, namespace: "kubevirt", name: "kubevirt")
        #expect(kubeVirt["status"]?["synchronizationAddresses"] == [.string("127.0.0.1:\(bPort)")])

        try await Self.node("a1", in: a)
        try await Self.node("a1", in: b)
        _ = try await userA.create(
            Kinds.virtualMachineInstance,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": ["name": "vm1"],
                "spec": ["domain": ["resources": ["requests": ["memory": "128Mi"]]]],
            ])
        // The source VMI runs on a1 (as its agent would report).
        _ = try await a.client("node-a1").patch(
            Kinds.virtualMachineInstance, namespace: "default", name: "vm1",
            ["status": ["phase": "Running", "nodeName": "a1"]], status: true)
        _ = try await userB.create(
            Kinds.virtualMachine,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "metadata": ["name": "vm1", "annotations": ["kubevirt.io/restore-run-strategy": "Always"]],
                "spec": [
                    "runStrategy": "WaitAsReceiver",
                    "template": ["spec": ["domain": ["resources": ["requests": ["memory": "128Mi"]]]]],
                ],
            ])
        _ = try await userB.create(
            Kinds.migration,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                "metadata": ["name": "receive"], "spec": ["vmiName": "vm1", "receive": ["migrationID": "m-1"]],
            ])
        _ = try await userA.create(
            Kinds.migration,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration", "metadata": ["name": "send"],
                "spec": [
                    "vmiName": "vm1", "sendTo": ["migrationID": "m-1", "connectURL": .string("127.0.0.1:\(bPort)")],
                ],
            ])
        // No CA exchanged yet: the delivery fails, and the source VMIM says why.
        var waited = JSONValue.null
        for _ in 0..<200 {
            waited = try await userA.get(Kinds.migration, namespace: "default", name: "send")
            let synchronized = waited["status"]?["conditions"]?.array?.first { $0["type"] == "Synchronized" }
            if synchronized?["status"] == "False" { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let notTrusted = waited["status"]?["conditions"]?.array?.first { $0["type"] == "Synchronized" }
        #expect(notTrusted?["reason"] == "PeerUnreachable", "\(waited["status"] ?? .null)")
        #expect(
            notTrusted?["message"]?.string?.contains("not in the trust bundle") == true,
            "\(notTrusted ?? .null)")
        #expect(Self.phase(waited) == "Synchronizing")

        // The exchange, through both APIs, as an operator does it.
        for (from, to) in [(a, b), (b, a)] {
            let exchanged = try await run(
                "/bin/sh",
                [
                    "-c",
                    "\(syncctlPath) ca export --kubeconfig \(try await from.kubeconfig()) | \(syncctlPath) ca import --kubeconfig \(try await to.kubeconfig()) -f -",
                ], timeout: 60)
            #expect(exchanged.status == 0, "\(exchanged.stderr)")
            #expect(exchanged.stdout.contains("added"), "\(exchanged.stdout)")
        }
        let bundle = try await userB.get(Kinds.configMap, namespace: "kubevirt", name: "kubevirt-ca")
        let pem = bundle["data"]?["ca-bundle"]?.string ?? ""
        #expect(try TrustBundle(pem: pem).certificates.count == 2, "kubevirt-ca holds both clusters' CAs")
        let inbox = try await userB.get(Kinds.configMap, namespace: "kubevirt", name: "kubevirt-external-ca")
        #expect(inbox["data"]?["ca-bundle"] == "", "the inbox is cleared")
        // Garbage and duplicates are refused with a reason.
        let garbage = try await run(
            "/bin/sh",
            [
                "-c",
                "( echo 'not a certificate'; \(syncctlPath) ca export --kubeconfig \(try await a.kubeconfig()) ) | \(syncctlPath) ca import --kubeconfig \(try await b.kubeconfig()) -f -",
            ], timeout: 60)
        #expect(
            garbage.stdout.contains("rejected") && garbage.stdout.contains("dropped-duplicate"), "\(garbage.stdout)")

        let deadline = ContinuousClock.now + .seconds(30)
        var source = JSONValue.null
        var target = JSONValue.null
        while ContinuousClock.now < deadline {
            source = try await userA.get(Kinds.migration, namespace: "default", name: "send")
            target = try await userB.get(Kinds.migration, namespace: "default", name: "receive")
            if ["Scheduled", "PreparingTarget"].contains(Self.phase(source)) && Self.phase(target) == "Scheduled" { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(["Scheduled", "PreparingTarget"].contains(Self.phase(source)), "\(source["status"] ?? .null)")
        #expect(Self.phase(target) == "Scheduled", "\(target["status"] ?? .null)")
        #expect(source["status"]?["synchronizationAddresses"] == [.string("127.0.0.1:\(aPort)")])
        #expect(source["status"]?["synchronizationPeer"]?["cluster"] == "beta")
        #expect(target["status"]?["synchronizationPeer"]?["cluster"] == "alpha")
        #expect(source["status"]?["migrationState"]?["targetState"]?["node"] == "a1")
        #expect(target["status"]?["migrationState"]?["sourceState"]?["syncAddress"]?.string == "127.0.0.1:\(aPort)")
        // Python's grpcio with cluster alpha's sync client identity, calling beta's daemon by KubeVirt's names: an
        // unknown migrationID is NOT_FOUND in KubeVirt's words, a missing status INVALID_ARGUMENT, an unknown uid to
        // cancel answers "migration canceled".
        let python = try await PythonSyncPeer.workspace()
        defer { try? FileManager.default.removeItem(atPath: python) }
        try TrustBundle([try b.pki.authority().certificate]).pem.write(
            toFile: python + "/ca.pem", atomically: true, encoding: .utf8)
        let answers = try await PythonSyncPeer.call(
            [
                #"{"method":"SyncSourceMigrationStatus","migrationID":"nope","status":{"phase":"Running"}}"#,
                #"{"method":"SyncTargetMigrationStatus","migrationID":"nope","status":{"phase":"Running"}}"#,
                #"{"method":"SyncSourceMigrationStatus","migrationID":"m-1"}"#,
                #"{"method":"CancelMigration","uid":"no-such-uid"}"#,
            ], at: "127.0.0.1:\(bPort)", workspace: python, ca: python + "/ca.pem",
            certificate: a.directory + "/data/sync-client.pem", key: a.directory + "/data/sync-client-key.pem",
            serverName: "127.0.0.1")
        #expect(answers.status == 0, "\(answers.stderr)")
        let lines = answers.stdout.split(separator: "\n").compactMap { try? JSONValue.parse(Data($0.utf8)) }
        #expect(
            lines == [
                ["code": "NOT_FOUND", "details": "target: unable to locate VMI for migrationID nope"],
                ["code": "NOT_FOUND", "details": "source: unable to locate VMI for migrationID nope"],
                ["code": "INVALID_ARGUMENT", "details": "must pass source status"],
                ["code": "OK", "message": "migration canceled"],
            ], "\(answers.stdout) \(answers.stderr)")

        // kill -9 of the source's controller; the target's agent reports its domain ready meanwhile. Restarted on the
        // same store, the source gets the news the target's outbox kept for it.
        await a.kill9()
        let receiving = try await userB.get(Kinds.virtualMachineInstance, namespace: "default", name: "vm1")
        var state = receiving["status"]?["migrationState"] ?? [:]
        state["targetState"]?["domainReadyTimestamp"] = .string(Migration.timestamp())
        state["targetState"]?["nodeAddress"] = "127.0.0.1"
        // (Written as the admin: the target agent's part of decentralized migrations is not landed yet.)
        _ = try await userB.patch(
            Kinds.virtualMachineInstance, namespace: "default", name: "vm1", ["status": ["migrationState": state]],
            status: true)
        try await a.start(["--pki", a.directory + "/pki", "--sync-listen", "127.0.0.1:\(aPort)"])
        let restartedA = try a.client()
        var ready = JSONValue.null
        for _ in 0..<300 {
            ready = try await restartedA.get(Kinds.migration, namespace: "default", name: "send")
            if Self.phase(ready) == "TargetReady" { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(Self.phase(ready) == "TargetReady", "\(ready["status"] ?? .null)")

        // kill -9 of the target's controller, then the source VMIM is deleted: the source fails at once and keeps
        // its finalizer until the target hears of the cancel, which it does once it is back.
        await b.kill9()
        _ = try await restartedA.delete(Kinds.migration, namespace: "default", name: "send")
        var canceled = JSONValue.null
        for _ in 0..<100 {
            canceled = try await restartedA.get(Kinds.migration, namespace: "default", name: "send")
            if Self.phase(canceled) == "Failed" { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(Self.phase(canceled) == "Failed", "\(canceled["status"] ?? .null)")
        #expect(
            canceled["metadata"]?["finalizers"]?.array?.contains(
                .string("synchronization.kubevirt.io/migrationFinalizer")) == true, "held until the peer hears")
        try await b.start(["--pki", b.directory + "/pki", "--sync-listen", "127.0.0.1:\(bPort)"])
        let restartedB = try b.client()
        var bothGone = false
        for _ in 0..<300 {
            let sourceGone = (try? await restartedA.get(Kinds.migration, namespace: "default", name: "send")) == nil
            let targetGone = (try? await restartedB.get(Kinds.migration, namespace: "default", name: "receive")) == nil
            if sourceGone && targetGone {
                bothGone = true
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(bothGone, "both VMIMs are gone once the target is back")
        let sourceVMI = try await restartedA.get(Kinds.virtualMachineInstance, namespace: "default", name: "vm1")
        #expect(Self.phase(sourceVMI) == "Running", "the source keeps running")
        let receiver = try await restartedB.get(Kinds.virtualMachineInstance, namespace: "default", name: "vm1")
        #expect(Self.phase(receiver) == "Failed", "\(receiver["status"] ?? .null)")
        await a.stop()
        await b.stop()

        // Listening on every address, with nothing to advertise: refused in one line.
        let refused = try await run(
            controllerPath,
            [
                "--data", a.directory + "/data2", "--cert", a.certificate("controller-controller").cert, "--key",
                a.certificate("controller-controller").key, "--ca", a.caPath, "--pki", a.directory + "/pki",
                "--sync-listen", "0.0.0.0:9185",
            ])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("give --advertise HOST:PORT"), "\(refused.stderr)")
    }
}
