import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import TestSupport
import Testing

@testable import TLSTransport

/// `MutualTLS` as a framework that takes NIOSSL configuration uses it (as grpc-swift's NIO transport will): a plain
/// NIOSSL server and client built from `serverConfiguration()` / `clientConfiguration()` and the verification
/// callback, against openssl's s_client and s_server.
@Suite("Mutual TLS as a reusable value (NIOSSL configuration, reloader, verification callback)")
struct MutualTLSTests {
    /// Echoes what it reads, then closes (so s_client, holding on after its input ends, exits).
    final class Echo: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let channel = context.channel
            context.writeAndFlush(data).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    /// A NIOSSL echo server on 127.0.0.1 that takes its TLS from `tls` alone; `verdicts` collects each verification.
    static func server(_ tls: MutualTLS, verdicts: NIOLockedValueBox<[Result<PeerIdentity, TransportError>]>)
        async throws
        -> any Channel
    {
        let context = try NIOSSLContext(configuration: tls.serverConfiguration())
        let callback = tls.verificationCallback(for: .client) { verdict in
            verdicts.withLockedValue { $0.append(verdict) }
        }
        return try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        NIOSSLServerHandler(context: context, customVerificationCallbackWithMetadata: callback), Echo())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    /// openssl s_client with `files` sending "ping": what came back, and what s_client said.
    static func sClient(port: Int, _ files: (certificate: String, key: String), bundle: String) async throws
        -> (echo: String, output: String)
    {
        let result = try await run(
            opensslPath,
            [
                "s_client", "-connect", "127.0.0.1:\(port)", "-cert", files.certificate, "-key", files.key, "-CAfile",
                bundle,
                "-verify_return_error", "-ign_eof",
            ],
            input: "vmsync-echo-ping\n", timeout: 20)
        // (s_client's own output may run into the echo on one line.)
        let echoed = result.stdout.contains("vmsync-echo-ping") ? "ping" : ""
        return (echoed, result.stdout + result.stderr)
    }

    static func files(_ key: CertifiedKey, _ name: String, in directory: TemporaryDirectory) throws -> (
        certificate: String, key: String
    ) {
        (
            try directory.write(try key.certificatePEM, to: "\(name).pem"),
            try directory.write(try key.privateKeyPEM, to: "\(name)-key.pem")
        )
    }

    @Test(
        "server: the role policy and the chain decide, with the reason; a reloaded identity is presented and a reloaded bundle trusted at the next handshake, an imported CA only for sync"
    )
    func server() async throws {
        let alpha = try TestPKI.authority("alpha")
        let beta = try TestPKI.authority("beta")
        let directory = try TemporaryDirectory()
        let provider = try TestPKI.provider(alpha, role: .controller, name: "srv")
        let tls = MutualTLS(provider: provider, policy: PeerPolicy(allowedRoles: [.node, .syncClient]))
        let verdicts = NIOLockedValueBox<[Result<PeerIdentity, TransportError>]>([])
        let server = try await Self.server(tls, verdicts: verdicts)
        defer { server.close(promise: nil) }
        let port = try #require(server.localAddress?.port)
        let bundle = try directory.write(try TrustBundle([alpha.certificate, beta.certificate]).pem, to: "bundle.pem")
        func last() -> Result<PeerIdentity, TransportError>? { verdicts.withLockedValue { $0.last } }

        let node = try Self.files(try alpha.issue(LeafRequest(role: .node, name: "cli")), "node", in: directory)
        var answer = try await Self.sClient(port: port, node, bundle: bundle)
        #expect(answer.echo == "ping", "\(answer.output)")
        #expect(answer.output.contains("CN = srv") || answer.output.contains("CN=srv"), "\(answer.output)")
        #expect(try last()?.get().name == "cli")

        let user = try Self.files(try alpha.issue(LeafRequest(role: .user, name: "alice")), "user", in: directory)
        answer = try await Self.sClient(port: port, user, bundle: bundle)
        #expect(answer.echo.isEmpty, "\(answer.output)")
        #expect(
            last().map { if case .failure(let error) = $0 { error.code == .roleNotAllowed } else { false } } == true,
            "\(String(describing: last()))")

