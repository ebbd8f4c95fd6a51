public import ClusterAPI
import Foundation

/// Why a sync message cannot be used: what is missing or malformed, in words for the peer and the VMIM's condition.
public struct SyncMessageError: Error, Hashable, CustomStringConvertible {
    public let description: String

    public init(description: String) { self.description = description }
}

extension Kubevirt_Synchronization_VMIStatusRequest {
    /// The largest VMI status a peer may send, as JSON: a status is a few KiB; this bounds what one message makes the
    /// controller parse and hold.
    public static let maximumStatusBytes = 1 << 20

    /// A request carrying `status` for `migrationID`, the status as JSON the way KubeVirt's controllers send it.
    public init(migrationID: String, status: VirtualMachineInstance.Status) throws {
        self.init()
        self.migrationID = migrationID
        var carried = Kubevirt_Synchronization_VMIStatus()
        carried.vmiStatusJson = try JSONValue(encoding: status).jsonData()
        vmiStatus = carried
    }

    /// The VMI status the request carries: refused when the migrationID or the status is missing, the status is larger
    /// than `maximumStatusBytes`, or it is not a JSON object that reads as a VMI status. Fields vmsync does not model
    /// are kept in `envelope` (what KubeVirt sends beyond them is not lost).
    public func status() throws(SyncMessageError) -> (status: VirtualMachineInstance.Status, envelope: JSONValue) {
        guard !migrationID.isEmpty else { throw SyncMessageError(description: "the request names no migrationID") }
        guard hasVmiStatus, !vmiStatus.vmiStatusJson.isEmpty else {
            throw SyncMessageError(description: "the request for migrationID \(migrationID) carries no VMI status")
        }
        let bytes = vmiStatus.vmiStatusJson
        guard bytes.count <= Self.maximumStatusBytes else {
            throw SyncMessageError(
                description:
                    "the VMI status for migrationID \(migrationID) is \(bytes.count) bytes; at most \(Self.maximumStatusBytes) are taken"
            )
        }
        let json: JSONValue
        do {
            json = try JSONValue.parse(bytes)
        } catch {
            throw SyncMessageError(
                description: "the VMI status for migrationID \(migrationID) is not JSON: \(error.message)")
        }
        guard case .object = json else {
            throw SyncMessageError(description: "the VMI status for migrationID \(migrationID) is not a JSON object")
        }
        do {
            return (try json.decode(VirtualMachineInstance.Status.self), json)
        } catch {
            throw SyncMessageError(
                description: "the VMI status for migrationID \(migrationID) does not read as a VMI status: \(error)")
        }
    }
}
