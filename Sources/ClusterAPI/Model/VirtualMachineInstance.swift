/// KubeVirt's VirtualMachineInstance: one running (or starting, or finished) guest.
public struct VirtualMachineInstance: Resource {
    public static let kind = Kinds.virtualMachineInstance

    /// `status.phase`.
    public enum Phase: String, LenientStringEnum {
        case pending = "Pending"
        case scheduling = "Scheduling"
        case scheduled = "Scheduled"
        case running = "Running"
        case succeeded = "Succeeded"
        case failed = "Failed"
        case unknown = "Unknown"
        /// The receiving side of a decentralized migration, waiting for its source.
        case waitingForSync = "WaitingForSync"
        public static let fallback = Phase.unknown

        /// Whether the guest has ended for good.
        public var isFinal: Bool { self == .succeeded || self == .failed }
    }

    public var apiVersion: String? = "kubevirt.io/v1"
    public var kind: String? = "VirtualMachineInstance"
    public var metadata: ObjectMeta
    public var spec: VirtualMachineInstanceSpec
    public var status: Status?

    public init(metadata: ObjectMeta, spec: VirtualMachineInstanceSpec, status: Status? = nil) {
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }

    /// `status`.
    public struct Status: Codable, Sendable, Hashable {
        public var phase: Phase?
        public var reason: String?
        public var nodeName: String?
        public var conditions: [Condition]?
        public var migrationState: MigrationState?
        /// How the last migration moved the VMI (KubeVirt: BlockMigration or LiveMigration) and over what (Unix, TCP…).
        public var migrationMethod: String?
        public var migrationTransport: String?
        /// KubeVirt's `StorageMigratedVolumeInfo` list (volumeName, sourcePVCInfo, destinationPVCInfo), as sent.
        public var migratedVolumes: [JSONValue]?
        /// vmsync's MIGRATION column: "Migrating", "Pending migration" or absent.
        public var printableMigration: String?
        /// The node a drain moves the VMI off.
        public var evacuationNodeName: String?
        public var volumeStatus: [VolumeStatus]?
        /// Why the VMI is in its phase, for people.
        public var message: String?
        /// The guest's network interfaces as the node plugged them in.
        public var interfaces: [InterfaceStatus]?
        /// What the node knows of the guest's operating system, as written.
        public var guestOSInfo: JSONValue?
        /// vmsync: the libvirt domain that runs the VMI on its node.
        public var launcherDomain: String?
        /// vmsync: the node's socket for the guest's serial console.
        public var serialConsole: String?

        public init(phase: Phase? = nil, migrationState: MigrationState? = nil) {
            self.phase = phase
            self.migrationState = migrationState
        }
    }

    /// One entry of `status.interfaces`.
    public struct InterfaceStatus: Codable, Sendable, Hashable {
        public var name: String?
        public var mac: String?
        public var infoSource: String?
        public var queueCount: Int64?
        public var ipAddress: String?
        public var ipAddresses: [String]?

        public init(name: String? = nil, mac: String? = nil) {
            self.name = name
            self.mac = mac
        }
    }

    /// One entry of `status.volumeStatus`: what the node made of a volume.
    public struct VolumeStatus: Codable, Sendable, Hashable {
        public var name: String
        public var phase: String?
        public var reason: String?
        public var persistentVolumeClaimInfo: ClaimInfo?

        public init(
            name: String, phase: String? = nil, reason: String? = nil, persistentVolumeClaimInfo: ClaimInfo? = nil
        ) {
            self.name = name
            self.phase = phase
            self.reason = reason
            self.persistentVolumeClaimInfo = persistentVolumeClaimInfo
        }

        /// The claim's name, size and whether its storage is shared by all nodes.
        public struct ClaimInfo: Codable, Sendable, Hashable {
            public var claimName: String?
            public var capacity: [String: JSONValue]?
            public var shared: Bool?
            /// vmsync: the StorageClass and where the image is on the node.
            public var storageClass: String?
            public var path: String?

            public init(
                claimName: String? = nil, capacity: [String: JSONValue]? = nil, shared: Bool? = nil,
                storageClass: String? = nil, path: String? = nil
            ) {
                self.claimName = claimName
                self.capacity = capacity
                self.shared = shared
                self.storageClass = storageClass
                self.path = path
            }
        }
    }

