/// The kinds vmsync serves (DESIGN.md's resource table) and their schemas.
public enum Kinds {
    public static let virtualMachine = ResourceKind(
        group: "kubevirt.io", version: "v1", kind: "VirtualMachine", plural: "virtualmachines",
        singular: "virtualmachine",
        shortNames: ["vm", "vms"], namespaced: true, body: ["spec": VirtualMachineSchema.spec], requiredBody: ["spec"],
        hasStatus: true,
        columns: [
            .init(name: "AGE", path: ["metadata", "creationTimestamp"]),
            .init(name: "STATUS", path: ["status", "printableStatus"]),
            .init(name: "READY", path: ["status", "ready"]),
        ])

    public static let virtualMachineInstance = ResourceKind(
        group: "kubevirt.io", version: "v1", kind: "VirtualMachineInstance", plural: "virtualmachineinstances",
        singular: "virtualmachineinstance", shortNames: ["vmi", "vmis"], namespaced: true,
        body: ["spec": VirtualMachineSchema.instanceSpec], requiredBody: ["spec"], hasStatus: true,
        columns: [
            .init(name: "AGE", path: ["metadata", "creationTimestamp"]),
            .init(name: "PHASE", path: ["status", "phase"]),
            .init(name: "NODE", path: ["status", "nodeName"]),
            .init(name: "MIGRATION", path: ["status", "printableMigration"]),
        ])

    public static let migration = ResourceKind(
        group: "kubevirt.io", version: "v1", kind: "VirtualMachineInstanceMigration",
        plural: "virtualmachineinstancemigrations", singular: "virtualmachineinstancemigration",
        shortNames: ["vmim", "vmims"], namespaced: true,
        body: [
            "spec": .object(
                [
                    "vmiName": .string(), "addedNodeSelector": .stringMap,
                    "sendTo": .object(
                        ["migrationID": .string(), "connectURL": .string()], required: ["migrationID", "connectURL"]),
                    "receive": .object(["migrationID": .string()], required: ["migrationID"]),
                ], required: ["vmiName"])
        ], requiredBody: ["spec"], hasStatus: true,
        columns: [.init(name: "PHASE", path: ["status", "phase"]), .init(name: "VMI", path: ["spec", "vmiName"])])

    public static let dataVolume = ResourceKind(
        group: "cdi.kubevirt.io", version: "v1beta1", kind: "DataVolume", plural: "datavolumes", singular: "datavolume",
        shortNames: ["dv", "dvs"], namespaced: true,
        body: [
            "spec": .object(
                [
                    "source": .fields([
                        "blank": .marker, "http": .object(["url": .string()], required: ["url"]),
                        "pvc": .object(["name": .string(), "namespace": .string()], required: ["name"]),
                        "registry": .fields(["url": .string()]), "upload": .marker,
                    ]),
                    "storage": VirtualMachineSchema.storage, "pvc": VirtualMachineSchema.storage,
                    "preallocation": .boolean, "priorityClassName": .string(),
                ], required: ["source"])
        ], requiredBody: ["spec"], hasStatus: true,
        columns: [
            .init(name: "PHASE", path: ["status", "phase"]), .init(name: "PROGRESS", path: ["status", "progress"]),
        ])