        let betaSync = try Self.files(
            try beta.issue(LeafRequest(role: .syncClient, name: "-")), "beta-sync", in: directory)
        answer = try await Self.sClient(port: port, betaSync, bundle: bundle)
        #expect(answer.echo.isEmpty, "beta is not trusted yet: \(answer.output)")
        #expect(
            last().map { if case .failure(let error) = $0 { error.code == .untrustedCertificate } else { false } }
                == true, "\(String(describing: last()))")

        // Reloaded: a new identity, and beta's CA imported — trusted for sync only.
        try provider.reload(
            identity: try alpha.issue(LeafRequest(role: .controller, name: "srv2", ipAddresses: ["127.0.0.1"])),
            trust: TrustBundle([alpha.certificate, beta.certificate]))
        answer = try await Self.sClient(port: port, betaSync, bundle: bundle)
        #expect(answer.echo == "ping", "\(answer.output)")
        #expect(
            answer.output.contains("CN = srv2") || answer.output.contains("CN=srv2"),
            "the reloaded identity: \(answer.output)")
        #expect(try last()?.get().imported == true)
        let betaNode = try Self.files(try beta.issue(LeafRequest(role: .node, name: "b1")), "beta-node", in: directory)
        answer = try await Self.sClient(port: port, betaNode, bundle: bundle)
        #expect(answer.echo.isEmpty, "\(answer.output)")
        #expect(
            last().map {
                if case .failure(let error) = $0 {
                    error.code == .roleNotAllowed && error.message.contains("imported")
                } else {
                    false
                }
            } == true, "\(String(describing: last()))")
    }

    /// Connects to 127.0.0.1:`port` with `tls`, sends "hello" and reads the answer line.
    static func exchange(port: Int, _ tls: MutualTLS) async throws -> String {
        let context = try NIOSSLContext(configuration: tls.clientConfiguration())
        let callback = tls.verificationCallback(for: .server)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        try NIOSSLClientHandler(
                            context: context, serverHostname: nil, customVerificationCallbackWithMetadata: callback))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: "hello\n"))
            var text = ""
            for try await chunk in inbound {
                text += String(buffer: chunk)
                if text.contains("\n") { break }
            }
            return text
        }
    }

    @Test(
        "client: openssl s_server's node certificate is accepted where the policy allows nodes and refused where it does not"
    )
    func client() async throws {
        let alpha = try TestPKI.authority("alpha")
        let directory = try TemporaryDirectory()
        let serverFiles = try Self.files(
            try alpha.issue(LeafRequest(role: .node, name: "srv", ipAddresses: ["127.0.0.1"])), "srv", in: directory)
        let bundle = try directory.write(try TrustBundle([alpha.certificate]).pem, to: "bundle.pem")
        let port = try freePort()
        let server = try ChildProcess(
            opensslPath,
            [
                "s_server", "-accept", "127.0.0.1:\(port)", "-cert", serverFiles.certificate, "-key", serverFiles.key,
                "-CAfile", bundle,
                "-Verify", "1", "-verify_return_error", "-rev",
            ])
        #expect(await eventually { isListening(port: port) })
        let provider = try TestPKI.provider(alpha, role: .user, name: "alice")
        #expect(
            try await Self.exchange(
                port: port, MutualTLS(provider: provider, policy: PeerPolicy(allowedRoles: [.node]))) == "olleh\n")
        await #expect(throws: (any Error).self) {
            try await Self.exchange(
                port: port, MutualTLS(provider: provider, policy: PeerPolicy(allowedRoles: [.syncServer])))
        }
        let output = await server.stop()
        #expect(output.contains("CN = alice"), "s_server saw our certificate: \(output)")
    }
}
