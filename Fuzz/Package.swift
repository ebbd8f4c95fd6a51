// swift-tools-version: 6.0
// libFuzzer targets for every decoder of bytes that reach a daemon or the CLI from outside. The decoders' own source
// files are linked in (Sources/*/ hold symlinks into ../Sources), so the code fuzzed is the code shipped, built with
// coverage instrumentation and without the daemons' heavy dependencies. Run `bash Fuzz/run.sh [seconds]`.
import PackageDescription

let testable: [SwiftSetting] = [.unsafeFlags(["-enable-testing"])]
let harness: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]

let targets: [(name: String, dependencies: [Target.Dependency])] = [
    ("fuzz-json", ["ClusterAPI"]),
    ("fuzz-yaml", ["ClusterAPI"]),
    ("fuzz-selectors", ["ClusterAPI"]),
    ("fuzz-quantity", ["ClusterAPI"]),
    ("fuzz-tunnel", ["TLSTransport", .product(name: "NIOCore", package: "swift-nio")]),
    ("fuzz-pem", ["TLSTransport"]),
    ("fuzz-kubeconfig", ["KubeconfigReader", "ClusterAPI"]),
    ("fuzz-sync", ["SyncMessages", "ClusterAPI", .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
]

let package = Package(
    name: "vmsync-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    ],
    targets: [
        .target(name: "ClusterAPI", dependencies: [.product(name: "Yams", package: "Yams")], swiftSettings: testable),
        .target(
            name: "TLSTransport", dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: testable),
        .target(name: "KubeconfigReader", dependencies: ["ClusterAPI"], swiftSettings: testable),
        // The sync endpoint's messages: the generated code and the bounded reading of a status.
        .target(
            name: "SyncMessages",
            dependencies: ["ClusterAPI", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: testable),
    ] + targets.map { .executableTarget(name: $0.name, dependencies: $0.dependencies, swiftSettings: harness) }
)