    public static let kubeVirt = ResourceKind(
        group: "kubevirt.io", version: "v1", kind: "KubeVirt", plural: "kubevirts", singular: "kubevirt",
        shortNames: ["kv", "kvs"], namespaced: true,
        body: [
            "spec": .fields([
                "configuration": .fields([
                    "migrations": .fields([
                        "bandwidthPerMigration": .quantity,
                        "completionTimeoutPerGiB": .integer(minimum: 1, maximum: Schema.maxSeconds),
                        "progressTimeout": .integer(minimum: 1, maximum: Schema.maxSeconds),
                        "parallelMigrationsPerCluster": .integer(minimum: 1, maximum: 100_000),
                        "parallelOutboundMigrationsPerNode": .integer(minimum: 1, maximum: 100_000),
                        "allowAutoConverge": .boolean,
                        "allowPostCopy": .boolean, "unsafeMigrationOverride": .boolean, "network": .string(),
                        "disableTLS": .boolean, "matchSELinuxLevelOnMigration": .boolean,
                        // vmsync: how long a migration may wait for a fitting target, and for the target to get ready.
                        "unschedulableTimeoutSeconds": .integer(minimum: 1, maximum: Schema.maxSeconds),
                        "targetReadyTimeoutSeconds": .integer(minimum: 1, maximum: Schema.maxSeconds),
                        // vmsync: QEMU's downtime limit for the switchover (QEMU's default, 300 ms, when unset), and
                        // the limit a migration starts with, doubled per memory pass after the second up to the
                        // maximum (50 ms when unset; equal to the maximum for a fixed limit).
                        "maxDowntimeMilliseconds": .integer(minimum: 1, maximum: 3_600_000),
                        "initialDowntimeMilliseconds": .integer(minimum: 1, maximum: 3_600_000),
                        // vmsync: memory over this many tunnelled connections (QEMU multifd); one stream when unset.
                        "parallelMigrationConnections": .integer(minimum: 2, maximum: 64),
                        // vmsync: copy memory live even where the node's QEMU loses guest writes doing so (TCG
                        // guests on QEMU before 9.0 are otherwise paused for the copy).
                        "allowUnsafeLiveMemoryCopy": .boolean,
                    ]),
                    "cpuModel": .string(),
                    "developerConfiguration": .fields(["featureGates": .array(.string())]),
                    "evictionStrategy": .string(allowed: ["None", "LiveMigrate", "LiveMigrateIfPossible", "External"]),
                    // vmsync: host:port where peer clusters' nodes reach this cluster's gateway (--gateway-listen).
                    "crossClusterGateway": .string(),
                ]),
                "certificateRotateStrategy": .any, "workloadUpdateStrategy": .any, "infra": .any, "workloads": .any,
                "imagePullPolicy": .string(),
            ])
        ], requiredBody: [], hasStatus: true,
        columns: [
            .init(name: "AGE", path: ["metadata", "creationTimestamp"]),
            .init(name: "PHASE", path: ["status", "phase"]),
        ])

    public static let configMap = ResourceKind(
        group: "", version: "v1", kind: "ConfigMap", plural: "configmaps", singular: "configmap", shortNames: ["cm"],
        namespaced: true, body: ["data": .stringMap, "binaryData": .stringMap, "immutable": .boolean], requiredBody: [],
        hasStatus: false, columns: [.init(name: "AGE", path: ["metadata", "creationTimestamp"])])

    public static let secret = ResourceKind(
        group: "", version: "v1", kind: "Secret", plural: "secrets", singular: "secret", shortNames: [],
        namespaced: true,
        body: ["data": .stringMap, "stringData": .stringMap, "type": .string(), "immutable": .boolean],
        requiredBody: [], hasStatus: false,
        columns: [.init(name: "TYPE", path: ["type"]), .init(name: "AGE", path: ["metadata", "creationTimestamp"])])

    public static let node = ResourceKind(
        group: "", version: "v1", kind: "Node", plural: "nodes", singular: "node", shortNames: ["no"],
        namespaced: false,
        body: [
            "spec": .fields([
                "taints": .array(
                    .object(
                        [
                            "key": .string(), "value": .string(),
                            "effect": .string(allowed: ["NoSchedule", "PreferNoSchedule", "NoExecute"]),
                            "timeAdded": .any,
                        ], required: ["key", "effect"])),
                "unschedulable": .boolean, "podCIDR": .string(), "providerID": .string(),
            ])
        ], requiredBody: [], hasStatus: true,
        columns: [
            .init(name: "STATUS", path: ["status", "printableStatus"]),
            .init(name: "AGE", path: ["metadata", "creationTimestamp"]),
        ])

