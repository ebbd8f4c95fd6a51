import Foundation

/// Names and helpers shared by the controller, the agents and the CLI.
public enum Resources {
    /// The finalizer the VM controller puts on every VMI it creates, removed once the node has stopped the domain.
    public static let vmiFinalizer = "kubevirt.io/virtualMachineControllerFinalize"
    /// Label every node carries with its name.
    public static let hostnameLabel = "kubernetes.io/hostname"
    /// Annotation marking the default StorageClass.
    public static let defaultClassAnnotation = "storageclass.kubernetes.io/is-default-class"
    /// The drain taint (seed 000's batch migration).
    public static let drainTaintKey = "kubevirt.io/drain"

    /// The libvirt domain name of a VMI.
    public static func domainName(namespace: String, name: String) -> String { "\(namespace)_\(name)" }

    /// Where a DataVolume's image lives in its StorageClass's directory: the one rule the agents (which make and
    /// remove it) and the controller (which records it in the DataVolume's status) share.
    public static func imagePath(directory: String, namespace: String, name: String) -> String {
        "\(directory)/\(namespace)-\(name).qcow2"
    }

    /// The StorageClass a DataVolume uses: the one it names, else the default one (annotated, or the only one).
    public static func storageClass(of dataVolume: JSONValue, in classes: [JSONValue]) -> JSONValue? {
        let storage = dataVolume["spec"]?["storage"] ?? dataVolume["spec"]?["pvc"]
        if let name = storage?["storageClassName"]?.string {
            return classes.first { $0["metadata"]?["name"]?.string == name }
        }
        return classes.first { $0["metadata"]?["annotations"]?[defaultClassAnnotation]?.string == "true" }
            ?? (classes.count == 1 ? classes.first : nil)
    }

    /// The CPU model a VMI spec asks for: its `domain.cpu.model`, else the cluster's default (KubeVirt CR
    /// `spec.configuration.cpuModel`), else "host-model".
    public static func cpuModel(of spec: JSONValue?, clusterDefault: String? = nil) -> String {
        VirtualMachineInstanceSpec.cpuModel(
            asked: spec?["domain"]?["cpu"]?["model"]?.string, clusterDefault: clusterDefault)
    }

    /// Memory a VMI asks for, in bytes, from its `domain.memory.guest` or else its memory request (128 MiB when it
    /// says neither). A value that is there but is no quantity (stored before such values were refused) asks for more
    /// than any node has, so it fits nowhere instead of being taken for the default.
    public static func requestedMemory(guest: JSONValue?, request: JSONValue?) -> UInt64 {
        for value in [guest, request] {
            guard let value, value != .null else { continue }
            return Quantity(value)?.bytes ?? .max
        }
        return 128 << 20
    }

    /// "5s", "3m", "2h", "4d" since an RFC 3339 time, as kubectl prints ages.
    public static func age(_ timestamp: String?) -> String {
        guard let timestamp, let date = try? Date(timestamp, strategy: .iso8601) else { return "<unknown>" }
        let seconds = max(0, Int(Date.now.timeIntervalSince(date)))
        switch seconds {
        case ..<120: return "\(seconds)s"
        case ..<7200: return "\(seconds / 60)m"
        case ..<172_800: return "\(seconds / 3600)h"
        default: return "\(seconds / 86400)d"
        }
    }

    /// The current time as Kubernetes writes it.
    public static func now() -> String { Date.now.formatted(.iso8601) }

    /// A condition object.
    public static func condition(_ type: String, _ status: Bool?, reason: String, message: String = "") -> JSONValue {
        [
            "type": .string(type), "status": .string(status.map { $0 ? "True" : "False" } ?? "Unknown"),
            "reason": .string(reason),
            "message": .string(message), "lastTransitionTime": .string(now()), "lastProbeTime": .null,
        ]
    }

    /// `conditions` with `condition` put in place of the one of the same type; the transition time is kept when the
    /// status did not change. Returns nil when nothing changed (so callers write only on change).
    public static func setting(_ condition: JSONValue, in conditions: JSONValue?) -> JSONValue? {
        var list = conditions?.array ?? []
        let type = condition["type"]?.string
        if let index = list.firstIndex(where: { $0["type"]?.string == type }) {
            let old = list[index]
            if old["status"] == condition["status"], old["reason"] == condition["reason"],
                old["message"] == condition["message"]
            {
                return nil
            }
            var updated = condition
            if old["status"] == condition["status"] { updated["lastTransitionTime"] = old["lastTransitionTime"] }
            list[index] = updated
        } else {
            list.append(condition)
        }
        return .array(list)
    }
}
