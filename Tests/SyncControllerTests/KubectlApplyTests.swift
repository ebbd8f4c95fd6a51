import ClusterAPI
import ClusterClient
import Foundation
import TLSTransport
import TestSupport
import Testing

/// The real kubectl binary: the client the OpenAPI documents are for.
let kubectlPath = "/usr/bin/kubectl"

/// kubectl v1.32 against the real sync-controller, validation left on (no `--validate=false`): it reads
/// `/openapi/v3`, leaves validation to the server (`fieldValidation=Strict`), and applies with the
/// last-applied-configuration annotation and merge patches.
@Suite(
    "kubectl apply against the cluster API (OpenAPI v3)",
    .enabled(
        if: FileManager.default.isExecutableFile(atPath: kubectlPath),
        "\(kubectlPath) is not installed: the kubectl tests need the real binary")
)
struct KubectlApplyTests {
    static let vmName = "example-decentralized-lm-vm"
    static let dvName = "example-decentralized-lm-vm-dv"

    /// The seed's DataVolume (its storage class placeholder filled with `local`, as the other tests' class) and
    /// VirtualMachine, in one file.
    static let seedManifest =
        seedDataVolume.replacingOccurrences(of: "<other storage class>", with: "local") + "---\n" + seedVirtualMachine

    @Test(
        "apply -f creates the seed's DataVolume and VirtualMachine; the same file again is unchanged (nothing sent, resourceVersions kept); a changed label and runStrategy are configured and stored"
    )
    func applyCreatesThenUnchangedThenConfigured() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start()
        let admin = try cluster.client()
        _ = try await admin.create(
            Kinds.storageClass,
            [
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": ["name": "local"],
                "directory": "/var/lib/vmsync/images",
            ])
        let file = try cluster.write("seed.yaml", Self.seedManifest)

