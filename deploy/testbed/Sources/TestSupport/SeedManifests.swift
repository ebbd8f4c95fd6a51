/// The VirtualMachine manifest of seed 001 (KubeVirt's decentralized live migration), indentation repaired.
public let seedVirtualMachine = """
    apiVersion: kubevirt.io/v1
    kind: VirtualMachine
    metadata:
      name: example-decentralized-lm-vm
    spec:
      runStrategy: Always
      template:
        metadata:
          creationTimestamp: null
        spec:
          architecture: amd64
          domain:
            devices:
              autoattachGraphicsDevice: false
              disks:
              - disk:
                  bus: virtio
                name: disk0
              interfaces:
              - masquerade: {}
                name: default
            machine:
              type: q35
            resources:
              requests:
                memory: 128Mi
          networks:
          - name: default
            pod: {}
          volumes:
          - dataVolume:
              name: example-decentralized-lm-vm-dv
            name: disk0

    """

/// The target DataVolume of seed 001, as the seed gives it: `storageClassName` is the placeholder
/// `<other storage class>`, which a test replaces with a StorageClass it creates.
public let seedDataVolume = """
    apiVersion: cdi.kubevirt.io/v1beta1
    kind: DataVolume
    metadata:
      annotations:
        cdi.kubevirt.io/storage.usePopulator: "true"
      name: example-decentralized-lm-vm-dv
    spec:
      source:
        blank: {}
      storage:
        storageClassName: <other storage class>
        resources:
          requests:
            storage: 10Gi

    """
