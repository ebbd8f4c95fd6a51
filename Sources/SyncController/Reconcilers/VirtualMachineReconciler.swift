public import ClusterAPI
public import ControllerRuntime
import Logging

/// VirtualMachines, keyed by VM: its run strategy decides whether its VMI exists (created from the template, owned by
/// the VM, with the finalizer its node releases), and its status follows the VMI (printableStatus, ready, created,
/// startedOnce, the Ready condition). A template the API would no longer accept is a `Failure` condition on the VM.
public struct VirtualMachineReconciler: Reconciler {
    public let name = "virtualmachine"
    let store: any ResourceStore
    let machines: Cache<VirtualMachine>
    let instances: Cache<VirtualMachineInstance>
    let logger: Logger

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileResult {
        guard let vm = machines[key] else { return .done }
        let vmi = instances[key]
        let phase = vmi.map(\.phase)
        let deleting = vmi?.metadata.isDeleting ?? false
        if !vm.metadata.isDeleting, let failure = try await act(on: vm, vmi: vmi) {
            // A template that cannot be acted on (no longer valid) says so on the VM; a change of the VM brings it back.
            var failed = vm
            failed.status = failed.status ?? VirtualMachine.Status()
            failed.status?.conditions.set(Condition("Failure", true, reason: "FailedCreate", message: failure.message))
            try await store.write(failed, from: vm, cache: machines)
            logger.warning("VM cannot be acted on", metadata: ["vm": "\(key)", "error": "\(failure)"])
            return .done
        }
        // Status, written only when it changed.
        let printable = Self.printableStatus(vm, vmi: vmi, deleting: deleting)
        var changed = vm
        var status = vm.status ?? VirtualMachine.Status()
        let running = phase == .running && !deleting
        status.printableStatus = printable
        status.ready = running
        status.created = vmi != nil
        if phase == .running { status.startedOnce = true }
        status.conditions.set(Condition("Ready", running, reason: printable))
        changed.status = status
        try await store.write(changed, from: vm, cache: machines)
        return .done
    }

    /// Creates or deletes the VMI as the run strategy says; returns the error of a template the API refuses (400,
    /// 422), throws others.
    private func act(on vm: VirtualMachine, vmi: VirtualMachineInstance?) async throws(APIError) -> APIError? {
        let key = vm.key
        let phase = vmi?.phase
        let deleting = vmi?.metadata.isDeleting ?? false
        if let vmi, vmi.leftByDecentralizedMigration, let uid = vmi.metadata.uid,
            vm.metadata.annotations?[Migration.migratedOutAnnotation] != uid
        {
            // The guest was live-migrated to another cluster or namespace: this VM halts (once — starting it again
            // later is the user's call), and its Succeeded VMI stays as the record.
            var halted = vm
            halted.spec.runStrategy = .halted
            halted.spec.running = nil
            halted.metadata.annotations = (vm.metadata.annotations ?? [:]).merging([
                Migration.migratedOutAnnotation: uid
            ]) { $1 }
            try await store.write(halted, from: vm, guarded: true, cache: machines)
            logger.info("VM halted: its guest was migrated away", metadata: ["vm": "\(key)"])
            return nil
        }
        if let vmi, vm.runStrategy == .waitAsReceiver, vmi.phase == .running, vmi.nodeName != nil {
            // The migration delivered the guest: the VM takes the run strategy it is to restore (KubeVirt's annotation).
            let restore = vm.metadata.annotations?[Migration.restoreRunStrategyAnnotation]
            var restored = vm
            restored.spec.runStrategy =
                restore.flatMap { VirtualMachine.RunStrategy(rawValue: $0) }.flatMap { $0 == .waitAsReceiver ? nil : $0 }
                ?? .always
            try await store.write(restored, from: vm, guarded: true, cache: machines)
            logger.info(
                "received VM runs: its run strategy restored",
                metadata: ["vm": "\(key)", "runStrategy": "\(restored.spec.runStrategy?.rawValue ?? "")"])
            return nil
        }
        do {
            switch vm.runStrategy {
            case .always:
                if vmi == nil {
                    try await createInstance(for: vm)
                } else if phase?.isFinal == true && !deleting {
                    try await deleteInstance(key)
                }
            case .rerunOnFailure:
                if vmi == nil && vm.status?.printableStatus != "Succeeded" {
                    try await createInstance(for: vm)
                } else if phase == .failed && !deleting {
                    try await deleteInstance(key)
                }
            case .once:
                if vmi == nil && vm.status?.startedOnce != true { try await createInstance(for: vm) }
            case .halted:
                if let vmi, !deleting, !vmi.leftByDecentralizedMigration { try await deleteInstance(key) }
            case .manual:
                break  // start and stop are the user's
            case .waitAsReceiver:
                // The receiving side of a decentralized migration: a VMI that waits (WaitingForSync, never scheduled
                // on its own) for the migration that fills it.
                if vmi == nil {
                    try await createInstance(for: vm, phase: .waitingForSync)
                } else if let vmi, vmi.metadata.annotations?[Migration.receiverAnnotation] != nil,
                    vmi.status?.phase == nil, !deleting
                {
                    // Its phase did not land with the create (another write came first): written now.
                    var waiting = vmi
                    var status = vmi.status ?? VirtualMachineInstance.Status()
                    status.phase = .waitingForSync
                    waiting.status = status
                    try await store.write(waiting, from: vmi, guarded: true, cache: instances)
                }
            }
        } catch {
            guard [400, 422].contains(error.code) else { throw error }
            return error
        }
        return nil
    }

