// swift-tools-version: 6.2
import PackageDescription

/// Settings every target shares: Swift 6 mode plus the upcoming features the house style asks for.
let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "vmsync",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "TLSTransport", targets: ["TLSTransport"]),
        .library(name: "Hypervisor", targets: ["Hypervisor"]),
        .executable(name: "syncctl", targets: ["syncctl"]),
        .executable(name: "vmsync-bench", targets: ["Benchmarks"]),
        .executable(name: "vmsync-testbed", targets: ["vmsync-testbed"]),
        .executable(name: "sync-controller", targets: ["sync-controller"]),
        .executable(name: "node-agent", targets: ["node-agent"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
    ],
    targets: [
        .target(
            name: "TLSTransport",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCertificateReloading", package: "swift-nio-extras"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        .systemLibrary(
            name: "CLibvirt",
            path: "Sources/Hypervisor/CLibvirt",
            pkgConfig: "libvirt",
            providers: [.apt(["libvirt-dev"])]
        ),
        .target(
            name: "Hypervisor",
            dependencies: [
                "CLibvirt",
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["CLibvirt"],
            swiftSettings: strictSettings
        ),
        // Resource model shared by the controller, the agents and the CLI: JSON/YAML bodies, kinds and schemas, typed
        // resources, Status. No networking.
        // The sync endpoint between clusters: KubeVirt's `kubevirt.synchronization.Synchronize` gRPC service (the
        // Swift code generated from Proto/ is committed) over TLSTransport's mutual TLS.
        .target(
            name: "StateMirror",
            dependencies: [
                "ClusterAPI",
                "TLSTransport",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["Proto"],
            swiftSettings: strictSettings
        ),
        .target(
            name: "ClusterAPI",
            dependencies: [
                .product(name: "Yams", package: "Yams")
            ],
            swiftSettings: strictSettings
        ),
        // The cluster API's HTTP client over mutual TLS (agents, syncctl, tests).
        .target(
            name: "ClusterClient",
            dependencies: [
                "ClusterAPI",
                "TLSTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        // Informers into indexed caches and rate-limited work queues: the controller's and the agents' reconcile loops.
        .target(
            name: "ControllerRuntime",
            dependencies: [
                "ClusterAPI",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        // The sync controller: store, cluster API server, reconcilers, scheduler.
        .target(
            name: "SyncController",
            dependencies: [
                "ClusterAPI",
                "ControllerRuntime",
                "StateMirror",
                "TLSTransport",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        // The node daemon: runs VMIs through the local libvirt, reports their status.
        .target(
            name: "NodeAgent",
            dependencies: [
                "ClusterAPI",
                "ClusterClient",
                "ControllerRuntime",
                "Hypervisor",
                "TLSTransport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        // `/metrics` over plain HTTP/1.1 for a daemon's `--metrics-listen`: it serves what the executable renders
        // (the executables own the Prometheus registry); no metrics backend of its own.
        .target(
            name: "MetricsServer",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "node-agent",
            dependencies: [
                "ClusterAPI",
                "ClusterClient",
                "NodeAgent",
                "TLSTransport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                "MetricsServer",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "sync-controller",
            dependencies: [
                "ClusterAPI",
                "StateMirror",
                "SyncController",
                "TLSTransport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                "MetricsServer",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "syncctl",
            dependencies: [
                .product(name: "X509", package: "swift-certificates"),
                "ClusterAPI",
                "ClusterClient",
                "TLSTransport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "Benchmarks",
            dependencies: [
                .product(name: "X509", package: "swift-certificates"),
                "ClusterAPI",
                "ClusterClient",
                "ControllerRuntime",
                "SyncController",
                "StateMirror",
                "TLSTransport",
                "Hypervisor",
                "TestBed",
                "ClusterBed",
                "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Benchmarks",
            exclude: ["README.md"],
            swiftSettings: strictSettings
        ),
        // The local test bed (deploy/testbed): the launcher, and what tests, benchmarks and the demo use to drive it.
        // posix_spawn's closefrom file action, which Swift's Glibc module does not expose (the bed's process spawners,
        // which outlive a scope or share a subreaper, where swift-subprocess does not fit).
        .target(name: "CSpawn", path: "deploy/testbed/Sources/CSpawn"),
        // Processes started and stopped by PID, certificates minted at run time: for tests, the bed and benchmarks.
        .target(
            name: "TestSupport",
            dependencies: ["CSpawn"],
            path: "deploy/testbed/Sources/TestSupport",
            swiftSettings: strictSettings
        ),
        .target(
            name: "CSubreaper",
            path: "deploy/testbed/Sources/CSubreaper"
        ),
        .target(
            name: "TestBed",
            dependencies: ["TestSupport"],
            path: "deploy/testbed/Sources/TestBed",
            swiftSettings: strictSettings
        ),
        // The bed as Swift Testing suites take it: one bed per suite, one at a time in the test process.
        .target(
            name: "BedTesting",
            dependencies: ["TestBed"],
            path: "deploy/testbed/Sources/BedTesting",
            swiftSettings: strictSettings
        ),
        // A cluster on the bed (controller, an agent per node, syncctl), for tests, benchmarks and the demo.
        .target(
            name: "ClusterBed",
            dependencies: ["ClusterAPI", "ClusterClient", "TLSTransport", "TestBed", "TestSupport"],
            path: "deploy/testbed/Sources/ClusterBed",
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "vmsync-testbed",
            dependencies: [
                "TestSupport",
                "ClusterClient",
                "CSubreaper",
                "ClusterAPI",
                "ClusterBed",
                "Hypervisor",
                "TestBed",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "deploy/testbed/Sources/vmsync-testbed",
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "TLSTransportTests",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                "TLSTransport",
                "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "ClusterClientTests",
            dependencies: [
                "ClusterAPI",
                "ClusterClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "HypervisorTests",
            dependencies: ["Hypervisor"],
            swiftSettings: strictSettings
        ),
        // Real libvirt + QEMU through the local test bed; needs root (CI runs as root).
        .testTarget(
            name: "HypervisorIntegrationTests",
            dependencies: ["Hypervisor", "BedTesting", "TestBed", "TestSupport", "ClusterAPI", "NodeAgent"],
            swiftSettings: strictSettings
        ),
        // The end-to-end suites: a cluster's daemons on the bed, real guests; root, libvirt and QEMU like the above.
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "BedTesting", "TestBed", "ClusterBed", "TestSupport", "ClusterAPI", "ClusterClient", "Hypervisor",
                "TLSTransport", "sync-controller", "node-agent", "syncctl",
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "StateMirrorTests",
            dependencies: [
                "StateMirror", "TestSupport", "ClusterAPI", "TLSTransport",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "NodeAgentTests",
            // SyncController: the cluster's KubeVirt defaults a VMI is mapped with.
            dependencies: [
                "ClusterAPI", "Hypervisor", "NodeAgent", "SyncController", "TestSupport",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "ClusterAPITests",
            dependencies: ["ClusterAPI", "TestSupport"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "SyncControllerTests",
            dependencies: [
                "ClusterAPI", "ClusterClient", "ControllerRuntime", "SyncController", "NodeAgent", "TLSTransport",
                "StateMirror", .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                "TestSupport",
                "sync-controller", "syncctl",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                // Writes a store file as an earlier schema left it (the upgrade test).
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "ControllerRuntimeTests",
            dependencies: [
                "ClusterAPI", "ControllerRuntime", "SyncController", .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "MetricsServerTests",
            dependencies: [
                "MetricsServer", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "SyncctlTests",
            dependencies: ["syncctl", "TLSTransport", "TestSupport"],
            swiftSettings: strictSettings
        ),
    ]
)
