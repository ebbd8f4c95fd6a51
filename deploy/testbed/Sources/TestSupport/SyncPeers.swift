public import Foundation

/// Python's grpcio speaking KubeVirt's Synchronize service (`deploy/testbed/peers/sync_peer.py`): the independent
/// gRPC peer of the sync endpoint's tests.
public enum PythonSyncPeer {
    /// The peer script.
    public static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../peers/sync_peer.py").standardized.path
    /// The service's .proto directory.
    public static let protoDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../../../Sources/StateMirror/Proto").standardized.path

    /// A new directory holding Python's generated message and service modules; an error naming what to install when
    /// grpcio-tools is missing.
    public static func workspace() async throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sync-peer-\(UUID().uuidString.prefix(8))"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let made = try await run(
            "/usr/bin/env",
            [
                "python3", "-m", "grpc_tools.protoc", "-I", protoDirectory, "--python_out=\(directory)",
                "--grpc_python_out=\(directory)", "synchronization.proto",
            ])
        guard made.status == 0 else {
            throw CocoaError(
                .executableLoad,
                userInfo: [
                    NSLocalizedDescriptionKey:
                        "python3 -m grpc_tools.protoc failed (pip install grpcio-tools): \(made.stderr)"
                ])
        }
        return directory
    }

    /// Runs the Python client against `address` with the calls given as JSON lines; returns one JSON answer per call.
    public static func call(
        _ calls: [String], at address: String, workspace: String, ca: String, certificate: String, key: String,
        serverName: String
    ) async throws -> ProcessResult {
        try await run(
            "/usr/bin/env",
            ["python3", script, "client", workspace, address, ca, certificate, key, serverName],
            input: calls.joined(separator: "\n") + "\n", timeout: 60)
    }
}