    /// The phase, `Pending` for a VMI nobody has given one yet.
    public var phase: Phase { status?.phase ?? .pending }

    /// The node the VMI is placed on.
    public var nodeName: String? { status?.nodeName }

    /// The UUID of the VMI's domain (lowercase): its firmware UUID, or else its uid. A receiving VMI of a decentralized
    /// migration is given the source's firmware UUID (the guest keeps it) before anything runs.
    public var domainUUID: String? {
        get { (spec.domain?.firmware?.uuid ?? metadata.uid)?.lowercased() }
        set {
            var domain = spec.domain ?? VirtualMachineInstanceSpec.Domain()
            var firmware = domain.firmware ?? VirtualMachineInstanceSpec.Domain.Firmware()
            firmware.uuid = newValue
            domain.firmware = firmware
            spec.domain = domain
        }
    }

    /// Whether this VMI's guest left by a decentralized migration: Succeeded with the reason only its source agent
    /// writes once libvirt says the guest has gone (`Migration.migratedAwayReason`) — a guest running elsewhere, not a
    /// stop, whatever the migration's record says meanwhile.
    public var leftByDecentralizedMigration: Bool {
        phase == .succeeded && status?.reason == Migration.migratedAwayReason
    }

    /// Memory the VMI asks for, in bytes (`Resources.requestedMemory`).
    public var requestedMemory: UInt64 {
        Resources.requestedMemory(
            guest: spec.domain?.memory?.guest, request: spec.domain?.resources?.requests?["memory"])
    }
}

/// A VMI's `spec` (and a VM template's): the parts vmsync acts on; the rest travels in the envelope.
public struct VirtualMachineInstanceSpec: Codable, Sendable, Hashable {
    public var domain: Domain?
    public var nodeSelector: [String: String]?
    public var affinity: Affinity?
    public var tolerations: [Toleration]?
    public var volumes: [Volume]?
    public var networks: [Network]?

    public init() {}

    /// The CPU model the VMI asks for: its `domain.cpu.model`, else the cluster's default (KubeVirt CR
    /// `spec.configuration.cpuModel`), else "host-model".
    public func cpuModel(clusterDefault: String? = nil) -> String {
        Self.cpuModel(asked: domain?.cpu?.model, clusterDefault: clusterDefault)
    }

    /// The rule of `cpuModel(clusterDefault:)`, for a model read from an untyped spec.
    public static func cpuModel(asked: String?, clusterDefault: String?) -> String {
        asked ?? clusterDefault ?? "host-model"
    }

    /// `spec.domain`.
    public struct Domain: Codable, Sendable, Hashable {
        public var cpu: CPU?
        public var memory: Memory?
        public var resources: Resources?
        public var devices: Devices?
        public var firmware: Firmware?

        public init() {}

        /// `domain.cpu`.
        public struct CPU: Codable, Sendable, Hashable {
            public var model: String?
            public var cores: Int64?
            public var sockets: Int64?
            public var threads: Int64?
        }

        /// `domain.firmware`.
        public struct Firmware: Codable, Sendable, Hashable {
            /// The guest's SMBIOS UUID (the domain's identity).
            public var uuid: String?
            public var serial: String?
            public var kernelBoot: KernelBoot?

            public init() {}
        }

        /// `domain.firmware.kernelBoot`: a kernel and initrd booted directly.
        public struct KernelBoot: Codable, Sendable, Hashable {
            public var kernelArgs: String?
            public var container: Container?

            public struct Container: Codable, Sendable, Hashable {
                public var image: String?
                public var kernelPath: String?
                public var initrdPath: String?
            }
        }

        /// `domain.memory`.
        public struct Memory: Codable, Sendable, Hashable {
            /// A quantity, kept as written.
            public var guest: JSONValue?
        }

        /// `domain.resources`: quantities kept as written.
        public struct Resources: Codable, Sendable, Hashable {
            public var requests: [String: JSONValue]?
            public var limits: [String: JSONValue]?
        }