    public static let storageClass = ResourceKind(
        group: "storage.k8s.io", version: "v1", kind: "StorageClass", plural: "storageclasses",
        singular: "storageclass",
        shortNames: ["sc"], namespaced: false,
        body: [
            "provisioner": .string(), "parameters": .stringMap,
            "reclaimPolicy": .string(allowed: ["Delete", "Retain"]),
            "volumeBindingMode": .string(allowed: ["Immediate", "WaitForFirstConsumer"]),
            "allowVolumeExpansion": .boolean,
            // vmsync: the directory on every node that holds the class's images, and whether all nodes see the same one.
            "directory": .string(), "shared": .boolean,
        ], requiredBody: ["directory"], hasStatus: false,
        columns: [.init(name: "DIRECTORY", path: ["directory"]), .init(name: "SHARED", path: ["shared"])])

    public static let nodeUSBDevice = ResourceKind(
        group: "virtualization.deckhouse.io", version: "v1alpha2", kind: "NodeUSBDevice", plural: "nodeusbdevices",
        singular: "nodeusbdevice", shortNames: ["nusb"], namespaced: false,
        body: ["spec": .fields(["assignedNamespace": .string()])], requiredBody: [], hasStatus: true,
        columns: [
            .init(name: "NODE", path: ["status", "nodeName"]),
            .init(name: "NAMESPACE", path: ["spec", "assignedNamespace"]),
        ])

    public static let usbDevice = ResourceKind(
        group: "virtualization.deckhouse.io", version: "v1alpha2", kind: "USBDevice", plural: "usbdevices",
        singular: "usbdevice", shortNames: ["usb"], namespaced: true, body: ["spec": .any], requiredBody: [],
        hasStatus: true, columns: [.init(name: "NODE", path: ["status", "nodeName"])])

    /// A node agent's request to renew its certificate (Kubernetes' `certificates.k8s.io/v1`): the controller, which
    /// holds the CA key, approves a node's request for its own identity and signs it at create.
    public static let certificateSigningRequest = ResourceKind(
        group: "certificates.k8s.io", version: "v1", kind: "CertificateSigningRequest",
        plural: "certificatesigningrequests",
        singular: "certificatesigningrequest", shortNames: ["csr"], namespaced: false,
        body: [
            "spec": .object(
                [
                    "request": .string(), "signerName": .string(), "usages": .array(.string()),
                    "expirationSeconds": .integer(minimum: 600, maximum: Schema.maxSeconds), "username": .string(),
                ], required: ["request", "signerName"])
        ], requiredBody: ["spec"], hasStatus: true,
        columns: [
            .init(name: "AGE", path: ["metadata", "creationTimestamp"]),
            .init(name: "SIGNERNAME", path: ["spec", "signerName"]),
            .init(name: "REQUESTOR", path: ["spec", "username"]),
        ])

    /// Every served kind.
    public static let all: [ResourceKind] = [
        virtualMachine, virtualMachineInstance, migration, dataVolume, kubeVirt, configMap, secret, node, storageClass,
        nodeUSBDevice, usbDevice, certificateSigningRequest,
    ]

    /// The kind with this apiVersion and kind.
    public static func lookup(apiVersion: String, kind: String) -> ResourceKind? {
        all.first { $0.apiVersion == apiVersion && $0.kind == kind }
    }

    /// The kind served at `group`/`plural`.
    public static func lookup(group: String, plural: String) -> ResourceKind? {
        all.first { $0.group == group && $0.plural == plural }
    }

    /// The kind a user means by `name`: plural, singular, short name, kind, or `plural.group` (case-insensitive).
    public static func lookup(name: String) -> ResourceKind? {
        let wanted = name.lowercased()
        return all.first {
            [$0.plural, $0.singular, $0.kind.lowercased(), $0.resource].contains(wanted)
                || $0.shortNames.contains(wanted)
        }
    }
}

