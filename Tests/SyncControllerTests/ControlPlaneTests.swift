import ClusterAPI
import ClusterClient
import Foundation
import TLSTransport
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The real sync-controller process, driven by curl (an independent HTTP client), by the API client and by syncctl.
@Suite("Cluster API: sync-controller over mutual TLS")
struct ControlPlaneTests {
    let vms = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines"

    @Test("curl with a client certificate creates, gets, watches and deletes; without one it is refused")
    func curlRoundTrip() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start()
        let watch = try ChildProcess(
            "/usr/bin/curl",
            [
                "-sS", "-N", "--max-time", "15", "--cacert", cluster.caPath, "--cert",
                cluster.certificate("user-admin").cert,
                "--key", cluster.certificate("user-admin").key, cluster.url + vms + "?watch=true",
            ])
        try await Task.sleep(for: .milliseconds(300))
        let created = try await cluster.curl(
            [
                "-X", "POST", "-H", "Content-Type: application/yaml", "--data-binary", "@-", "-w", "\n%{http_code}",
                cluster.url + vms,
            ], input: seedVirtualMachine)
        #expect(created.stdout.hasSuffix("\n201"), "\(created.stdout) \(created.stderr)")
        let body = try JSONValue.parse(Data(created.stdout.dropLast(4).utf8))
        #expect(body["metadata"]?["uid"]?.string?.count == 36)
        #expect(body["spec"]?["template"]?["spec"]?["domain"]?["resources"]?["requests"]?["memory"] == "128Mi")

        let got = try await cluster.curl([
            "-H", "Accept: application/yaml", cluster.url + vms + "/example-decentralized-lm-vm",
        ])
        #expect(got.stdout.contains("name: example-decentralized-lm-vm"))
        #expect(got.stdout.contains("runStrategy: Always"))
        let patched = try await cluster.curl([
            "-X", "PATCH", "-H", "Content-Type: application/merge-patch+json", "-d",
            #"{"spec":{"runStrategy":"Halted"}}"#, "-o", "/dev/null", "-w", "%{http_code}",
            cluster.url + vms + "/example-decentralized-lm-vm",
        ])
        #expect(patched.stdout == "200")
        let deleted = try await cluster.curl([
            "-X", "DELETE", "-o", "/dev/null", "-w", "%{http_code}", cluster.url + vms + "/example-decentralized-lm-vm",
        ])
        #expect(deleted.stdout == "200")
        let gone = try await cluster.curl(["-w", "\n%{http_code}", cluster.url + vms + "/example-decentralized-lm-vm"])
        #expect(gone.stdout.hasSuffix("\n404"))
        #expect(gone.stdout.contains(#""reason":"NotFound""#))

