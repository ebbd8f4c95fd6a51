import ClusterAPI
import Foundation
import Hypervisor
public import Logging

/// The controller's reconcilers, level-based: every pass reads the current objects and moves each toward what its
/// spec asks — VirtualMachines to VMIs by runStrategy, pending VMIs onto nodes, deleted VMIs past their finalizer,
/// silent nodes to NotReady, DataVolume phases, the LiveMigratable condition — writing status only when it changed.
/// A pass runs on every change of the kinds it reads and once a second.
public actor ClusterReconciler {
    let store: any ResourceStore
    let logger: Logger
    /// How long a node may go without a heartbeat before it is NotReady (Kubernetes: 40 s).
    let nodeGracePeriod: Duration

    public init(store: any ResourceStore, nodeGracePeriod: Duration = .seconds(40), logger: Logger = Logger(label: "vmsync.reconciler")) {
        self.store = store
        self.nodeGracePeriod = nodeGracePeriod
        self.logger = logger
    }

    /// Runs until cancelled.
    public func run() async {
        let (triggers, trigger) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        await withTaskGroup(of: Void.self) { group in
            for kind in [Kinds.virtualMachine, Kinds.virtualMachineInstance, Kinds.node, Kinds.dataVolume, Kinds.migration] {
                group.addTask {
                    while !Task.isCancelled {
                        let version = try? await self.currentVersion()
                        guard let events = try? await self.store.watch(kind, Selection(), from: version) else {
                            try? await Task.sleep(for: .seconds(1))
                            continue
                        }
                        for await _ in events { trigger.yield() }
                    }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    trigger.yield()
                    try? await Task.sleep(for: .seconds(1))
                }
            }
            group.addTask {
                for await _ in triggers {
                    await self.pass()
                }
            }
            await group.next()
            group.cancelAll()
        }
    }

    private func currentVersion() async throws -> Int64 {
        try await store.list(Kinds.kubeVirt, Selection()).resourceVersion
    }

    /// One reconciliation of everything.
    public func pass() async {
        do {
            let nodes = try await store.list(Kinds.node, Selection()).items
            var vmis = try await store.list(Kinds.virtualMachineInstance, Selection()).items
            let vms = try await store.list(Kinds.virtualMachine, Selection()).items
            let dataVolumes = try await store.list(Kinds.dataVolume, Selection()).items
            let classes = try await store.list(Kinds.storageClass, Selection()).items
            let readyNodes = try await nodeLifecycle(nodes, vmis: vmis)
            for vm in vms {
                do {
                    try await reconcileVirtualMachine(vm, vmis: vmis)
                } catch where [400, 422].contains(error.code) {
                    // One VM that cannot be acted on (its template no longer valid) says so and stops nothing else.
                    try await recordFailure(vm, error)
                }
            }
            vmis = try await store.list(Kinds.virtualMachineInstance, Selection()).items
            try await releaseFinalizers(vmis, readyNodes: readyNodes)
            try await schedule(vmis, nodes: nodes, readyNodes: readyNodes, dataVolumes: dataVolumes, classes: classes)
            vmis = try await store.list(Kinds.virtualMachineInstance, Selection()).items
            try await liveMigratable(vmis, nodes: nodes, readyNodes: readyNodes, dataVolumes: dataVolumes, classes: classes)
            try await migrations(vmis: vmis, nodes: nodes, readyNodes: readyNodes, dataVolumes: dataVolumes, classes: classes)
        } catch {
            logger.warning("reconcile pass failed", metadata: ["error": "\(error)"])
        }
    }

    /// KubeVirt's `Failure` condition on a VM whose instance could not be created.
    private func recordFailure(_ vm: JSONValue, _ error: APIError) async throws(APIError) {
        let condition = Resources.condition("Failure", true, reason: "FailedCreate", message: error.message)
        guard let conditions = Resources.setting(condition, in: vm["status"]?["conditions"]) else { return }
        _ = try await store.patch(Kinds.virtualMachine, namespace: namespace(vm), name: name(vm), mergePatch: ["status": ["conditions": conditions]], subresource: .status)
        logger.warning("VM cannot be acted on", metadata: ["vm": "\(namespace(vm))/\(name(vm))", "error": "\(error)"])
    }

    // MARK: Nodes

    /// Marks nodes whose agent stopped posting NotReady (and their VMIs Unknown); returns the names of Ready nodes.
    private func nodeLifecycle(_ nodes: [JSONValue], vmis: [JSONValue]) async throws(APIError) -> Set<String> {
        var ready = Set<String>()
        for node in nodes {
            let nodeName = node["metadata"]?["name"]?.string ?? ""
            let condition = node["status"]?["conditions"]?.array?.first { $0["type"]?.string == "Ready" }
            let heartbeat = (condition?["lastHeartbeatTime"]?.string).flatMap { try? Date($0, strategy: .iso8601) }
            let fresh = heartbeat.map { Date.now.timeIntervalSince($0) < Double(nodeGracePeriod.components.seconds) } ?? false
            if condition?["status"]?.string == "True" && fresh {
                ready.insert(nodeName)
                continue
            }
            if condition?["status"]?.string == "True" {
                var unknown = Resources.condition("Ready", nil, reason: "NodeStatusUnknown", message: "node-agent stopped posting node status")
                unknown["lastHeartbeatTime"] = condition?["lastHeartbeatTime"] ?? .null
                if let conditions = Resources.setting(unknown, in: node["status"]?["conditions"]) {
                    _ = try await store.patch(Kinds.node, namespace: nil, name: nodeName, mergePatch: ["status": ["conditions": conditions, "printableStatus": "NotReady"]], subresource: .status)
                    logger.notice("node not ready", metadata: ["node": "\(nodeName)"])
                }
            }
            for vmi in vmis where vmi["status"]?["nodeName"]?.string == nodeName && vmi["status"]?["phase"]?.string == "Running" {
                var status: JSONValue = ["phase": "Unknown", "reason": "NodeUnresponsive"]
                status["conditions"] = Resources.setting(
                    Resources.condition("Ready", nil, reason: "NodeUnresponsive", message: "node \(nodeName) stopped posting status; the guest may still run"),
                    in: vmi["status"]?["conditions"]) ?? vmi["status"]?["conditions"]
                _ = try await store.patch(Kinds.virtualMachineInstance, namespace: namespace(vmi), name: name(vmi), mergePatch: ["status": status], subresource: .status)
            }
        }
        for node in nodes where ready.contains(node["metadata"]?["name"]?.string ?? "") && node["status"]?["printableStatus"]?.string != "Ready" {
            _ = try await store.patch(Kinds.node, namespace: nil, name: node["metadata"]?["name"]?.string ?? "", mergePatch: ["status": ["printableStatus": "Ready"]], subresource: .status)
        }
        return ready
    }

    // MARK: VirtualMachines

    private func reconcileVirtualMachine(_ vm: JSONValue, vmis: [JSONValue]) async throws(APIError) {
        let namespace = namespace(vm)
        let name = name(vm)
        let vmi = vmis.first { self.namespace($0) == namespace && self.name($0) == name }
        let phase = vmi?["status"]?["phase"]?.string ?? (vmi == nil ? nil : "Pending")
        let deleting = vmi?["metadata"]?["deletionTimestamp"] != nil
        let strategy = vm["spec"]?["runStrategy"]?.string ?? ((vm["spec"]?["running"]?.bool ?? false) ? "Always" : "Halted")
        if vm["metadata"]?["deletionTimestamp"] == nil {
            switch strategy {
            case "Always":
                if vmi == nil {
                    try await createInstance(for: vm)
                } else if (phase == "Succeeded" || phase == "Failed") && !deleting {
                    try await deleteInstance(namespace, name)
                }
            case "RerunOnFailure":
                if vmi == nil && vm["status"]?["printableStatus"]?.string != "Succeeded" {
                    try await createInstance(for: vm)
                } else if phase == "Failed" && !deleting {
                    try await deleteInstance(namespace, name)
                }
            case "Once":
                if vmi == nil && vm["status"]?["startedOnce"]?.bool != true { try await createInstance(for: vm) }
            case "Halted":
                if vmi != nil && !deleting { try await deleteInstance(namespace, name) }
            default:
                break  // Manual: start and stop are the user's; WaitAsReceiver: the receiving side of a decentralized migration.
            }
        }
        // Status, written only when it changed.
        var status = vm["status"] ?? [:]
        let printable: String
        switch (vmi, phase) {
        case (nil, _): printable = strategy == "WaitAsReceiver" ? "WaitingForReceiver" : (vm["status"]?["startedOnce"]?.bool == true && strategy == "Once" ? "Succeeded" : "Stopped")
        case (_, _) where deleting: printable = "Stopping"
        case (_, "Running"?): printable = vmi?["status"]?["migrationState"]?["completed"]?.bool == false ? "Migrating" : "Running"
        case (_, "Succeeded"?): printable = "Succeeded"
        case (_, "Failed"?): printable = "Failed"
        case (_, "Unknown"?): printable = "Unknown"
        default:
            let unschedulable = vmi?["status"]?["conditions"]?.array?.contains { $0["type"]?.string == "PodScheduled" && $0["status"]?.string == "False" } ?? false
            printable = unschedulable ? "ErrorUnschedulable" : "Starting"
        }
        status["printableStatus"] = .string(printable)
        status["ready"] = .bool(phase == "Running" && !deleting)
        status["created"] = .bool(vmi != nil)
        if phase == "Running" { status["startedOnce"] = true }
        status["conditions"] = Resources.setting(
            Resources.condition("Ready", phase == "Running" && !deleting, reason: printable), in: status["conditions"]) ?? status["conditions"]
        if status != (vm["status"] ?? [:]) {
            _ = try await store.patch(Kinds.virtualMachine, namespace: namespace, name: name, mergePatch: ["status": status], subresource: .status)
        }
    }

    private func createInstance(for vm: JSONValue) async throws(APIError) {
        let template = vm["spec"]?["template"]
        var labels = template?["metadata"]?["labels"]?.stringMap ?? [:]
        labels["kubevirt.io/vm"] = name(vm)
        let vmi: JSONValue = [
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": [
                "name": .string(name(vm)), "namespace": .string(namespace(vm)), "labels": JSONValue(labels),
                "annotations": JSONValue(template?["metadata"]?["annotations"]?.stringMap ?? [:]),
                "ownerReferences": [[
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": .string(name(vm)),
                    "uid": vm["metadata"]?["uid"] ?? "", "controller": true, "blockOwnerDeletion": true,
                ]],
                "finalizers": [.string(Resources.vmiFinalizer)],
            ],
            "spec": template?["spec"] ?? [:],
        ]
        do {
            _ = try await store.create(Kinds.virtualMachineInstance, vmi)
            _ = try await store.patch(Kinds.virtualMachineInstance, namespace: namespace(vm), name: name(vm), mergePatch: ["status": ["phase": "Pending"]], subresource: .status)
            logger.info("VMI created", metadata: ["vm": "\(namespace(vm))/\(name(vm))"])
        } catch where error.code == 409 {
            return
        }
    }

    private func deleteInstance(_ namespace: String, _ name: String) async throws(APIError) {
        do {
            _ = try await store.delete(Kinds.virtualMachineInstance, namespace: namespace, name: name, precondition: nil)
        } catch where error.code == 404 {
            return
        }
    }

    /// A deleted VMI keeps its finalizer until its node reported the domain gone (or it never reached a node, or the
    /// node is gone).
    private func releaseFinalizers(_ vmis: [JSONValue], readyNodes: Set<String>) async throws(APIError) {
        for vmi in vmis where vmi["metadata"]?["deletionTimestamp"] != nil {
            let finalizers = vmi["metadata"]?["finalizers"]?.array ?? []
            guard finalizers.contains(.string(Resources.vmiFinalizer)) else { continue }
            let phase = vmi["status"]?["phase"]?.string
            let node = vmi["status"]?["nodeName"]?.string
            guard phase == "Succeeded" || phase == "Failed" || node == nil || phase == "Pending" || !readyNodes.contains(node ?? "") else { continue }
            let remaining = finalizers.filter { $0 != .string(Resources.vmiFinalizer) }
            _ = try await store.patch(Kinds.virtualMachineInstance, namespace: namespace(vmi), name: name(vmi), mergePatch: ["metadata": ["finalizers": .array(remaining)]], subresource: .main)
        }
    }

    // MARK: Helpers

    func namespace(_ object: JSONValue) -> String { object["metadata"]?["namespace"]?.string ?? "default" }
    func name(_ object: JSONValue) -> String { object["metadata"]?["name"]?.string ?? "" }
}
