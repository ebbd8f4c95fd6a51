public import Foundation

/// Names and helpers of live migration shared by the controller, the agents and the CLI.
public enum Migration {
    /// The finalizer every admitted migration carries until it has finished (so deleting one aborts it first).
    public static let finalizer = "kubevirt.io/migrationJobFinalize"
    /// The label naming a migration's VMI.
    public static let vmiNameLabel = "kubevirt.io/vmi-name"
    /// The label on evacuation migrations naming the drained node.
    public static let evacuationNodeLabel = "kubevirt.io/evacuation-node"
    /// The name prefix of migrations created by a drain (KubeVirt's evacuation controller's).
    public static let evacuationPrefix = "kubevirt-evacuation-"
    /// The node condition that reports a drain.
    public static let drainCondition = "Drained"
    /// Phases in which a migration counts against the parallel limits.
    public static let activePhases = VirtualMachineInstanceMigration.Phase.allCases.filter(\.isActive).map(\.rawValue)
    /// Phases a migration ends in.
    public static let finalPhases = VirtualMachineInstanceMigration.Phase.allCases.filter(\.isFinal).map(\.rawValue)

    /// The tunnel streams of one migration: libvirt's connection, the memory stream and the disks' copy.
    public static let tunnelStreams = ["libvirt", "memory", "disks"]

    /// The tunnel channel carrying `stream` of the migration whose target VMIM has `uid`.
    public static func tunnelChannel(_ uid: String, _ stream: String) -> String { "migration/\(uid)/\(stream)" }

    /// The migration uid and stream a tunnel channel names; nil for any other channel.
    public static func parseTunnelChannel(_ channel: String) -> (uid: String, stream: String)? {
        let parts = channel.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "migration", !parts[1].isEmpty, tunnelStreams.contains(String(parts[2]))
        else { return nil }
        return (String(parts[1]), String(parts[2]))
    }

    /// `prefix` followed by 5 random lowercase alphanumerics (as Kubernetes' generateName).
    public static func generatedName(_ prefix: String) -> String {
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        return prefix + String((0..<5).map { _ in alphabet.randomElement()! })
    }

    /// The current time with milliseconds (phase transitions are often less than a second apart).
    public static func timestamp(_ date: Date = .now) -> String {
        date.formatted(
            .iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true).timeSeparator(
                .colon
            ).timeZone(separator: .omitted))
    }

    /// Parses a timestamp with or without fractional seconds.
    public static func parseTimestamp(_ text: String) -> Date? {
        if let date = try? Date(
            text,
            strategy: .iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true)
                .timeSeparator(.colon).timeZone(separator: .omitted))
        {
            return date
        }
        return try? Date(text, strategy: .iso8601)
    }
}