        try await Task.sleep(for: .milliseconds(300))
        let lines = await watch.stop().split(separator: "\n").compactMap { try? JSONValue.parse(Data($0.utf8)) }
        // The VM controller writes status too (printableStatus, …): ADDED first, DELETED last, MODIFIEDs between.
        let types = lines.map { $0["type"]?.string ?? "" }
        #expect(
            types.first == "ADDED" && types.last == "DELETED"
                && types.dropFirst().dropLast().allSatisfy { $0 == "MODIFIED" } && types.count >= 3, "\(types)")
        #expect(lines.contains { $0["object"]?["spec"]?["runStrategy"] == "Halted" }, "the patch arrived as MODIFIED")

        // No client certificate: the TLS handshake fails, nothing is served.
        let anonymous = try await cluster.curl([cluster.url + vms], as: nil)
        #expect(anonymous.status != 0)
        #expect(anonymous.stdout.isEmpty)
        #expect(anonymous.stderr.contains("alert") || anonymous.stderr.contains("certificate"), "\(anonymous.stderr)")
        let output = await cluster.stop()
        #expect(output.contains("sync-controller: stopped"), "graceful stop on SIGTERM: \(output)")
    }

    @Test(
        "SIGTERM and SIGINT each stop the controller through its service group: an open watch ends, the process exits 0 within 5 s and says it stopped, the store reopens",
        arguments: [SIGTERM, SIGINT])
    func gracefulStop(signal: Int32) async throws {
        let cluster = try ClusterFixture()
        try await cluster.start()
        let created = try await cluster.curl(
            [
                "-X", "POST", "-H", "Content-Type: application/yaml", "--data-binary", "@-", "-o", "/dev/null", "-w",
                "%{http_code}", cluster.url + vms,
            ], input: seedVirtualMachine)
        #expect(created.stdout == "201", "\(created.stderr)")
        let watch = try ChildProcess(
            "/usr/bin/curl",
            [
                "-sS", "-N", "--max-time", "60", "--cacert", cluster.caPath, "--cert",
                cluster.certificate("user-admin").cert,
                "--key", cluster.certificate("user-admin").key, cluster.url + vms + "?watch=true",
            ])
        let deadline = Date().addingTimeInterval(10)
        while !watch.stdout.contains("ADDED") && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(watch.stdout.contains("ADDED"), "the watch is open: \(watch.stdout)\(watch.stderr)")
        let controller = try #require(cluster.controller)
        let started = Date()
        kill(controller.pid, signal)
        let status = await controller.wait(timeout: 5)
        #expect(status == 0, "exit status \(status) after signal \(signal): \(controller.stdout)\(controller.stderr)")
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(controller.stdout.contains("sync-controller: stopped"), "\(controller.stdout)\(controller.stderr)")
        // The watch's connection was closed by the server, not left hanging until curl's own timeout.
        #expect(await watch.wait(timeout: 5) != 137, "the watch ended when the server stopped: \(watch.stderr)")
        // What was written before the stop is there after a restart.
        await cluster.stop()
        try await cluster.start()
        let got = try await cluster.curl([
            "-o", "/dev/null", "-w", "%{http_code}", cluster.url + vms + "/example-decentralized-lm-vm",
        ])
        #expect(got.stdout == "200")
    }

    @Test(
        "the API client's watch is read on its consumer's task: events arrive as they happen, and dropping the stream closes its connection"
    )
    func clientWatchEndsWithItsConsumer() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start()
        let client = try cluster.client()
        let port = try #require(cluster.url.split(separator: ":").last.map(String.init))
        func established() async throws -> Int {
            let result = try await run("/usr/bin/ss", ["-Htn", "state", "established", "dst", "127.0.0.1:\(port)"])
            return result.stdout.split(separator: "\n").count
        }
        do {
            let events = try await client.watch(Kinds.virtualMachine, namespace: "default")
            let created = try await cluster.curl(
                [
                    "-X", "POST", "-H", "Content-Type: application/yaml", "--data-binary", "@-", "-o", "/dev/null",
                    "-w", "%{http_code}", cluster.url + vms,
                ], input: seedVirtualMachine)
            #expect(created.stdout == "201")
            var iterator = events.makeAsyncIterator()
            let first = try await iterator.next()
            #expect(
                first?.type == "ADDED" && first?.object["metadata"]?["name"] == "example-decentralized-lm-vm",
                "\(String(describing: first))")
            #expect(try await established() == 1, "the watch's connection")
        }
        // Within 2 s: close_notify and FIN at once, not a close that waits out the TLS shutdown timeout (5 s).
        let deadline = Date().addingTimeInterval(2)
        var open = try await established()
        while open > 0 && Date() < deadline {
            try await Task.sleep(for: .milliseconds(50))
            open = try await established()
        }
        #expect(open == 0, "the dropped watch's connection was closed")
    }

    @Test(
        "a CA imported from another cluster (syncctl ca import-external) is trusted for the sync roles only: its user, controller and node certificates are refused by the cluster API with the reason (curl)"
    )
    func importedCAScope() async throws {
        let cluster = try ClusterFixture()
        let beta = PKIDirectory(url: URL(fileURLWithPath: cluster.directory + "/beta"))
        _ = try beta.initialize(cluster: "beta")
        for request in [
            LeafRequest(role: .user, name: "admin"), LeafRequest(role: .controller, name: "controller"),
            LeafRequest(role: .node, name: "a1"), LeafRequest(role: .syncClient, name: "-"),
        ] {
            _ = try beta.issue(request)
        }
        let imported = try await run(
            syncctlPath, ["ca", "import-external", beta.bundleURL.path, "--dir", cluster.directory + "/pki"])
        #expect(imported.status == 0 && imported.stdout.contains("added: "), "\(imported.stdout)\(imported.stderr)")
        try await cluster.start()
        let betaIssued = cluster.directory + "/beta/issued/"
        for stem in ["user-admin", "controller-controller", "node-a1"] {
            let result = try await run(
                "/usr/bin/curl",
                [
                    "-sS", "--max-time", "10", "--cacert", cluster.caPath, "--cert", betaIssued + stem + ".pem",
                    "--key", betaIssued + stem + "-key.pem",
                    "-w", "\n%{http_code}", cluster.url + "/apis/kubevirt.io/v1/namespaces/default/virtualmachines",
                ])
            #expect(
                result.status != 0 && !result.stdout.contains("\"items\""),
                "beta \(stem) refused: \(result.stdout) \(result.stderr)")
        }
        // The same names from this cluster's own CA are served.
        let own = try await cluster.curl([cluster.url + "/apis/kubevirt.io/v1/namespaces/default/virtualmachines"])
        #expect(own.status == 0 && own.stdout.contains("\"items\""), "\(own.stdout) \(own.stderr)")
        let output = await cluster.stop()
        for role in ["user", "controller", "node"] {
            #expect(
                output.contains("role \(role) of \(role) ")
                    && output.contains("the CA of cluster \"beta\" is imported and trusted only for synchronization"),
                "\(role): \(output)")
        }
    }

    @Test(
        "a kubeconfig written without the CA key (syncctl config create --cert --key --ca) serves syncctl and kubectl")
    func kubeconfigFromIssuedCertificate() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start()
        _ = try cluster.pki.issue(LeafRequest(role: .user, name: "alice"))
        let home = cluster.directory + "/alice"
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        for file in ["issued/user-alice.pem", "issued/user-alice-key.pem", "ca-bundle.pem"] {
            try FileManager.default.copyItem(
                atPath: "\(cluster.directory)/pki/\(file)", toPath: "\(home)/\((file as NSString).lastPathComponent)")
        }
        let made = try await run(
            syncctlPath,
            [
                "config", "create", "--server", cluster.url, "--cert", home + "/user-alice.pem", "--key",
                home + "/user-alice-key.pem",
                "--ca", home + "/ca-bundle.pem", "--output", home + "/kubeconfig", "--dir", home + "/no-pki",
            ])
        #expect(made.status == 0, "\(made.stderr)")
        let admin = try cluster.client()
        _ = try await admin.create(
            Kinds.virtualMachine,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": ["name": "vm1"],
                "spec": ["runStrategy": "Halted", "template": ["spec": ["domain": [:]]]],
            ])
        let listed = try await run(syncctlPath, ["get", "vm", "--kubeconfig", home + "/kubeconfig"])
        #expect(listed.status == 0 && listed.stdout.contains("vm1"), "\(listed.stdout)\(listed.stderr)")
        let kubectl = try await run(
            "/usr/bin/kubectl", ["--kubeconfig", home + "/kubeconfig", "get", "vm", "-o", "name"], timeout: 60)
        #expect(kubectl.status == 0 && kubectl.stdout.contains("vm1"), "\(kubectl.stdout)\(kubectl.stderr)")
    }

    @Test(
        "a YAML body with the base-60 integer the fuzzer found (it trapped the YAML reader) is stored as text; the controller keeps serving (curl)"
    )
    func sexagesimalBody() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start()
        let body =
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: base60}\ndata: {value: 2122122:1:0:1:02:1:0:1:0}\n"
        let posted = try await cluster.curl(
            [
                "-H", "Content-Type: application/yaml", "--data-binary", "@-", "-w", "\n%{http_code}",
                cluster.url + "/api/v1/namespaces/default/configmaps",
            ], input: body)
        #expect(posted.stdout.hasSuffix("201"), "\(posted.stdout)\(posted.stderr)")
        let stored = try await cluster.client().get(Kinds.configMap, namespace: "default", name: "base60")
        #expect(stored["data"]?["value"] == "2122122:1:0:1:02:1:0:1:0")
    }

    @Test("a node certificate writes only its own Node and the status of VMIs on it")
    func nodeAuthorization() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start()
        let forbidden = try await cluster.curl(
            [
                "-X", "POST", "-H", "Content-Type: application/yaml", "--data-binary", "@-", "-w", "\n%{http_code}",
                cluster.url + vms,
            ], as: "node-a1", input: seedVirtualMachine)
        #expect(forbidden.stdout.hasSuffix("\n403"), "\(forbidden.stdout)")
        #expect(forbidden.stdout.contains(#"may write only its own Node"#))

        let node = try cluster.client("node-a1")
        _ = try await node.create(Kinds.node, ["apiVersion": "v1", "kind": "Node", "metadata": ["name": "a1"]])
        let other = await #expect(throws: APIError.self) {
            try await node.create(Kinds.node, ["apiVersion": "v1", "kind": "Node", "metadata": ["name": "a2"]])
        }
        #expect(other?.code == 403)

        let admin = try cluster.client()
        let vmi: JSONValue = [
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": ["name": "vmi1"],
            "spec": ["domain": [:]],
        ]
        _ = try await admin.create(Kinds.virtualMachineInstance, vmi)
        _ = try await admin.patch(
            Kinds.virtualMachineInstance, name: "vmi1", ["status": ["nodeName": "a2", "phase": "Scheduled"]],
            status: true)
        let notMine = await #expect(throws: APIError.self) {
            try await node.patch(
                Kinds.virtualMachineInstance, name: "vmi1", ["status": ["phase": "Running"]], status: true)
        }
        #expect(notMine?.code == 403)
        #expect(notMine?.message.contains("not on node \"a1\"") == true, "\(String(describing: notMine))")
        let onA2 = try cluster.client("node-a2")
        let running = try await onA2.patch(
            Kinds.virtualMachineInstance, name: "vmi1", ["status": ["phase": "Running"]], status: true)
        #expect(running["status"]?["phase"] == "Running")
        let steal = await #expect(throws: APIError.self) {
            try await onA2.patch(
                Kinds.virtualMachineInstance, name: "vmi1", ["status": ["nodeName": "a1"]], status: true)
        }
        #expect(steal?.code == 403)
        await cluster.stop()
    }

    @Test(
        "a node certificate acts only on its own work (curl with node certificates): no migrations of its own, no labels, taints or spec on its Node beyond what it reports, no Secrets, migration status only forward and only its side's fields, no planted volume paths — each a 403 with the reason, nothing stored"
    )
    func nodeScope() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start()
        let admin = try cluster.client()
        let a1 = try cluster.client("node-a1")
        func curl(_ stem: String, _ method: String, _ path: String, _ body: String = "", status: Bool = false)
            async throws -> (code: String, body: String)
        {
            let type = method == "PATCH" ? "application/merge-patch+json" : "application/json"
            var arguments = ["-X", method, "-w", "\n%{http_code}", cluster.url + path]
            if !body.isEmpty { arguments = ["-H", "Content-Type: \(type)", "--data-binary", "@-"] + arguments }
            let result = try await cluster.curl(arguments, as: stem, input: body)
            let code = String(result.stdout.split(separator: "\n").last ?? "")
            return (code, result.stdout)
        }
        // Its own Node, registered with the labels an agent reports.
        _ = try await a1.create(
            Kinds.node,
            [
                "apiVersion": "v1", "kind": "Node",
                "metadata": [
                    "name": "a1",
                    "labels": ["kubernetes.io/hostname": "a1", "cpu-model.node.kubevirt.io/Westmere": "true"],
                ],
            ])
        _ = try await a1.patch(
            Kinds.node, name: "a1",
            [
                "metadata": [
                    "labels": [
                        "host-model-cpu.node.kubevirt.io/EPYC": "true", "cpu-model.node.kubevirt.io/Westmere": .null,
                    ]
                ]
            ])
        _ = try await admin.patch(
            Kinds.node, name: "a1",
            [
                "spec": [
                    "unschedulable": true,
                    "taints": [["key": "example.com/maintenance", "value": "soon", "effect": "NoSchedule"]],
                ]
            ])
        for (body, reason) in [
            (#"{"metadata":{"labels":{"team":"mine"}}}"#, "may change only the labels a node agent reports"),
            (
                #"{"metadata":{"labels":{"kubernetes.io/hostname":"a2"}}}"#,
                "may change only the labels a node agent reports"
            ),
            (#"{"spec":{"taints":[]}}"#, "may not change spec"),
            (#"{"spec":{"unschedulable":false}}"#, "may not change spec"),
            (#"{"metadata":{"annotations":{"x":"y"}}}"#, "may not change metadata.annotations"),
        ] {
            let result = try await curl("node-a1", "PATCH", "/api/v1/nodes/a1", body)
            #expect(result.code == "403" && result.body.contains(reason), "\(body): \(result.body)")
        }
        let node = try await admin.get(Kinds.node, name: "a1")
        #expect(
            node["spec"]?["unschedulable"] == true && node["spec"]?["taints"]?.array?.count == 1
                && node["metadata"]?["labels"]?["team"] == nil, "nothing stored: \(node)")

        // Secrets: no VMI of a node uses one.
        _ = try await admin.create(
            Kinds.secret,
            ["apiVersion": "v1", "kind": "Secret", "metadata": ["name": "db"], "stringData": ["password": "hunter2"]])
        for path in [
            "/api/v1/namespaces/default/secrets/db", "/api/v1/namespaces/default/secrets",
            "/api/v1/secrets?watch=true&timeoutSeconds=1",
        ] {
            let result = try await curl("node-a1", "GET", path)
            #expect(
                result.code == "403" && result.body.contains("may read only the Secrets")
                    && !result.body.contains("hunter2"), "\(path): \(result.body)")
        }

        // A migration a1 → a2, Running.
        _ = try await admin.create(
            Kinds.virtualMachineInstance,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": ["name": "vmi1"],
                "spec": ["domain": [:]],
            ])
        var ready = Resources.condition("Ready", true, reason: "AgentReady")
        ready["lastHeartbeatTime"] = .string(Resources.now())
        _ = try await a1.patch(
            Kinds.node, name: "a1", ["status": ["conditions": [ready], "allocatable": ["memory": "4Gi"]]], status: true)
        _ = try await admin.patch(
            Kinds.virtualMachineInstance, name: "vmi1", ["status": ["nodeName": "a1", "phase": "Running"]], status: true
        )
        let created = try await curl(
            "node-a1", "POST", "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancemigrations",
            #"{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachineInstanceMigration","metadata":{"name":"mine"},"spec":{"vmiName":"vmi1"}}"#
        )
        #expect(created.code == "403", "a node creates no migration: \(created.body)")
        // The controller's scheduler may still be writing the VMI's status of its own: create once it is Running.
        var admitted: JSONValue?
        var refusal: APIError?
        for _ in 0..<50 where admitted == nil {
            do {
                admitted = try await admin.create(
                    Kinds.migration,
                    [
                        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                        "metadata": ["name": "m1"], "spec": ["vmiName": "vmi1"],
                    ])
            } catch {
                refusal = error
            }
            if admitted == nil {
                _ = try await admin.patch(
                    Kinds.virtualMachineInstance, name: "vmi1", ["status": ["nodeName": "a1", "phase": "Running"]],
                    status: true)
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let migration = try #require(admitted, "\(String(describing: refusal))")
        let uid = migration["metadata"]?["uid"] ?? .null
        let state: JSONValue = ["sourceNode": "a1", "targetNode": "a2", "migrationUid": uid]
        // The controller first looks for a target (there is none); then the migration is put at Running as if a2 took it.
        let deadline0 = Date().addingTimeInterval(20)
        while try await admin.get(Kinds.migration, name: "m1")["status"]?["conditions"]?.array?.contains(where: {
            $0["type"] == "TargetScheduled"
        }) != true,
            Date() < deadline0
        {
            try await Task.sleep(for: .milliseconds(50))
        }
        _ = try await admin.patch(
            Kinds.migration, name: "m1", ["status": ["phase": "Running", "migrationState": state]], status: true)
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await admin.get(Kinds.migration, name: "m1")["status"]?["phase"] == "Running")
        _ = try await admin.patch(
            Kinds.virtualMachineInstance, name: "vmi1", ["status": ["migrationState": state]], status: true)
        let statusPath = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancemigrations/m1/status"
        for (stem, body, reason) in [
            ("node-a2", #"{"status":{"phase":"Scheduled"}}"#, "only forward"),
            ("node-a1", #"{"status":{"phase":"Pending"}}"#, "only forward"),
            (
                "node-a1", #"{"status":{"migrationState":{"targetNode":"a1"}}}"#,
                "migrationState.targetNode is the controller's"
            ),
            (
                "node-a2", #"{"status":{"migrationState":{"sourceNode":"a2"}}}"#,
                "migrationState.sourceNode is the controller's"
            ),
            (
                "node-a1", #"{"status":{"migrationState":{"targetNodeAddress":"10.9.9.9:1"}}}"#,
                "migrationState.targetNodeAddress is the target's"
            ),
            (
                "node-a2", #"{"status":{"migrationState":{"startTimestamp":"2026-01-01T00:00:00Z"}}}"#,
                "migrationState.startTimestamp is the source's"
            ),
        ] {
            let result = try await curl(stem, "PATCH", statusPath, body)
            #expect(result.code == "403" && result.body.contains(reason), "\(stem) \(body): \(result.body)")
        }
        let stored = try await admin.get(Kinds.migration, name: "m1")
        #expect(
            stored["status"]?["phase"] == "Running" && stored["status"]?["migrationState"] == state,
            "nothing stored: \(stored["status"] ?? .null)")
        // Its own side's fields and a forward move do go through.
        let progress = try await curl(
            "node-a1", "PATCH", statusPath, #"{"status":{"migrationState":{"startTimestamp":"2026-01-01T00:00:00Z"}}}"#)
        #expect(progress.code == "200", "\(progress.body)")
        let done = try await curl("node-a1", "PATCH", statusPath, #"{"status":{"phase":"Succeeded"}}"#)
        #expect(done.code == "200", "\(done.body)")
        let back = try await curl("node-a1", "PATCH", statusPath, #"{"status":{"phase":"Running"}}"#)
        #expect(back.code == "403" && back.body.contains("is Succeeded"), "nothing leaves a final phase: \(back.body)")

        // A node reports its volumes; the path it reports is not what the controller records (or what agents delete).
        _ = try await admin.create(
            Kinds.storageClass,
            [
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": ["name": "local"],
                "directory": "/var/lib/vmsync/images",
            ])
        _ = try await admin.create(
            Kinds.dataVolume,
            [
                "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": ["name": "dv1"],
                "spec": [
                    "source": ["blank": [:]],
                    "storage": ["storageClassName": "local", "resources": ["requests": ["storage": "64Mi"]]],
                ],
            ])
        let planted = try await curl(
            "node-a1", "PATCH", "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances/vmi1/status",
            #"{"status":{"volumeStatus":[{"name":"disk0","persistentVolumeClaimInfo":{"claimName":"dv1","path":"/etc","storageClass":"local"}}]}}"#
        )
        #expect(planted.code == "200", "\(planted.body)")
        var recorded = try await admin.get(Kinds.dataVolume, name: "dv1")
        let deadline = Date().addingTimeInterval(20)
        while recorded["status"]?["phase"] != "Succeeded" && Date() < deadline {
            try await Task.sleep(for: .milliseconds(100))
            recorded = try await admin.get(Kinds.dataVolume, name: "dv1")
        }
        #expect(
            recorded["status"]?["path"] == "/var/lib/vmsync/images/default-dv1.qcow2",
            "the path is the StorageClass's, not the node's word: \(recorded["status"] ?? .null)")
        await cluster.stop()
    }

    @Test(
        "a migration of a VMI that is missing, not running or already migrating is refused at create with the reason (KubeVirt's admission); nothing is stored"
    )
    func migrationAdmission() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start()
        let admin = try cluster.client()
        func migration(_ name: String, of vmi: String) -> JSONValue {
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                "metadata": ["name": .string(name)], "spec": ["vmiName": .string(vmi)],
            ]
        }
        let missing = await #expect(throws: APIError.self) {
            try await admin.create(Kinds.migration, migration("m0", of: "nosuch"))
        }
        #expect(missing?.code == 422 && missing?.reason == .invalid)
        #expect(
            missing?.message.contains("virtualmachineinstance \"nosuch\" does not exist") == true,
            "\(String(describing: missing))")
        _ = try await admin.create(
            Kinds.virtualMachineInstance,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": ["name": "vmi1"],
                "spec": ["domain": [:]],
            ])
        let pending = await #expect(throws: APIError.self) {
            try await admin.create(Kinds.migration, migration("m1", of: "vmi1"))
        }
        #expect(
            pending?.message.contains("is not running") == true && pending?.message.contains("VMINotRunning") == true,
            "\(String(describing: pending))")
        _ = try await admin.patch(
            Kinds.virtualMachineInstance, name: "vmi1", ["status": ["nodeName": "a1", "phase": "Running"]], status: true
        )
        _ = try await admin.create(Kinds.migration, migration("m2", of: "vmi1"))
        let second = await #expect(throws: APIError.self) {
            try await admin.create(Kinds.migration, migration("m3", of: "vmi1"))
        }
        #expect(
            second?.message.contains("already has a running or pending migration (m2)") == true,
            "\(String(describing: second))")
        let stored = try await admin.list(Kinds.migration)["items"]?.array?.compactMap {
            $0["metadata"]?["name"]?.string
        }
        #expect(stored == ["m2"])
        await cluster.stop()
    }

    @Test("bad input gets a precise Status and stores nothing")
    func badInput() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start()
        let cases: [(arguments: [String], input: String, code: String, message: String)] = [
            (
                ["-X", "POST", "-H", "Content-Type: application/yaml", "--data-binary", "@-", cluster.url + vms],
                "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: x\n spec: [", "400",
                "the YAML is malformed"
            ),
            (
                ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@-", cluster.url + vms],
                "{\"apiVersion\": ", "400", "not valid JSON"
            ),
            (
                [
                    "-X", "POST", "-H", "Content-Type: application/yaml", "--data-binary", "@-",
                    cluster.url + "/apis/kubevirt.io/v1/namespaces/default/virtualmachinez",
                ],
                seedVirtualMachine, "404", "doesn't have a resource type \\\"virtualmachinez\\\""
            ),
            (
                ["-X", "POST", "-H", "Content-Type: application/yaml", "--data-binary", "@-", cluster.url + vms],
                seedVirtualMachine.replacingOccurrences(of: "memory: 128Mi", with: "memory: [128]"), "422",
                "spec.template.spec.domain.resources.requests.memory in body must be of type quantity"
            ),
            (
                ["-X", "POST", "-H", "Content-Type: application/yaml", "--data-binary", "@-", cluster.url + vms],
                seedVirtualMachine.replacingOccurrences(
                    of: "runStrategy: Always", with: "runStrategy: Always\n  colour: blue"), "422",
                "unknown field \\\"spec.colour\\\""
            ),
            (
                [
                    "-X", "POST", "-H", "Content-Type: application/yaml", "--data-binary", "@-",
                    cluster.url + "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancemigrations",
                ],
                "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstanceMigration\nmetadata:\n  name: m1\nspec: {}\n",
                "422", "spec.vmiName: Required value"
            ),
            // Sizes that do not fit 64 bits (the controller used to trap on them), and counts whose product would.
            (
                ["-X", "POST", "-H", "Content-Type: application/yaml", "--data-binary", "@-", cluster.url + vms],
                seedVirtualMachine.replacingOccurrences(of: "memory: 128Mi", with: "memory: 16Ei"), "422",
                "spec.template.spec.domain.resources.requests.memory: Invalid value: \\\"16Ei\\\": quantities must be less than 2^63"
            ),
            (
                ["-X", "POST", "-H", "Content-Type: application/yaml", "--data-binary", "@-", cluster.url + vms],
                seedVirtualMachine.replacingOccurrences(of: "memory: 128Mi", with: "memory: 1e20"), "422",
                "spec.template.spec.domain.resources.requests.memory: Invalid value: 1e+20: quantities must be less than 2^63"
            ),
            (
                ["-X", "POST", "-H", "Content-Type: application/yaml", "--data-binary", "@-", cluster.url + vms],
                seedVirtualMachine.replacingOccurrences(
                    of: "memory: 128Mi",
                    with: "memory: 128Mi\n        cpu:\n          cores: 4294967296\n          sockets: 4294967296"),
                "422",
                "spec.template.spec.domain.cpu.cores: Invalid value: 4294967296: must be at most 512"
            ),
            (
                ["-X", "POST", "-H", "Content-Type: application/yaml", "--data-binary", "@-", cluster.url + vms],
                seedVirtualMachine.replacingOccurrences(
                    of: "memory: 128Mi", with: "memory: 128Mi\n        cpu:\n          cores: 64\n          sockets: 64"
                ), "422",
                "spec.template.spec.domain.cpu: Invalid value: cores × sockets × threads = 64 × 64 × 1 = 4096 vCPUs: at most 512"
            ),
            (
                [
                    "-X", "POST", "-H", "Content-Type: application/yaml", "--data-binary", "@-",
                    cluster.url + "/apis/kubevirt.io/v1/namespaces/kubevirt/kubevirts",
                ],
                "apiVersion: kubevirt.io/v1\nkind: KubeVirt\nmetadata:\n  name: big\nspec:\n  configuration:\n    migrations:\n      completionTimeoutPerGiB: 9223372036854775807\n",
                "422",
                "spec.configuration.migrations.completionTimeoutPerGiB: Invalid value: 9223372036854775807: must be at most 31536000"
            ),
            // A watch that would outlast any clock.
            (
                ["-X", "GET", cluster.url + vms + "?watch=true&timeoutSeconds=9223372036854775807"], "", "400",
                "timeoutSeconds \\\"9223372036854775807\\\" must be a whole number of seconds from 0 to 86400"
            ),
            // "Billion laughs": 1 KB of YAML that aliases would expand to 10^9 strings.
            (
                ["-X", "POST", "-H", "Content-Type: application/yaml", "--data-binary", "@-", cluster.url + vms],
                "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: lol\nspec:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
                    + (1..<9).map {
                        "  \(Character(UnicodeScalar(97 + $0)!)): &\(Character(UnicodeScalar(97 + $0)!)) ["
                            + Array(repeating: "*\(Character(UnicodeScalar(96 + $0)!))", count: 10).joined(
                                separator: ", ") + "]\n"
                    }.joined(),
                "400", "anchors and aliases are not accepted"
            ),
        ]
        for item in cases {
            let result = try await cluster.curl(item.arguments + ["-w", "\n%{http_code}"], input: item.input)
            #expect(result.stdout.hasSuffix("\n" + item.code), "\(result.stdout)")
            #expect(result.stdout.contains(#""kind":"Status""#))
            #expect(result.stdout.contains(item.message), "expected \(item.message) in \(result.stdout)")
        }
        // A stale resourceVersion.
        let admin = try cluster.client()
        let created = try await admin.create(Kinds.virtualMachine, try YAML.document(seedVirtualMachine))
        // The VM controller writes the VM's status meanwhile; an update from the latest version goes through.
        while true {
            var latest = try await admin.get(Kinds.virtualMachine, name: "example-decentralized-lm-vm")
            latest["spec"]?["runStrategy"] = "Halted"
            do {
                _ = try await admin.update(Kinds.virtualMachine, latest)
                break
            } catch {
                guard error.code == 409 else { throw error }
            }
        }
        var stale = created
        stale["spec"]?["runStrategy"] = "Manual"
        let conflict = await #expect(throws: APIError.self) { try await admin.update(Kinds.virtualMachine, stale) }
        #expect(conflict?.code == 409 && conflict?.reason == .conflict)
        let vms = try await admin.list(Kinds.virtualMachine)
        #expect(vms["items"]?.array?.count == 1, "only the valid VM is stored")
        #expect(vms["items"]?.array?.first?["spec"]?["runStrategy"] == "Halted")
        // Oversized body.
        let huge = String(repeating: "x", count: 4 << 20)
        let tooLarge = try await cluster.curl(
            [
                "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@-", "-w", "\n%{http_code}",
                cluster.url + self.vms,
            ], input: huge)
        #expect(tooLarge.stdout.hasSuffix("\n413"), "\(tooLarge.stdout.suffix(200))")
        await cluster.stop()
    }

    @Test(
        "slow clients cannot hold the controller: a silent TCP client and an idle TLS client (openssl s_client) are closed after their timeouts, a watch whose client does not read is closed after a bounded buffer; the API keeps serving"
    )
    func slowClients() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start(["--idle-timeout", "1", "--handshake-timeout", "1"])
        guard case .tcp(_, let port) = cluster.endpoint else { return }
        // A TCP client that never starts its handshake.
        var started = Date()
        let silent = try await run(
            "/bin/bash", ["-c", "exec 3<>/dev/tcp/127.0.0.1/\(port); cat <&3 >/dev/null"], timeout: 20)
        var waited = Date().timeIntervalSince(started)
        #expect(
            silent.status == 0 && waited >= 0.8 && waited < 5,
            "closed after the 1 s handshake timeout: \(waited) s, \(silent.stderr)")
        // A TLS client that completes its handshake and then says nothing.
        let (cert, key) = cluster.certificate("user-admin")
        started = Date()
        let idle = try await run(
            "/usr/bin/openssl",
            [
                "s_client", "-connect", "127.0.0.1:\(port)", "-cert", cert, "-key", key, "-CAfile", cluster.caPath,
                "-quiet", "-ign_eof",
            ], timeout: 20)
        waited = Date().timeIntervalSince(started)
        #expect(
            waited >= 0.8 && waited < 5, "closed after the 1 s idle timeout: \(waited) s; \(idle.stderr.suffix(300))")
        #expect(
            idle.stderr.contains("verify return:1") || idle.stderr.contains("depth=0"),
            "the handshake itself succeeded: \(idle.stderr.suffix(300))")

        // A watch read at 1 byte per second while a ConfigMap changes 1,500 times (64 KiB each).
        let reader = try ChildProcess(
            "/usr/bin/curl",
            [
                "-sS", "-N", "--limit-rate", "1", "--cacert", cluster.caPath, "--cert", cert, "--key", key,
                cluster.url + "/api/v1/namespaces/default/configmaps?watch=true",
            ])
        defer { kill(reader.pid, SIGKILL) }
        let admin = try cluster.client()
        func watches() async throws -> Int {
            let text = String(decoding: try await admin.raw("/metrics"), as: UTF8.self)
            let line = text.split(separator: "\n").first { $0.hasPrefix("vmsync_api_watches ") }
            return (line?.split(separator: " ").last).flatMap { Double($0) }.map { Int($0) } ?? -1
        }
        let deadline = Date().addingTimeInterval(10)
        while try await watches() < 1 && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(try await watches() == 1, "the slow watch is being served")
        let payload = String(repeating: "x", count: 64 << 10)
        _ = try await admin.create(
            Kinds.configMap,
            ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": "churn"], "data": ["v": "0"]])
        var closedAfter: Int?
        for index in 1...1500 {
            _ = try await admin.patch(
                Kinds.configMap, name: "churn", ["data": ["v": .string("\(index)"), "blob": .string(payload)]])
            if index % 100 == 0, try await watches() == 0 {
                closedAfter = index
                break
            }
        }
        if closedAfter == nil {
            let end = Date().addingTimeInterval(10)
            while try await watches() != 0 && Date() < end { try await Task.sleep(for: .milliseconds(100)) }
            if try await watches() == 0 { closedAfter = 1500 }
        }
        #expect(closedAfter != nil, "the watch of a client that does not read was closed")
        print("slow watch closed after \(closedAfter.map(String.init) ?? "never") changes of 64 KiB")
        // The controller serves on.
        #expect(try await admin.get(Kinds.configMap, name: "churn")["data"]?["v"] != nil)
        await cluster.stop()
    }

    @Test("kill -9 while objects are being written: every acknowledged write is there after restart")
    func durability() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start()
        let client = try cluster.client()
        let acknowledged = Acknowledged()
        let writer = Task {
            for index in 0..<100_000 {
                let object: JSONValue = [
                    "apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": .string("cm-\(index)")],
                    "data": ["i": .string(String(index))],
                ]
                do {
                    _ = try await client.create(Kinds.configMap, object)
                    acknowledged.add("cm-\(index)")
                } catch {
                    return
                }
            }
        }
        while acknowledged.count < 150 { try await Task.sleep(for: .milliseconds(10)) }
        await cluster.kill9()
        await writer.value
        let acked = acknowledged.names
        try await cluster.start()
        let list = try await cluster.client().list(Kinds.configMap)
        let stored = Set((list["items"]?.array ?? []).compactMap { $0["metadata"]?["name"]?.string })
        let missing = acked.subtracting(stored)
        #expect(missing.isEmpty, "acknowledged but lost: \(missing.sorted())")
        #expect(stored.count >= acked.count)
        print("durability: \(acked.count) writes acknowledged before kill -9, \(stored.count) stored after restart")
        await cluster.stop()
    }

    @Test("watches resume from a resourceVersion; a compacted one is a 410 error event")
    func watchResume() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start(["--retain-changes", "50"])
        let client = try cluster.client()
        let first = try await client.create(
            Kinds.configMap, ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": "one"]])
        _ = try await client.create(
            Kinds.configMap, ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": "two"]])
        let events = try await client.watch(
            Kinds.configMap, namespace: "default", resourceVersion: first["metadata"]?["resourceVersion"]?.string)
        _ = try await client.delete(Kinds.configMap, name: "one")
        var seen: [String] = []
        for try await event in events {
            seen.append("\(event.type) \(event.object["metadata"]?["name"]?.string ?? "")")
            if seen.count == 2 { break }
        }
        #expect(seen == ["ADDED two", "DELETED one"])

        // Past the retained history: the watch answers with an ERROR event carrying 410 Gone.
        for index in 0..<1000 {
            _ = try await client.create(
                Kinds.configMap,
                ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": .string("filler-\(index)")]])
        }
        let old = try await client.watch(Kinds.configMap, namespace: "default", resourceVersion: "3")
        let error = await #expect(throws: APIError.self) { for try await _ in old {} }
        #expect(error?.code == 410 && error?.reason == .gone, "\(String(describing: error))")
        #expect(error?.message.contains("too old resource version: 3") == true)
        let curl = try await cluster.curl([
            cluster.url + "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=3"
        ])
        #expect(curl.stdout.contains(#""type":"ERROR""#) && curl.stdout.contains(#""code":410"#), "\(curl.stdout)")
        await cluster.stop()
    }

    @Test("syncctl: apply (created/unchanged/configured), get, describe, delete; errors are one line")
    func syncctlCommands() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start()
        let manifest = cluster.directory + "/vm.yaml"
        try
            (seedVirtualMachine
            + "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: \"1\"\n").write(
                toFile: manifest, atomically: true, encoding: .utf8)
        var result = try await cluster.syncctl(["apply", "-f", manifest])
        #expect(
            result.stdout
                == "virtualmachine.kubevirt.io/example-decentralized-lm-vm created\nconfigmap/settings created\n",
            "\(result.stdout)\(result.stderr)")
        result = try await cluster.syncctl(["apply", "-f", manifest])
        #expect(result.stdout.contains("virtualmachine.kubevirt.io/example-decentralized-lm-vm unchanged"))
        result = try await cluster.syncctl(
            ["apply", "-f", "-"],
            input: seedVirtualMachine.replacingOccurrences(of: "runStrategy: Always", with: "runStrategy: Halted"))
        #expect(result.stdout == "virtualmachine.kubevirt.io/example-decentralized-lm-vm configured\n")
        result = try await cluster.syncctl(["get", "vm"])
        #expect(result.stdout.hasPrefix("NAME"), "\(result.stdout)")
        #expect(result.stdout.contains("example-decentralized-lm-vm"))
        result = try await cluster.syncctl(["get", "vm", "example-decentralized-lm-vm", "-o", "json"])
        #expect(try JSONValue.parse(Data(result.stdout.utf8))["spec"]?["runStrategy"] == "Halted")
        result = try await cluster.syncctl(["describe", "vm", "example-decentralized-lm-vm"])
        #expect(result.stdout.contains("Name:         example-decentralized-lm-vm"))
        #expect(result.stdout.contains("runStrategy: Halted"))
        result = try await cluster.syncctl(["delete", "-f", manifest])
        #expect(result.status == 0)
        result = try await cluster.syncctl(["get", "vm", "example-decentralized-lm-vm"])
        #expect(result.status == 1)
        #expect(
            result.stderr
                == "syncctl: Error from server (NotFound): virtualmachines.kubevirt.io \"example-decentralized-lm-vm\" not found\n"
        )
        result = try await cluster.syncctl(["get", "widgets"])
        #expect(
            result.status == 1
                && result.stderr.hasPrefix("syncctl: the server doesn't have a resource type \"widgets\""))
        result = try await cluster.syncctl(["apply", "-f", "-"], input: "kind: [")
        #expect(
            result.status == 1
                && result.stderr.hasPrefix("syncctl: Error from server (BadRequest): the YAML is malformed"),
            "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1)
        await cluster.stop()
    }
}

