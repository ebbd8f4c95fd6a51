import ArgumentParser
import ClusterAPI
import ClusterClient
import Foundation

/// `syncctl migrate VM [--node N]`: creates a VirtualMachineInstanceMigration named `<vm>-xxxxx` (virtctl migrate).
struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Live-migrate a running VM to another node of its cluster.")
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The VM (its VMI has the same name).") var vm: String
    @Option(help: "The node to migrate to (default: the scheduler picks one).") var node: String?
    @Flag(help: "Wait until the migration has finished; print its phases; exit 1 if it failed.") var wait = false
    @Option(help: "With --wait: give up waiting after this many seconds.") var timeout = 600

    func run() async throws {
        try await reportingFailures {
            // The API refuses a migration of a VMI that is missing, not running or already migrating, with the reason.
            let (client, namespace) = try cluster.connect()
            var spec: JSONValue = ["vmiName": .string(vm)]
            if let node { spec["addedNodeSelector"] = [.init(stringLiteral: Resources.hostnameLabel): .string(node)] }
            let object: JSONValue = [
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                "metadata": ["name": .string(Migration.generatedName(vm + "-")), "namespace": .string(namespace)],
                "spec": spec,
            ]
            let created = try await client.create(Kinds.migration, object)
            let name = created["metadata"]?["name"]?.string ?? ""
            print("virtualmachineinstancemigration.kubevirt.io/\(name) created")
            guard wait else { return }
            let final = try await follow(client, namespace: namespace, name: name, from: created)
            if final["status"]?["phase"]?.string == "Failed" {
                let reason = final["status"]?["migrationState"]?["failureReason"]?.string ?? "no reason given"
                throw CLIError("migration \(name) failed: \(reason)")
            }
            print("vm \(vm) now runs on \(final["status"]?["migrationState"]?["targetNode"]?.string ?? "?")")
        }
    }

    /// Prints each new phase until the migration finishes. One watch follows every change (a new one only when the
    /// server ends it), so no phase costs a new connection.
    private func follow(_ client: APIClient, namespace: String, name: String, from created: JSONValue) async throws
        -> JSONValue
    {
        let deadline = Date().addingTimeInterval(TimeInterval(timeout))
        var printed = 0
        var current = created
        func show() -> Bool {
            let history = current["status"]?["phaseTransitionTimestamps"]?.array ?? []
            for entry in history.dropFirst(printed) {
                print("\(entry["phaseTransitionTimestamp"]?.string ?? "")  \(entry["phase"]?.string ?? "")")
            }
            printed = max(printed, history.count)
            return Migration.finalPhases.contains(current["status"]?["phase"]?.string ?? "")
        }
        if show() { return current }
        while Date() < deadline {
            let events = try await client.watch(
                Kinds.migration, namespace: namespace, fieldSelector: "metadata.name=\(name)",
                resourceVersion: current["metadata"]?["resourceVersion"]?.string,
                timeoutSeconds: max(1, min(60, Int(deadline.timeIntervalSinceNow.rounded(.up)))))
            for try await event in events {
                if event.type == "DELETED" { throw CLIError("migration \(name) was deleted") }
                current = event.object
                if show() { return current }
            }
        }
        throw CLIError(
            "migration \(name) did not finish within \(timeout) s (phase \(current["status"]?["phase"]?.string ?? "new"))"
        )
    }
}

/// `syncctl abort VM`: deletes the VM's unfinished migration, which aborts it; the VM keeps running where it is.
struct Abort: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Abort a VM's running or pending migration (the VM stays where it runs).")
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The VM.") var vm: String

    func run() async throws {
        try await reportingFailures {
            let (client, namespace) = try cluster.connect()
            let migrations = try await client.list(Kinds.migration, namespace: namespace)["items"]?.array ?? []
            let open = migrations.filter {
                $0["spec"]?["vmiName"]?.string == vm
                    && !Migration.finalPhases.contains($0["status"]?["phase"]?.string ?? "")
                    && $0["metadata"]?["deletionTimestamp"] == nil
            }
            guard !open.isEmpty else { throw CLIError("vm \(vm) has no running or pending migration") }
            for migration in open {
                let name = migration["metadata"]?["name"]?.string ?? ""
                _ = try await client.delete(Kinds.migration, namespace: namespace, name: name)
                print(
                    "virtualmachineinstancemigration.kubevirt.io/\(name) deleted: migration of vm \(vm) aborted (phase \(migration["status"]?["phase"]?.string ?? "new"))"
                )
            }
        }
    }
}