    /// The STATUS column: what the VM's instance is doing.
    static func printableStatus(_ vm: VirtualMachine, vmi: VirtualMachineInstance?, deleting: Bool) -> String {
        guard let vmi else {
            if vm.runStrategy == .waitAsReceiver { return "WaitingForReceiver" }
            return vm.status?.startedOnce == true && vm.runStrategy == .once ? "Succeeded" : "Stopped"
        }
        if deleting { return "Stopping" }
        switch vmi.phase {
        case .running: return vmi.status?.migrationState?.completed == false ? "Migrating" : "Running"
        case .succeeded: return "Succeeded"
        case .failed: return "Failed"
        case .unknown: return "Unknown"
        case .waitingForSync: return "WaitingForReceiver"
        default: return vmi.status?.conditions["PodScheduled"]?.status == .false ? "ErrorUnschedulable" : "Starting"
        }
    }

    /// The VMI of `vm`: its template (whole, fields vmsync does not model included), owned by the VM.
    private func createInstance(
        for vm: VirtualMachine, phase: VirtualMachineInstance.Phase = .pending
    ) async throws(APIError) {
        let template = machines.envelope(vm.key)?["spec"]?["template"]
        var labels = vm.spec.template?.metadata?.labels ?? [:]
        labels["kubevirt.io/vm"] = vm.key.name
        var metadata = ObjectMeta(name: vm.key.name, namespace: vm.key.namespace, labels: labels)
        metadata.annotations = vm.spec.template?.metadata?.annotations ?? [:]
        metadata.ownerReferences = [
            OwnerReference(
                apiVersion: "kubevirt.io/v1", kind: "VirtualMachine", name: vm.key.name, uid: vm.metadata.uid ?? "")
        ]
        metadata.add(finalizer: Resources.vmiFinalizer)
        var vmi: JSONValue = [
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "spec": template?["spec"] ?? [:],
        ]
        if phase == .waitingForSync {
            // The scheduler never places a receiving VMI (not even before its phase is written): the migration does.
            metadata.annotations?[Migration.receiverAnnotation] = "true"
        }
        vmi["metadata"] = (try? JSONValue(encoding: metadata)) ?? [:]
        do {
            let created = try await store.create(vmi, as: VirtualMachineInstance.self, cache: instances)
            var pending = created
            pending.status = VirtualMachineInstance.Status(phase: phase)
            // Only onto the VMI as created: the scheduler may have placed it already, and a late Pending would undo
            // that placement's phase (the VMI would wait on its node forever).
            do {
                try await store.write(pending, from: created, guarded: true, cache: instances)
            } catch  where error.code == 409 {}
            logger.info("VMI created", metadata: ["vm": "\(vm.key)"])
        } catch  where error.code == 409 {
            return
        }
    }

    private func deleteInstance(_ key: ObjectKey) async throws(APIError) {
        do {
            _ = try await store.delete(
                Kinds.virtualMachineInstance, namespace: key.namespace, name: key.name, precondition: nil)
        } catch  where error.code == 404 {
            return
        }
    }
}
