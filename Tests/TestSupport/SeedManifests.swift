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
