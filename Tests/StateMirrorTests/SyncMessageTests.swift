import ClusterAPI
import Foundation
import StateMirror
import SwiftProtobuf
import TestSupport
import Testing

/// KubeVirt's sync messages as the generated code writes and reads them, checked against Python's protobuf runtime
/// (`grpcio-tools`, from PyPI) compiling the same .proto: the same bytes on the wire both ways.
@Suite("Sync messages: KubeVirt's wire format")
struct SyncMessageTests {
    @Test("a status request written here is read by Python's protobuf, and one written there is read here")
    func bothWays() async throws {
        let directory = try await PythonSyncPeer.workspace()
        defer { try? FileManager.default.removeItem(atPath: directory) }

        var status = VirtualMachineInstance.Status()
        status.phase = .running
        status.nodeName = "node-a"
        let request = try Kubevirt_Synchronization_VMIStatusRequest(migrationID: "mig-1", status: status)
        let bytes: Data = try request.serializedBytes()
        let read = try await run(
            "/usr/bin/env",
            [
                "python3",
                "-c",
                """
                import sys, json; sys.path.insert(0, sys.argv[1]); import synchronization_pb2 as s
                r = s.VMIStatusRequest(); r.ParseFromString(bytes.fromhex(sys.argv[2]))
                print(json.dumps({"id": r.migrationID, "status": json.loads(r.vmiStatus.vmiStatusJson)}, sort_keys=True))
                """,
                directory, bytes.map { String(format: "%02x", $0) }.joined(),
            ])
        #expect(read.status == 0, "\(read.stderr)")
        let seen = try JSONValue.parse(Data(read.stdout.utf8))
        #expect(seen["id"] == "mig-1")
        #expect(seen["status"]?["phase"] == "Running" && seen["status"]?["nodeName"] == "node-a", "\(seen)")

        // Python writes one with a field vmsync does not model: it is read, and kept in the envelope.
        let written = try await run(
            "/usr/bin/env",
            [
                "python3",
                "-c",
                """
                import sys, json; sys.path.insert(0, sys.argv[1]); import synchronization_pb2 as s
                status = {"phase": "Scheduled", "migrationState": {"targetNode": "node-b"}, "futureField": {"x": 1}}
                r = s.VMIStatusRequest(migrationID="mig-2", vmiStatus=s.VMIStatus(vmiStatusJson=json.dumps(status).encode()))
                print(r.SerializeToString().hex())
                """,
                directory,
            ])
        #expect(written.status == 0, "\(written.stderr)")
        let hex = written.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let wire = Data(
            stride(from: 0, to: hex.count, by: 2).compactMap { offset -> UInt8? in
                let start = hex.index(hex.startIndex, offsetBy: offset)
                return UInt8(hex[start..<hex.index(start, offsetBy: 2)], radix: 16)
            })
        let received = try Kubevirt_Synchronization_VMIStatusRequest(serializedBytes: wire)
        #expect(received.migrationID == "mig-2")
        let (decoded, envelope) = try received.status()
        #expect(decoded.phase == .scheduled && decoded.migrationState?.targetNode == "node-b")
        #expect(envelope["futureField"]?["x"] == 1)

        // The cancel request's one field, both ways.
        let cancel = try await run(
            "/usr/bin/env",
            [
                "python3",
                "-c",
                """
                import sys; sys.path.insert(0, sys.argv[1]); import synchronization_pb2 as s
                print(s.MigrationCancelRequest(migrationUID="uid-9").SerializeToString().hex())
                """,
                directory,
            ])
        var expected = Kubevirt_Synchronization_MigrationCancelRequest()
        expected.migrationUid = "uid-9"
        let ours: Data = try expected.serializedBytes()
        #expect(
            cancel.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                == ours.map { String(format: "%02x", $0) }.joined())
    }

    @Test(
        "a request without migrationID or status, with a status too large, not JSON or not an object is refused, saying which"
    )
    func badRequests() throws {
        var request = Kubevirt_Synchronization_VMIStatusRequest()
        #expect(throws: SyncMessageError(description: "the request names no migrationID")) { try request.status() }
        request.migrationID = "m"
        #expect(throws: SyncMessageError(description: "the request for migrationID m carries no VMI status")) {
            try request.status()
        }
        func carrying(_ json: String) -> Kubevirt_Synchronization_VMIStatusRequest {
            var request = Kubevirt_Synchronization_VMIStatusRequest()
            request.migrationID = "m"
            request.vmiStatus.vmiStatusJson = Data(json.utf8)
            return request
        }
        for (json, says) in [
            ("{\"phase\": ", "is not JSON"), ("[1, 2]", "is not a JSON object"),
            ("{\"phase\": 7}", "does not read as a VMI status"),
            ("{\"x\": \"" + String(repeating: "a", count: 1 << 20) + "\"}", "at most 1048576 are taken"),
        ] {
            do {
                _ = try carrying(json).status()
                Issue.record("\(json.prefix(20)) was taken")
            } catch {
                #expect(error.description.contains(says), "\(error.description)")
            }
        }
    }
}
