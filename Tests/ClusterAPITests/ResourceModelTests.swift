import ClusterAPI
import Foundation
import TestSupport
import Testing

/// The typed resources: decoding stored objects, writing back only what changed, and never losing fields they do not
/// model.
@Suite("Typed resources")
struct ResourceModelTests {
    @Test("the seed's VirtualMachine and DataVolume read as typed objects")
    func seedManifests() throws {
        let documents = try YAML.documents(seedVirtualMachine)
        let vm = try #require(documents.first { $0["kind"] == "VirtualMachine" })
        let typed = try VirtualMachine(json: vm)
        #expect(typed.metadata.name == vm["metadata"]?["name"]?.string)
        #expect(typed.runStrategy.rawValue == (vm["spec"]?["runStrategy"]?.string ?? (vm["spec"]?["running"]?.bool == true ? "Always" : "Halted")))
        #expect(typed.spec.template?.spec?.volumes?.count == vm["spec"]?["template"]?["spec"]?["volumes"]?.array?.count)
        for document in documents where document["kind"] == "DataVolume" {
            let dataVolume = try DataVolume(json: document)
            #expect(dataVolume.storage?.storageClassName == (document["spec"]?["storage"] ?? document["spec"]?["pvc"])?["storageClassName"]?.string)
        }
    }

    @Test("a changed status is written as the merge patch of the changed fields; unknown fields stay in the envelope")
    func patchOfChangedFields() throws {
        let stored: JSONValue = [
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": ["name": "a", "namespace": "default", "resourceVersion": "7", "futureField": ["x": 1]],
            "spec": ["domain": ["devices": ["disks": [["name": "root", "disk": ["bus": "virtio"]]]]], "unmodelled": true],
            "status": ["phase": "Scheduled", "nodeName": "n1", "guestOSInfo": ["name": "tiny"], "migrationState": ["sourceNode": "n1", "futureFlag": true]],
        ]
        let vmi = try VirtualMachineInstance(json: stored)
        #expect(vmi.phase == .scheduled && vmi.nodeName == "n1")
        #expect(vmi.patch(to: vmi) == (nil, nil), "nothing changed, nothing to write")
        var changed = vmi
        changed.status?.phase = .running
        changed.status?.nodeName = nil
        changed.status?.migrationState?.targetNode = "n2"
        changed.status?.conditions.set(Condition("Ready", true, reason: "Running"))
        let (main, status) = vmi.patch(to: changed)
        #expect(main == nil)
        let patch = try #require(status)
        #expect(patch["status"]?["phase"] == "Running")
        #expect(patch["status"]?["nodeName"] == .null, "a removed field is removed")
        #expect(patch["status"]?["migrationState"] == ["targetNode": "n2"])
        #expect(patch["status"]?["guestOSInfo"] == nil)
        let written = stored.merged(with: patch)
        #expect(written["status"]?["guestOSInfo"] == ["name": "tiny"], "a status field the type does not model survives")
        #expect(written["status"]?["migrationState"]?["futureFlag"] == true)
        #expect(written["metadata"]?["futureField"] == ["x": 1] && written["spec"]?["unmodelled"] == true)
        #expect(written["spec"]?["domain"]?["devices"]?["disks"]?.array?.first?["disk"] == ["bus": "virtio"])
        #expect(try VirtualMachineInstance(json: written) == changed)
    }

    @Test("an unknown phase reads as the fallback and is not rewritten")
    func unknownPhase() throws {
        let stored: JSONValue = ["metadata": ["name": "m"], "spec": ["vmiName": "a"], "status": ["phase": "FromTheFuture"]]
        let migration = try VirtualMachineInstanceMigration(json: stored)
        #expect(migration.phase == .new)
        var changed = migration
        changed.status?.conditions.set(Condition("Queued", true, reason: "ParallelLimit"))
        let patch = try #require(migration.patch(to: changed).status)
        #expect(patch["status"]?["phase"] == nil, "the phase nobody changed is not written")
    }

    @Test("a malformed object is an error naming it, not a crash")
    func malformed() {
        #expect(throws: APIError.self) { try VirtualMachineInstanceMigration(json: ["metadata": ["name": "broken"], "spec": ["vmiName": 5]]) }
        do {
            _ = try VirtualMachineInstanceMigration(json: ["metadata": ["name": "broken"], "spec": [:]])
            Issue.record("decoded without its vmiName")
        } catch {
            #expect(error.code == 422 && error.message.contains("\"broken\""), "\(error.message)")
        }
    }

    @Test("conditions: set keeps the transition time when only the message changes, and changes nothing when equal")
    func conditions() {
        var list: [Condition] = []
        list.set(Condition("Ready", true, reason: "A"))
        var old = list
        old[0].lastTransitionTime = "2020-01-01T00:00:00Z"
        list = old
        list.set(Condition("Ready", true, reason: "A"))
        #expect(list == old)
        list.set(Condition("Ready", true, reason: "A", message: "more"))
        #expect(list[0].message == "more" && list[0].lastTransitionTime == "2020-01-01T00:00:00Z")
        list.set(Condition("Ready", false, reason: "B"))
        #expect(list["Ready"]?.status == .false && list[0].lastTransitionTime != "2020-01-01T00:00:00Z")
    }

    @Test("KubeVirt's migration defaults apply where the configuration is silent")
    func kubeVirtDefaults() throws {
        let empty = try KubeVirt(json: ["metadata": ["name": "kubevirt", "namespace": "kubevirt"], "spec": [:]])
        #expect(empty.migrations.parallelPerCluster == 5 && empty.migrations.parallelOutboundPerNode == 2)
        #expect(empty.migrations.unschedulableTimeout == 300 && empty.migrations.prepareTimeout == 120)
        let defaults = KubeVirt()
        #expect(defaults.isEnabled("DecentralizedLiveMigration"))
        #expect(defaults.json["spec"]?["configuration"]?["migrations"]?["completionTimeoutPerGiB"] == 150)
    }

    @Test("merge patch diff", arguments: [
        (["a": 1] as JSONValue, ["a": 1] as JSONValue, JSONValue?.none),
        (["a": 1, "b": 2], ["a": 1], ["b": .null]),
        (["a": ["b": 1, "c": 2]], ["a": ["b": 1, "c": 3]], ["a": ["c": 3]]),
        (["a": [1, 2]], ["a": [1]], ["a": [1]]),
        (["a": 1], ["a": 1, "n": .null], nil),
    ] as [(JSONValue, JSONValue, JSONValue?)])
    func mergePatchDiff(old: JSONValue, new: JSONValue, expected: JSONValue?) {
        let patch = JSONValue.mergePatch(from: old, to: new)
        #expect(patch == expected)
        if let patch { #expect(old.merged(with: patch) == new.merged(with: [:])) }
    }
}