final class Acknowledged: @unchecked Sendable {
    private let lock = NSLock()
    private var set = Set<String>()
    func add(_ name: String) { lock.withLock { _ = set.insert(name) } }
    var count: Int { lock.withLock { set.count } }
    var names: Set<String> { lock.withLock { set } }
}

extension ControlPlaneTests {
    @Test("health, readiness, Prometheus metrics, discovery, and the KubeVirt configuration with KubeVirt's defaults")
    func serviceEndpoints() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start()
        #expect(try await cluster.curl([cluster.url + "/healthz"]).stdout == "ok")
        #expect(try await cluster.curl([cluster.url + "/readyz"]).stdout == "ok")
        _ = try await cluster.curl([cluster.url + "/api/v1/namespaces/default/configmaps"])
        _ = try await cluster.curl([cluster.url + "/api/v1/namespaces/default/configmaps/nothing-here"])
        let metrics = try await cluster.curl([cluster.url + "/metrics"]).stdout
        #expect(metrics.contains("# TYPE vmsync_api_requests_total counter"))
        #expect(
            metrics.contains(#"vmsync_api_requests_total{verb="LIST",resource="configmaps",code="200"} 1"#),
            "\(metrics)")
        #expect(
            metrics.contains(#"vmsync_api_requests_total{verb="GET",resource="configmaps",code="404"} 1"#), "\(metrics)"
        )
        #expect(
            metrics.contains(#"vmsync_api_request_duration_seconds_count{verb="LIST",resource="configmaps"} 1"#),
            "\(metrics)")
        #expect(metrics.contains("vmsync_store_resource_version "))
        // The controllers' own: every reconciler's counters and queue depth are there from the start.
        #expect(metrics.contains(#"vmsync_reconcile_total{controller="migration",result="success"}"#), "\(metrics)")
        #expect(metrics.contains(#"vmsync_workqueue_depth{controller="virtualmachine"}"#), "\(metrics)")
        #expect(metrics.contains(#"vmsync_migrations_total{result="succeeded"} 0"#), "\(metrics)")
        let discovery = try JSONValue.parse(
            Data(try await cluster.curl([cluster.url + "/apis/kubevirt.io/v1"]).stdout.utf8))
        let vmim = discovery["resources"]?.array?.first { $0["name"] == "virtualmachineinstancemigrations" }
        #expect(vmim?["shortNames"] == ["vmim", "vmims"])
        let kubeVirt = try await cluster.client().get(Kinds.kubeVirt, namespace: "kubevirt", name: "kubevirt")
        let migrations = kubeVirt["spec"]?["configuration"]?["migrations"]
        #expect(migrations?["completionTimeoutPerGiB"] == 150 && migrations?["progressTimeout"] == 150)
        #expect(
            migrations?["parallelMigrationsPerCluster"] == 5 && migrations?["parallelOutboundMigrationsPerNode"] == 2)
        #expect(migrations?["bandwidthPerMigration"] == "0Mi", "0 = unlimited")
        await cluster.stop()
    }

    @Test(
        "--metrics-listen: the controller's metrics over plain HTTP to curl without a certificate, the same as the API's /metrics; other paths 404; an address that is not HOST:PORT is refused at start"
    )
    func metricsListener() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start(["--metrics-listen", "127.0.0.1:0"])
        let controller = try #require(cluster.controller)
        let deadline = Date().addingTimeInterval(10)
        var address: String?
        while address == nil && Date() < deadline {
            address =
                controller.stdout.split(separator: "\n").first { $0.contains("serving metrics on ") }?
                .components(separatedBy: "serving metrics on ").last
            if address == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        let url = try #require(address, "\(controller.stdout)")
        #expect(url.hasPrefix("http://127.0.0.1:") && url.hasSuffix("/metrics"), "\(url)")
        _ = try await cluster.curl([cluster.url + "/api/v1/namespaces/default/configmaps"])
        let plain = try await run("/usr/bin/curl", ["-sS", "-i", url])
        #expect(
            plain.stdout.hasPrefix("HTTP/1.1 200 OK")
                && plain.stdout.contains("Content-Type: text/plain; version=0.0.4"),
            "\(plain.stdout.prefix(300))\(plain.stderr)")
        #expect(
            plain.stdout.contains(#"vmsync_api_requests_total{verb="LIST",resource="configmaps",code="200"} 1"#),
            "\(plain.stdout)")
        #expect(
            plain.stdout.contains("vmsync_store_resource_version ") && plain.stdout.contains("vmsync_reconcile_total{"),
            "\(plain.stdout)")
        let other = try await run(
            "/usr/bin/curl",
            [
                "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                url.replacingOccurrences(of: "/metrics", with: "/healthz"),
            ])
        #expect(other.stdout == "404")
        await cluster.stop()

        let (cert, key) = cluster.certificate("controller-controller")
        let refused = try await run(
            controllerPath,
            [
                "--data", cluster.directory + "/data", "--cert", cert, "--key", key, "--ca", cluster.caPath,
                "--metrics-listen", "9464",
            ])
        #expect(
            refused.status != 0 && refused.stderr.contains("--metrics-listen") && refused.stderr.contains("HOST:PORT"),
            "\(refused.stderr)")
    }

    @Test("syncctl get -w prints changes as they happen; --context picks the kubeconfig context")
    func syncctlWatch() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start()
        let config = try await cluster.kubeconfig()
        let watch = try ChildProcess(syncctlPath, ["get", "cm", "-w", "--kubeconfig", config, "--context", "vmsync"])
        let client = try cluster.client()
        // Its list is done once its watch is served: what is written from then on is among the changes it prints.
        let opened = Date().addingTimeInterval(10)
        while try await HTTPServerTests.watches(client) < 1 && Date() < opened {
            try await Task.sleep(for: .milliseconds(20))
        }
        _ = try await client.create(
            Kinds.configMap, ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": "watched"]])
        _ = try await client.delete(Kinds.configMap, name: "watched")
        let deadline = Date().addingTimeInterval(10)
        while watch.stdout.split(separator: "\n").filter({ $0.contains("watched") }).count < 2 && Date() < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let output = await watch.stop()
        #expect(output.split(separator: "\n").filter { $0.contains("watched") }.count >= 2, "\(output)")
        let wrong = try await run(syncctlPath, ["get", "cm", "--kubeconfig", config, "--context", "nope"])
        #expect(wrong.status == 1 && wrong.stderr == "syncctl: context \"nope\" is not in the kubeconfig\n")
        await cluster.stop()
    }
}
