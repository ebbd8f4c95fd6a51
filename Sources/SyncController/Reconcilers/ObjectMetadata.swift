import ClusterAPI

/// A served kind as a type, so that one generic informer can watch any kind.
protocol KindMarker: Sendable {
    static var kind: ResourceKind { get }
}

/// Only the metadata of an object of `Marker.kind`: what a controller concerned with every kind alike (the garbage
/// collector) keeps of each object, whether or not vmsync models the kind.
struct ObjectMetadata<Marker: KindMarker>: Resource {
    static var kind: ResourceKind { Marker.kind }
    var metadata: ObjectMeta

    init(metadata: ObjectMeta) {
        self.metadata = metadata
    }
}

/// The served kinds as `KindMarker`s (`Kinds.all`, one marker each).
enum KindMarkers {
    enum VirtualMachine: KindMarker { static var kind: ResourceKind { Kinds.virtualMachine } }
    enum VirtualMachineInstance: KindMarker { static var kind: ResourceKind { Kinds.virtualMachineInstance } }
    enum Migration: KindMarker { static var kind: ResourceKind { Kinds.migration } }
    enum DataVolume: KindMarker { static var kind: ResourceKind { Kinds.dataVolume } }
    enum KubeVirt: KindMarker { static var kind: ResourceKind { Kinds.kubeVirt } }
    enum ConfigMap: KindMarker { static var kind: ResourceKind { Kinds.configMap } }
    enum Secret: KindMarker { static var kind: ResourceKind { Kinds.secret } }
    enum Node: KindMarker { static var kind: ResourceKind { Kinds.node } }
    enum StorageClass: KindMarker { static var kind: ResourceKind { Kinds.storageClass } }
    enum NodeUSBDevice: KindMarker { static var kind: ResourceKind { Kinds.nodeUSBDevice } }
    enum USBDevice: KindMarker { static var kind: ResourceKind { Kinds.usbDevice } }
    enum CertificateSigningRequest: KindMarker { static var kind: ResourceKind { Kinds.certificateSigningRequest } }

    /// Every marker, in `Kinds.all`'s order (a test holds the two lists equal).
    static let all: [any KindMarker.Type] = [
        VirtualMachine.self, VirtualMachineInstance.self, Migration.self, DataVolume.self, KubeVirt.self,
        ConfigMap.self,
        Secret.self, Node.self, StorageClass.self, NodeUSBDevice.self, USBDevice.self, CertificateSigningRequest.self,
    ]
}