        /// `domain.devices`.
        public struct Devices: Codable, Sendable, Hashable {
            public var disks: [Disk]?
            public var interfaces: [Interface]?
            public var hostDevices: [JSONValue]?
            public var gpus: [JSONValue]?
        }

        /// One disk device.
        public struct Disk: Codable, Sendable, Hashable {
            public var name: String
            public var disk: Target?
            public var cdrom: JSONValue?

            /// `disk`'s bus and whether the guest may write.
            public struct Target: Codable, Sendable, Hashable {
                public var bus: String?
                public var readonly: Bool?
            }
        }

        /// One network interface: the network it sits on (by name) and its binding.
        public struct Interface: Codable, Sendable, Hashable {
            public var name: String?
            public var masquerade: JSONValue?
            public var bridge: JSONValue?
            public var sriov: JSONValue?
            public var macAddress: String?
            public var model: String?
        }
    }

    /// `spec.affinity`: only required node affinity is acted on.
    public struct Affinity: Codable, Sendable, Hashable {
        public var nodeAffinity: NodeAffinity?

        public struct NodeAffinity: Codable, Sendable, Hashable {
            public var requiredDuringSchedulingIgnoredDuringExecution: NodeSelector?
        }

        public struct NodeSelector: Codable, Sendable, Hashable {
            public var nodeSelectorTerms: [Term]?
        }

        /// Every expression of a term must hold.
        public struct Term: Codable, Sendable, Hashable {
            public var matchExpressions: [Expression]?
        }

        public struct Expression: Codable, Sendable, Hashable {
            public var key: String
            public var `operator`: String
            public var values: [String]?

            /// Whether a node with `labels` satisfies the expression.
            public func matches(_ labels: [String: String]) -> Bool {
                let values = values ?? []
                switch self.operator {
                case "In": return labels[key].map(values.contains) ?? false
                case "NotIn": return !(labels[key].map(values.contains) ?? false)
                case "Exists": return labels[key] != nil
                case "DoesNotExist": return labels[key] == nil
                default: return false
                }
            }
        }
    }

    /// A toleration of node taints.
    public struct Toleration: Codable, Sendable, Hashable {
        public var key: String?
        public var `operator`: String?
        public var value: String?
        public var effect: String?

        /// Whether this toleration tolerates `taint` (Kubernetes' rule).
        public func tolerates(_ taint: Node.Taint) -> Bool {
            let keyMatches = key == nil || key == taint.key
            let valueMatches = self.operator == "Exists" || value == taint.value || taint.value == nil
            let effectMatches = effect == nil || effect == taint.effect
            return keyMatches && valueMatches && effectMatches
        }
    }

    /// One of `spec.networks`: the pod network, or a Multus one (which vmsync nodes refuse).
    public struct Network: Codable, Sendable, Hashable {
        public var name: String
        public var pod: JSONValue?
        public var multus: JSONValue?
    }

    /// A volume; only the sources vmsync distinguishes are modelled.
    public struct Volume: Codable, Sendable, Hashable {
        public var name: String
        public var dataVolume: DataVolumeSource?
        public var persistentVolumeClaim: ClaimSource?
        public var containerDisk: JSONValue?
        public var cloudInitNoCloud: CloudInitNoCloud?
        public var emptyDisk: EmptyDisk?

        /// A NoCloud seed's user data (plain or base64) and network configuration.
        public struct CloudInitNoCloud: Codable, Sendable, Hashable {
            public var userData: String?
            public var userDataBase64: String?
            public var networkData: String?

            public init(userData: String? = nil, userDataBase64: String? = nil, networkData: String? = nil) {
                self.userData = userData
                self.userDataBase64 = userDataBase64
                self.networkData = networkData
            }
        }

        /// A disk that lives and dies with the VMI on its node.
        public struct EmptyDisk: Codable, Sendable, Hashable {
            /// A quantity, kept as written.
            public var capacity: JSONValue?
        }

        public struct DataVolumeSource: Codable, Sendable, Hashable {
            public var name: String
        }

        public struct ClaimSource: Codable, Sendable, Hashable {
            public var claimName: String
        }

        /// The DataVolume (or claim of the same name) the volume uses.
        public var claimName: String? { dataVolume?.name ?? persistentVolumeClaim?.claimName }
    }
}