        let created = try await kubectl(cluster, ["apply", "-f", file, "-v=6"])
        #expect(created.status == 0, "\(created.stdout)\(created.stderr)")
        #expect(created.stdout.contains("datavolume.cdi.kubevirt.io/\(Self.dvName) created"), "\(created.stdout)")
        #expect(created.stdout.contains("virtualmachine.kubevirt.io/\(Self.vmName) created"), "\(created.stdout)")
        let read = created.stderr.split(separator: "\n").contains {
            $0.contains("GET \(cluster.url)/openapi/v3?") && $0.contains(" 200 OK")
        }
        #expect(read, "kubectl read the OpenAPI index: \(created.stderr)")
        #expect(
            created.stderr.contains("fieldValidation=Strict"),
            "kubectl left validation to the server: \(created.stderr)")
        let vm = try await admin.get(Kinds.virtualMachine, name: Self.vmName)
        #expect(vm["spec"]?["runStrategy"] == "Always")
        #expect(Self.lastApplied(vm).contains(#""runStrategy":"Always""#))
        let dv = try await admin.get(Kinds.dataVolume, name: Self.dvName)
        #expect(dv["spec"]?["storage"]?["storageClassName"] == "local")
        #expect(dv["metadata"]?["annotations"]?["cdi.kubevirt.io/storage.usePopulator"] == "true")

        // The reconcilers write status after the create; the second apply compares once they are done.
        let vmVersion = try await settledVersion(admin, Kinds.virtualMachine, Self.vmName)
        let dvVersion = try await settledVersion(admin, Kinds.dataVolume, Self.dvName)
        let again = try await kubectl(cluster, ["apply", "-f", file, "-v=6"])
        #expect(again.status == 0, "\(again.stdout)\(again.stderr)")
        #expect(again.stdout.contains("datavolume.cdi.kubevirt.io/\(Self.dvName) unchanged"), "\(again.stdout)")
        #expect(again.stdout.contains("virtualmachine.kubevirt.io/\(Self.vmName) unchanged"), "\(again.stdout)")
        #expect(
            !["PATCH https", "PUT https", "POST https"].contains { again.stderr.contains($0) },
            "nothing written: \(again.stderr)")
        #expect(
            try await admin.get(Kinds.virtualMachine, name: Self.vmName)["metadata"]?["resourceVersion"] == vmVersion)
        #expect(try await admin.get(Kinds.dataVolume, name: Self.dvName)["metadata"]?["resourceVersion"] == dvVersion)

        let changed = Self.seedManifest
            .replacingOccurrences(
                of: "  name: \(Self.vmName)\n", with: "  name: \(Self.vmName)\n  labels:\n    tier: gold\n"
            )
            .replacingOccurrences(of: "runStrategy: Always", with: "runStrategy: Halted")
        let configured = try await kubectl(
            cluster, ["apply", "-f", try cluster.write("changed.yaml", changed), "-v=6"])
        #expect(configured.status == 0, "\(configured.stdout)\(configured.stderr)")
        #expect(
            configured.stdout.contains("virtualmachine.kubevirt.io/\(Self.vmName) configured"), "\(configured.stdout)")
        #expect(
            configured.stdout.contains("datavolume.cdi.kubevirt.io/\(Self.dvName) unchanged"), "\(configured.stdout)")
        #expect(
            configured.stderr.contains("PATCH https") && configured.stderr.contains("fieldValidation=Strict"),
            "\(configured.stderr)")
        let stored = try await admin.get(Kinds.virtualMachine, name: Self.vmName)
        #expect(stored["spec"]?["runStrategy"] == "Halted")
        #expect(stored["metadata"]?["labels"]?["tier"] == "gold")
        #expect(stored["metadata"]?["resourceVersion"] != vmVersion)
        #expect(Self.lastApplied(stored).contains(#""runStrategy":"Halted""#))
        #expect(
            stored["spec"]?["template"]?["spec"]?["domain"]?["resources"]?["requests"]?["memory"] == "128Mi",
            "the rest of the spec is kept")
        await cluster.stop()
    }

    @Test(
        "a misspelled field is refused by the server with the field named, in the spec and at the top level; nothing is stored"
    )
    func misspelledFieldIsRefused() async throws {
        let cluster = try ClusterFixture()
        try await cluster.start()
        let admin = try cluster.client()

        let typo = seedVirtualMachine.replacingOccurrences(of: "runStrategy: Always", with: "runStategy: Always")
        let refused = try await kubectl(cluster, ["apply", "-f", try cluster.write("typo.yaml", typo)])
        #expect(refused.status != 0)
        // kubectl prints a 422 Status with its causes as "The KIND "NAME" is invalid: …".
        #expect(
            refused.stderr.contains(
                #"The VirtualMachine "example-decentralized-lm-vm" is invalid: spec.runStategy: unknown field "spec.runStategy""#
            ),
            "\(refused.stderr)")
        let missing = await #expect(throws: APIError.self) {
            try await admin.get(Kinds.virtualMachine, name: Self.vmName)
        }
        #expect(missing?.code == 404)

        let topLevel = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndatta:\n  mode: fast\n"
        let unknown = try await kubectl(cluster, ["apply", "-f", try cluster.write("toplevel.yaml", topLevel)])
        #expect(unknown.status != 0)
        #expect(
            unknown.stderr.contains(#"The ConfigMap "settings" is invalid: datta: unknown field "datta""#),
            "\(unknown.stderr)")
        let none = await #expect(throws: APIError.self) { try await admin.get(Kinds.configMap, name: "settings") }
        #expect(none?.code == 404)
        await cluster.stop()
    }

    @Test(
        "/openapi/v3 and its documents need a client certificate, any role reads them; kubectl explain finds the kinds")
    func documentsAndExplain() async throws {
        let cluster = try ClusterFixture()
        _ = try cluster.pki.issue(LeafRequest(role: .syncClient, name: "-"))
        try await cluster.start()

        for stem in ["user-admin", "node-a1", "sync-client-sync"] {
            let index = try await cluster.curl(
                ["-w", "\n%{http_code} %{content_type}", cluster.url + "/openapi/v3"], as: stem)
            #expect(index.stdout.hasSuffix("\n200 application/json"), "\(stem): \(index.stdout) \(index.stderr)")
        }
        let anonymous = try await cluster.curl([cluster.url + "/openapi/v3"], as: nil)
        #expect(
            anonymous.status != 0 && anonymous.stdout.isEmpty,
            "no client certificate, nothing served: \(anonymous.stdout)")

        let index = try JSONValue.parse(Data(try await cluster.curl([cluster.url + "/openapi/v3"]).stdout.utf8))
        let url = try #require(index["paths"]?["apis/kubevirt.io/v1"]?["serverRelativeURL"]?.string)
        let document = try JSONValue.parse(Data(try await cluster.curl([cluster.url + url]).stdout.utf8))
        #expect(
            document["components"]?["schemas"]?["io.kubevirt.v1.VirtualMachine"]?["x-kubernetes-group-version-kind"]
                == [["group": "kubevirt.io", "version": "v1", "kind": "VirtualMachine"]])

        let explained = try await kubectl(cluster, ["explain", "vm.spec.runStrategy"])
        #expect(explained.status == 0, "\(explained.stdout)\(explained.stderr)")
        #expect(
            explained.stdout.contains("KIND:       VirtualMachine")
                && explained.stdout.contains("runStrategy <string>"), "\(explained.stdout)")
        #expect(explained.stdout.contains("WaitAsReceiver"), "the allowed values: \(explained.stdout)")
        let dataVolume = try await kubectl(cluster, ["explain", "datavolumes.spec.source"])
        #expect(
            dataVolume.status == 0 && dataVolume.stdout.contains("blank") && dataVolume.stdout.contains("http"),
            "\(dataVolume.stdout)\(dataVolume.stderr)")
        await cluster.stop()
    }

    /// The annotation kubectl keeps what it applied in.
    private static func lastApplied(_ object: JSONValue) -> String {
        object["metadata"]?["annotations"]?["kubectl.kubernetes.io/last-applied-configuration"]?.string ?? ""
    }

    /// kubectl with the cluster's kubeconfig and a cache of its own (never a stale one from another run).
    private func kubectl(_ cluster: ClusterFixture, _ arguments: [String]) async throws -> ProcessResult {
        let options = [
            "--kubeconfig", try await cluster.kubeconfig(), "--cache-dir", cluster.directory + "/kube-cache",
        ]
        return try await run(kubectlPath, options + arguments, timeout: 60)
    }

    /// The object's resourceVersion once it has stayed the same for a second (the reconcilers are done with it).
    private func settledVersion(_ client: APIClient, _ kind: ResourceKind, _ name: String) async throws -> JSONValue? {
        var version = try await client.get(kind, name: name)["metadata"]?["resourceVersion"]
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            try await Task.sleep(for: .seconds(1))
            let now = try await client.get(kind, name: name)["metadata"]?["resourceVersion"]
            if now == version { return version }
            version = now
        }
        Issue.record("\(kind.kind) \(name) kept changing: resourceVersion \(String(describing: version))")
        return version
    }
}

extension ClusterFixture {
    /// Writes `text` to `name` in the cluster's directory; returns the path.
    func write(_ name: String, _ text: String) throws -> String {
        let path = directory + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}
