import ClusterAPI
import Foundation
import SyncController
import Synchronization
import Testing

@testable import TLSTransport

/// A store that lets another write land between the handler's read of an object and its write: the race a check
/// outside the write's transaction loses.
final class InterleavingStore: ResourceStore {
    let base: any ResourceStore
    let interleave: @Sendable () async -> Void
    private let fired = Mutex(false)

    init(base: any ResourceStore, interleave: @escaping @Sendable () async -> Void) {
        self.base = base
        self.interleave = interleave
    }

    func get(_ kind: ResourceKind, namespace: String?, name: String) async throws(APIError) -> JSONValue {
        let value = try await base.get(kind, namespace: namespace, name: name)
        let first = fired.withLock { fired in
            defer { fired = true }
            return !fired
        }
        if first { await interleave() }
        return value
    }
    func list(_ kind: ResourceKind, _ selection: Selection) async throws(APIError) -> (
        items: [JSONValue], resourceVersion: Int64
    ) {
        try await base.list(kind, selection)
    }
    func create(_ kind: ResourceKind, _ object: JSONValue) async throws(APIError) -> JSONValue {
        try await base.create(kind, object)
    }
    func update(_ kind: ResourceKind, _ object: JSONValue, subresource: Subresource, admit: Admission?)
        async throws(APIError) -> JSONValue
    {
        try await base.update(kind, object, subresource: subresource, admit: admit)
    }
    func patch(
        _ kind: ResourceKind, namespace: String?, name: String, mergePatch: JSONValue, subresource: Subresource,
        admit: Admission?
    )
        async throws(APIError) -> JSONValue
    {
        try await base.patch(
            kind, namespace: namespace, name: name, mergePatch: mergePatch, subresource: subresource, admit: admit)
    }
    func delete(_ kind: ResourceKind, namespace: String?, name: String, precondition: DeletePrecondition?)
        async throws(APIError) -> JSONValue
    {
        try await base.delete(kind, namespace: namespace, name: name, precondition: precondition)
    }
    func watch(_ kind: ResourceKind, _ selection: Selection, from resourceVersion: Int64?) async throws(APIError)
        -> AsyncStream<WatchEvent>
    {
        try await base.watch(kind, selection, from: resourceVersion)
    }
}

@Suite("A node's write is checked where it lands")
struct AdmissionRaceTests {
    @Test(
        "a VMI handed to another node between the check's read and the write: the old node's status write is refused, nothing stored (the real SQLite store, a write interleaved)"
    )
    func vmiMovedMeanwhile() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "race-\(UUID().uuidString.prefix(8))"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sqlite = try SQLiteStore(path: directory + "/cluster.sqlite")
        var vmi = try await sqlite.create(
            Kinds.virtualMachineInstance,
            [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "metadata": ["name": "vmi1", "namespace": "default"], "spec": ["domain": [:]],
            ])
        vmi["status"] = ["phase": "Running", "nodeName": "a1"]
        _ = try await sqlite.update(Kinds.virtualMachineInstance, vmi, subresource: .status)
        // Between the handler's read and its write, the VMI goes to a2 (as a hand-over or the controller would).
        let store = InterleavingStore(base: sqlite) {
            _ = try? await sqlite.patch(
                Kinds.virtualMachineInstance, namespace: "default", name: "vmi1",
                mergePatch: ["status": ["nodeName": "a2"]], subresource: .status)
        }
        let handler = ClusterAPIHandler(store: store)
        let authority = try CertificateAuthority.create(cluster: "alpha")
        let a1 = PeerIdentity(certificate: try authority.issue(LeafRequest(role: .node, name: "a1")).certificate)
        let request = APIRequest(
            method: "PATCH", uri: "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances/vmi1/status",
            headers: [("Content-Type", "application/merge-patch+json")],
            body: Data(#"{"status":{"phase":"Failed"}}"#.utf8), peer: a1)
        let response = await handler.handle(request)
        guard case .full(let status, _, let body) = response else {
            Issue.record("a full response")
            return
        }
        #expect(
            status == 403 && String(decoding: body, as: UTF8.self).contains("it is not on node \\\"a1\\\""),
            "\(status): \(String(decoding: body, as: UTF8.self))")
        let stored = try await sqlite.get(Kinds.virtualMachineInstance, namespace: "default", name: "vmi1")
        #expect(
            stored["status"]?["nodeName"] == "a2" && stored["status"]?["phase"] == "Running",
            "nothing stored: \(stored["status"] ?? .null)")
    }
}