/// KubeVirt's VirtualMachine and VirtualMachineInstance spec, as far as vmsync models it.
enum VirtualMachineSchema {
    static let storage = Schema.fields([
        "storageClassName": .string(),
        "accessModes": .array(
            .string(allowed: ["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"])),
        "volumeMode": .string(allowed: ["Filesystem", "Block"]),
        "resources": .fields([
            "requests": .object([:], additional: .quantity), "limits": .object([:], additional: .quantity),
        ]),
    ])

    static let diskTarget = Schema.fields([
        "bus": .string(allowed: ["virtio", "sata", "scsi", "usb"]), "readonly": .boolean,
    ])

    static let instanceSpec = Schema.fields([
        "architecture": .string(),
        "domain": .object(
            [
                "cpu": Schema.cpu,
                "memory": .fields(["guest": .quantity, "hugepages": .any]),
                "resources": .fields([
                    "requests": .object([:], additional: .quantity), "limits": .object([:], additional: .quantity),
                ]),
                "devices": .fields([
                    "autoattachGraphicsDevice": .boolean, "autoattachSerialConsole": .boolean,
                    "disks": .array(
                        .object(
                            [
                                "name": .string(), "disk": diskTarget, "cdrom": diskTarget, "lun": .any,
                                "bootOrder": .integer(minimum: 1),
                                "serial": .string(), "cache": .string(),
                            ], required: ["name"])),
                    "interfaces": .array(
                        .object(
                            [
                                "name": .string(), "masquerade": .marker, "bridge": .marker, "sriov": .marker,
                                "macAddress": .string(),
                                "model": .string(), "ports": .any,
                            ], required: ["name"])),
                    "hostDevices": .array(
                        .object(["name": .string(), "deviceName": .string()], required: ["name", "deviceName"])),
                    "gpus": .array(
                        .object(["name": .string(), "deviceName": .string()], required: ["name", "deviceName"])),
                    "rng": .marker, "networkInterfaceMultiqueue": .boolean,
                ]),
                "machine": .fields(["type": .string()]),
                "firmware": .fields([
                    "uuid": .string(), "serial": .string(), "bootloader": .any,
                    "kernelBoot": .fields([
                        "kernelArgs": .string(),
                        "container": .fields(["image": .string(), "kernelPath": .string(), "initrdPath": .string()]),
                    ]),
                ]),
                "features": .any, "clock": .any,
            ], required: []),
        "networks": .array(
            .object(
                ["name": .string(), "pod": .marker, "multus": .fields(["networkName": .string()])], required: ["name"])),
        "volumes": .array(
            .object(
                [
                    "name": .string(), "dataVolume": .object(["name": .string()], required: ["name"]),
                    "persistentVolumeClaim": .object(
                        ["claimName": .string(), "readOnly": .boolean], required: ["claimName"]),
                    "containerDisk": .object(["image": .string(), "path": .string()], required: ["image"]),
                    "cloudInitNoCloud": .fields([
                        "userData": .string(), "userDataBase64": .string(), "networkData": .string(),
                    ]),
                    "emptyDisk": .object(["capacity": .quantity], required: ["capacity"]),
                ], required: ["name"])),
        "nodeSelector": .stringMap, "affinity": .any, "tolerations": .any,
        "terminationGracePeriodSeconds": .integer(minimum: 0, maximum: Schema.maxSeconds),
        "evictionStrategy": .string(),
        "hostname": .string(), "subdomain": .string(), "priorityClassName": .string(), "schedulerName": .string(),
    ])

    static let spec = Schema.fields([
        "runStrategy": .string(allowed: ["Always", "Halted", "Manual", "RerunOnFailure", "Once", "WaitAsReceiver"]),
        "running": .boolean,
        "template": .object(["metadata": .any, "spec": instanceSpec], required: ["spec"]),
        "dataVolumeTemplates": .array(.any),
        "usbDevices": .array(.object(["name": .string()], required: ["name"])),
    ])
}
