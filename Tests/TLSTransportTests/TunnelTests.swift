import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import TestSupport
import Testing

@testable import TLSTransport

@Suite("Byte tunnels over mutual TLS")
struct TunnelTests {
    let channelName = "migration/3f2a9c/memory"

    struct Bed {
        let alpha: CertificateAuthority
        let exitProvider: TLSContextProvider
        let entryProvider: TLSContextProvider
        let exit: TunnelExit
        let exitEvents = EventLog()

        init(channel: String, target: Endpoint, requestTimeout: TimeAmount = .seconds(10)) async throws {
            alpha = try TestPKI.authority("alpha")
            exitProvider = try TestPKI.provider(alpha, role: .node, name: "target-node")
            entryProvider = try TestPKI.provider(alpha, role: .node, name: "source-node")
            let routes = TunnelRoutingTable()
            try routes.allow(channel: channel, to: target, peers: PeerPolicy(allowedRoles: [.node]))
            let log = exitEvents
            exit = try await TunnelExit.start(
                on: .tcp(host: "127.0.0.1", port: 0),
                provider: exitProvider,
                peers: PeerPolicy(allowedRoles: [.node, .controller]),
                routes: routes,
                requestTimeout: requestTimeout,
                onEvent: log.append
            )
        }

        func entry(
            listening local: Endpoint = .tcp(host: "127.0.0.1", port: 0),
            channel: String,
            remote: Endpoint? = nil,
            provider: TLSContextProvider? = nil,
            events: EventLog = EventLog()
        ) async throws -> TunnelEntry {
            try await TunnelEntry.start(
                listeningOn: local,
                remote: remote ?? exit.endpoint,
                channel: channel,
                provider: provider ?? entryProvider,
                exitPolicy: PeerPolicy(allowedRoles: [.node]),
                onEvent: events.append
            )
        }
    }

    @Test("1 GiB crosses a unix-socket-to-TCP tunnel intact, and half-close carries the answer back")
    func gigabyte() async throws {
        let sink = try DigestSink()
        defer { sink.close() }
        let bed = try await Bed(channel: channelName, target: sink.endpoint)
        let directory = try TemporaryDirectory()
        let entry = try await bed.entry(listening: .unix(path: directory.file("tunnel.sock")), channel: channelName)
        let total = 1 << 30

        async let received = sink.serveOne()
        let (sent, answer) = try await exchangeStream(with: entry.endpoint, total: total, seed: 0x5eed)
        let (count, digest) = try await received
        #expect(count == total)
        #expect(digest == sent)
        #expect(answer == sent, "the sink's digest must come back after the client's half-close")
        #expect(await eventually { entry.openConnections == 0 && bed.exit.openConnections == 0 })
        #expect(bed.exitEvents.openedPeers.map(\.name) == ["source-node"])
        await entry.close()
        await bed.exit.close()
    }

    @Test("stream threads run at the nice value asked for, carry a tunnel, and leave the rest of the process as it was")
    func niceStreamThreads() async throws {
        let before = StreamThreads.currentNice()
        let threads = try await StreamThreads.start(nice: 10)
        #expect(await threads.nice() == 10)
        #expect(StreamThreads.currentNice() == before, "only the stream threads are reniced")
        let plain = try await StreamThreads.start(nice: 0)
        #expect(await plain.nice() == before)
        await plain.shutdown()

        let sink = try DigestSink()
        defer { sink.close() }
        let alpha = try TestPKI.authority("alpha")
        let routes = TunnelRoutingTable()
        try routes.allow(channel: channelName, to: sink.endpoint, peers: PeerPolicy(allowedRoles: [.node]))
        let exit = try await TunnelExit.start(
            on: .tcp(host: "127.0.0.1", port: 0),
            provider: try TestPKI.provider(alpha, role: .node, name: "target-node"),
            peers: PeerPolicy(allowedRoles: [.node]), routes: routes, group: threads.group)
        let entry = try await TunnelEntry.start(
            listeningOn: .tcp(host: "127.0.0.1", port: 0), remote: exit.endpoint, channel: channelName,
            provider: try TestPKI.provider(alpha, role: .node, name: "source-node"),
            exitPolicy: PeerPolicy(allowedRoles: [.node]),
            group: threads.group)
        async let received = sink.serveOne()
        let sent = try await exchangeStream(with: entry.endpoint, total: 32 << 20, seed: 11).sent
        let (count, digest) = try await received
        #expect(count == 32 << 20 && digest == sent)
        await entry.close()
        await exit.close()
        await threads.shutdown()
    }

    @Test(
        "a spare connection is dialled before any client and carries the first one; the next dials its own; an unused spare closes with its entry"
    )
    func spareConnection() async throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("target.sock")
        let listener = try BlockingSocket.listen(unixPath: path)
        defer { listener.close() }
        let bed = try await Bed(channel: channelName, target: .unix(path: path))
        let entry = try await TunnelEntry.start(
            listeningOn: .tcp(host: "127.0.0.1", port: 0), remote: bed.exit.endpoint, channel: channelName,
            provider: bed.entryProvider,
            exitPolicy: PeerPolicy(allowedRoles: [.node]), spareConnections: 1)
        // The spare's TLS connection reaches the exit with no client yet (no channel is opened for it).
        #expect(await eventually { bed.exit.openConnections == 1 }, "the spare is dialled at once")
        #expect(bed.exitEvents.openedPeers.isEmpty)
        for round in 0..<2 {
            let (count, digest, sent, answer) = try await exchange(
                through: entry.endpoint, target: listener, total: 4 << 20, seed: UInt64(round))
            #expect(count == 4 << 20 && digest == sent && answer == sent, "client \(round + 1)")
        }
        #expect(bed.exitEvents.openedPeers.count == 2)
        #expect(await eventually { bed.exit.openConnections == 0 && entry.openConnections == 0 })
        await entry.close()

        // A spare nobody used ends with its entry.
        let unused = try await TunnelEntry.start(
            listeningOn: .tcp(host: "127.0.0.1", port: 0), remote: bed.exit.endpoint, channel: channelName,
            provider: bed.entryProvider,
            exitPolicy: PeerPolicy(allowedRoles: [.node]), spareConnections: 1)
        #expect(await eventually { bed.exit.openConnections == 1 })
        await unused.close()
        #expect(await eventually { bed.exit.openConnections == 0 }, "the unused spare was closed")
        await bed.exit.close()
    }

    /// A tunnel bed whose channel goes to `listener` (on `port`), and one connection through it that has carried
    /// "hello" to the target: the client's and the target's sockets, both sides counted as carrying the channel.
    func carriedConnection(to listener: BlockingSocket, port: Int) async throws
        -> (Bed, TunnelEntry, BlockingSocket, BlockingSocket)
    {
        let bed = try await Bed(channel: channelName, target: .tcp(host: "127.0.0.1", port: port))
        let entry = try await bed.entry(channel: channelName)
        // Blocking socket work runs on threads of its own, never on the cooperative pool.
        let (client, target, greeting) = try await onThread { () -> (BlockingSocket, BlockingSocket, [UInt8]) in
            let client = try BlockingSocket.connect(entry.endpoint)
            try client.write(Array("hello".utf8))
            let target = try listener.accept()
            target.setReceiveTimeout(seconds: 5)
            var buffer = [UInt8](repeating: 0, count: 5)
            let read = try buffer.withUnsafeMutableBytes { try target.read(into: $0) }
            return (client, target, Array(buffer.prefix(read)))
        }
        #expect(greeting == Array("hello".utf8))
        #expect(
            await eventually { bed.exit.routes.connections(carrying: channelName) == 2 },
            "the tunnel side and the target side")
        return (bed, entry, client, target)
    }

    @Test("withdrawing a channel's route closes the connections that carry it, both sides; a new one is refused")
    func withdrawnRoute() async throws {
        let (listener, port) = try BlockingSocket.listen()
        defer { listener.close() }
        let (bed, entry, client, target) = try await carriedConnection(to: listener, port: port)
        bed.exit.routes.remove(channel: channelName)
        let ends = try await onThread { () -> ([UInt8], [UInt8]) in
            client.setReceiveTimeout(seconds: 5)
            return (target.readOutcome().bytes, client.readOutcome().bytes)
        }
        #expect(ends.0.isEmpty, "the target side was closed")
        #expect(ends.1.isEmpty, "and so was the client's, through the tunnel")
        #expect(bed.exit.routes.connections(carrying: channelName) == 0)
        // A new connection on the withdrawn channel is refused (the entry closes it).
        let refused = try await onThread { () -> [UInt8] in
            let again = try BlockingSocket.connect(entry.endpoint)
            defer { again.close() }
            again.setReceiveTimeout(seconds: 5)
            try? again.write(Array("again".utf8))
            return again.readOutcome().bytes
        }
        #expect(refused.isEmpty)
        client.close()
        target.close()
        await entry.close()
        await bed.exit.close()
    }

    @Test("a retired route (closingOpen: false) refuses new connections and leaves the open one carrying data")
    func retiredRoute() async throws {
        let (listener, port) = try BlockingSocket.listen()
        defer { listener.close() }
        let (bed, entry, client, target) = try await carriedConnection(to: listener, port: port)
        bed.exit.routes.remove(channel: channelName, closingOpen: false)
        // The open connection still carries both ways.
        let echoed = try await onThread { () -> [UInt8] in
            try client.write(Array("more".utf8))
            var buffer = [UInt8](repeating: 0, count: 4)
            let read = try buffer.withUnsafeMutableBytes { try target.read(into: $0) }
            try target.write(Array("back".utf8))
            client.setReceiveTimeout(seconds: 5)
            var answer = [UInt8](repeating: 0, count: 4)
            let got = try answer.withUnsafeMutableBytes { try client.read(into: $0) }
            return Array(buffer.prefix(read)) + Array(answer.prefix(got))
        }
        #expect(echoed == Array("moreback".utf8))
        // A new one is refused.
        let refused = try await onThread { () -> [UInt8] in
            let again = try BlockingSocket.connect(entry.endpoint)
            defer { again.close() }
            again.setReceiveTimeout(seconds: 5)
            try? again.write(Array("again".utf8))
            return again.readOutcome().bytes
        }
        #expect(refused.isEmpty)
        client.close()
        target.close()
        await entry.close()
        await bed.exit.close()
    }

    @Test("a unix-socket target (TCP entry to unix target) carries data both ways")
    func unixTarget() async throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("target.sock")
        let listener = try BlockingSocket.listen(unixPath: path)
        defer { listener.close() }
        let bed = try await Bed(channel: channelName, target: .unix(path: path))
        let entry = try await bed.entry(channel: channelName)
        let (count, digest, sent, answer) = try await exchange(
            through: entry.endpoint, target: listener, total: 32 << 20, seed: 3)
        #expect(count == 32 << 20)
        #expect(digest == sent && answer == sent)
        await entry.close()
        await bed.exit.close()
    }

    @Test("backpressure: a target that stops reading stalls the client instead of filling memory")
    func backpressure() async throws {
        let (listener, port) = try BlockingSocket.listen()
        defer { listener.close() }
        let bed = try await Bed(channel: channelName, target: .tcp(host: "127.0.0.1", port: port))
        let entry = try await bed.entry(channel: channelName)
        let target = Task.detached { try? listener.accept() }
        let written = try await onThread { () -> Int in
            let socket = try BlockingSocket.connect(entry.endpoint)
            defer { socket.close() }
            socket.setSendTimeout(seconds: 2)
            var total = 0
            let chunk = [UInt8](repeating: 7, count: 1 << 16)
            // Until a send has blocked for 2 s; a tunnel without backpressure would take all 1 GiB.
            while total < 1 << 30, (try? socket.write(chunk)) != nil {
                total += chunk.count
            }
            return total
        }
        let stuck = await target.value
        // Kernel buffers on four sockets plus TLS buffers hold tens of MiB at most.
        #expect(written < 96 << 20, "\(written >> 20) MiB went in before the client stalled")
        #expect(written > 0)
        stuck?.close()
        await entry.close()
        await bed.exit.close()
    }

    enum Vanishing: String, CaseIterable, Sendable {
        case client, target, network
    }

    @Test(
        "when the client, the target or the link vanishes mid-stream, both sides tear down without leaking sockets",
        arguments: Vanishing.allCases)
    func vanishing(_ who: Vanishing) async throws {
        let sink = try DigestSink()
        defer { sink.close() }
        let bed = try await Bed(channel: channelName, target: sink.endpoint)
        guard case .tcp(_, let exitPort) = bed.exit.endpoint else { return }
        let relay = try CuttableRelay(to: bed.exit.endpoint)
        let entry = try await bed.entry(channel: channelName, remote: relay.endpoint)
        guard case .tcp(_, let entryPort) = entry.endpoint else { return }
        let client = try BlockingSocket.connect(entry.endpoint)
        // A tunnel that neither carries nor breaks fails the test instead of hanging it.
        client.setSendTimeout(seconds: 15)
        let clientStops = NIOLockedValueBox(false)

        async let served: (count: Int, digest: [UInt8])? = try? sink.serveOne()
        async let writer: Void = try onThread {
            // Writes until the tunnel breaks (4 GiB would take far longer than the test) or the client "dies".
            _ = try? sendStream(on: client, total: 4 << 30, seed: 7, chunk: 1 << 16) {
                clientStops.withLockedValue { $0 }
            }
            if clientStops.withLockedValue({ $0 }) { client.abort() }
        }
        #expect(await eventually { bed.exit.openConnections == 2 && entry.openConnections == 2 })
        let ports: Set<Int> = [entryPort, exitPort, sink.port, relay.port]
        // The leak check sees the live tunnel's sockets (entry, exit and target sides), so it can fail.
        #expect(openSockets(onPorts: ports).count >= 6, "\(openSockets(onPorts: ports))")
        try await Task.sleep(for: .milliseconds(300))
        switch who {
        case .client: clientStops.withLockedValue { $0 = true }
        case .target: sink.abortConnection()
        case .network: relay.cut()
        }
        try await writer
        let result = await served
        #expect(result?.count != 4 << 30, "the target must not see a complete stream")
        #expect(
            await eventually { entry.openConnections == 0 && bed.exit.openConnections == 0 },
            "entry \(entry.openConnections), exit \(bed.exit.openConnections)")
        if who != .client { client.close() }
        relay.cut()
        #expect(
            await eventually { openSockets(onPorts: ports).isEmpty },
            "\(openSockets(onPorts: ports)) entry \(entryPort) exit \(exitPort) sink \(sink.port) relay \(relay.port)")
        await entry.close()
        await bed.exit.close()
    }

    @Test(
        "connections reach the target in the order the client made them (QEMU's parallel migration takes the first as its main stream)"
    )
    func connectionOrder() async throws {
        let (listener, port) = try BlockingSocket.listen()
        defer { listener.close() }
        let bed = try await Bed(channel: channelName, target: .tcp(host: "127.0.0.1", port: port))
        let entry = try await bed.entry(channel: channelName)
        let count = 8
        // The target accepts and reads each connection's id byte, in accept order.
        async let order: [UInt8] = onThread {
            var ids: [UInt8] = []
            var accepted: [BlockingSocket] = []
            for _ in 0..<count {
                let connection = try listener.accept()
                accepted.append(connection)
                var byte = [UInt8](repeating: 0, count: 1)
                guard try byte.withUnsafeMutableBytes({ try connection.read(into: $0) }) == 1 else {
                    throw SocketError(description: "no id")
                }
                ids.append(byte[0])
            }
            accepted.forEach { $0.close() }
            return ids
        }
        // The client opens them back to back, each sending its id at once.
        let clients = try await onThread {
            try (0..<count).map { index -> BlockingSocket in
                let socket = try BlockingSocket.connect(entry.endpoint)
                try socket.write([UInt8(index)])
                return socket
            }
        }
        let seen = try await order
        #expect(seen == (0..<count).map(UInt8.init), "the target saw \(seen)")
        clients.forEach { $0.close() }
        await entry.close()
        await bed.exit.close()
    }

    @Test(
        "a gateway carries a channel on to the next exit (the same channel, its own identity): data intact both ways, and the next hop's refusal travels back"
    )
    func relayedChannel() async throws {
        let sink = try DigestSink()
        defer { sink.close() }
        let bed = try await Bed(channel: "unused/x", target: sink.endpoint)
        // The node's exit admits the source node itself and the cluster's gateway (the controller) on the channel.
        try bed.exit.routes.allow(
            channel: channelName, to: sink.endpoint,
            anyOf: [
                PeerPolicy(allowedRoles: [.node], allowedNames: ["elsewhere"]), PeerPolicy(allowedRoles: [.controller]),
            ])
        let gatewayProvider = try TestPKI.provider(bed.alpha, role: .controller, name: "controller")
        let nodeExit = bed.exit.endpoint
        let gatewayEvents = EventLog()
        let gateway = try await TunnelExit.start(
            on: .tcp(host: "127.0.0.1", port: 0), provider: gatewayProvider, peers: PeerPolicy(allowedRoles: [.node]),
            routes: TunnelRoutingTable { peer, channel in
                guard peer.name == "source-node" else { return .refuse("not the source node") }
                return .relay(
                    TunnelHop(
                        remote: nodeExit, provider: gatewayProvider,
                        exitPolicy: PeerPolicy(allowedRoles: [.node], allowedNames: ["target-node"])))
            }, onEvent: gatewayEvents.append)
        let entry = try await TunnelEntry.start(
            listeningOn: .tcp(host: "127.0.0.1", port: 0), remote: gateway.endpoint, channel: channelName,
            provider: bed.entryProvider, exitPolicy: PeerPolicy(allowedRoles: [.controller]))
        let total = 64 << 20
        async let received = sink.serveOne()
        let (sent, answer) = try await exchangeStream(with: entry.endpoint, total: total, seed: 0x6a7e)
        let (count, digest) = try await received
        #expect(count == total)
        #expect(digest == sent)
        #expect(answer == sent, "the sink's answer comes back through both hops")
        #expect(gatewayEvents.openedPeers.map(\.name) == ["source-node"])
        #expect(bed.exitEvents.openedPeers.map(\.name) == ["controller"], "the node's exit sees the gateway")
        #expect(await eventually { entry.openConnections == 0 && gateway.openConnections == 0 })

        // A channel the node's exit does not serve: its reason reaches the source through the gateway.
        let events = EventLog()
        let other = try await TunnelEntry.start(
            listeningOn: .tcp(host: "127.0.0.1", port: 0), remote: gateway.endpoint, channel: "migration/gone/memory",
            provider: bed.entryProvider, exitPolicy: PeerPolicy(allowedRoles: [.controller]), onEvent: events.append)
        let outcome = try await onThread {
            let socket = try BlockingSocket.connect(other.endpoint)
            defer { socket.close() }
            socket.setReceiveTimeout(seconds: 10)
            return socket.readOutcome()
        }
        #expect(outcome.bytes.isEmpty)
        #expect(await eventually { events.refusals.count == 1 })
        #expect(events.refusals.first?.message.contains("could not be carried on") == true, "\(events.refusals)")
        #expect(events.refusals.first?.message.contains("is not served here") == true, "\(events.refusals)")
        await other.close()
        await entry.close()
        await gateway.close()
        await bed.exit.close()
    }

    @Test(
        "a next hop that completes its handshake but never answers the channel request: the gateway gives up within its request time and refuses the channel, keeping nothing open"
    )
    func silentNextHop() async throws {
        let alpha = try TestPKI.authority("alpha")
        let nodeProvider = try TestPKI.provider(alpha, role: .node, name: "target-node")
        let silent = try await MutualTLSServer.start(
            on: .tcp(host: "127.0.0.1", port: 0), provider: nodeProvider,
            policy: PeerPolicy(allowedRoles: [.controller])
        ) { channel, _ in channel.eventLoop.makeSucceededVoidFuture() }
        let gatewayProvider = try TestPKI.provider(alpha, role: .controller, name: "controller")
        let next = silent.endpoint
        let gateway = try await TunnelExit.start(
            on: .tcp(host: "127.0.0.1", port: 0), provider: gatewayProvider, peers: PeerPolicy(allowedRoles: [.node]),
            routes: TunnelRoutingTable { _, _ in
                .relay(
                    TunnelHop(
                        remote: next, provider: gatewayProvider,
                        exitPolicy: PeerPolicy(allowedRoles: [.node], allowedNames: ["target-node"])))
            }, requestTimeout: .seconds(1))
        let events = EventLog()
        let entry = try await TunnelEntry.start(
            listeningOn: .tcp(host: "127.0.0.1", port: 0), remote: gateway.endpoint, channel: channelName,
            provider: try TestPKI.provider(alpha, role: .node, name: "source-node"),
            exitPolicy: PeerPolicy(allowedRoles: [.controller]), onEvent: events.append)
        let started = Date()
        let outcome = try await onThread {
            let socket = try BlockingSocket.connect(entry.endpoint)
            defer { socket.close() }
            socket.setReceiveTimeout(seconds: 20)
            return socket.readOutcome()
        }
        #expect(outcome.bytes.isEmpty)
        #expect(Date().timeIntervalSince(started) < 10, "refused within the gateway's request time, not left hanging")
        #expect(await eventually { events.refusals.count == 1 })
        #expect(events.refusals.first?.message.contains("could not be carried on") == true, "\(events.refusals)")
        #expect(await eventually { gateway.openConnections == 0 }, "the silent hop's connection is closed too")
        await entry.close()
        await gateway.close()
        await silent.close()
    }

    @Test("channels that are not served, or not for this peer, are refused with the reason")
    func refusedChannels() async throws {
        let sink = try DigestSink()
        defer { sink.close() }
        let bed = try await Bed(channel: channelName, target: sink.endpoint)
        try bed.exit.routes.allow(
            channel: "usb/dev-1", to: sink.endpoint, peers: PeerPolicy(allowedRoles: [.controller]))

        for (channel, expected) in [
            ("migration/other/memory", "is not served here"), ("usb/dev-1", "is not authorized"),
        ] {
            let events = EventLog()
            let entry = try await bed.entry(channel: channel, events: events)
            let outcome = try await onThread {
                let socket = try BlockingSocket.connect(entry.endpoint)
                defer { socket.close() }
                socket.setReceiveTimeout(seconds: 10)
                return socket.readOutcome()
            }
            #expect(outcome.bytes.isEmpty)
            #expect(outcome.reset, "a refused channel must reach the client as a reset, not as an empty stream")
            #expect(await eventually { events.refusals.count == 1 })
            #expect(events.refusals.first?.code == .channelRefused)
            #expect(events.refusals.first?.message.contains(expected) == true, "\(events.refusals)")
            await entry.close()
        }
        // An unregistered route stops being served.
        bed.exit.routes.remove(channel: "usb/dev-1")
        #expect(bed.exit.routes.channels == [channelName])
        #expect(bed.exitEvents.refusals.map(\.code) == [.channelRefused, .channelRefused])
        await bed.exit.close()
    }

    @Test(
        "a node of an imported cluster opens only the channels of a migration paired with its cluster; unscoped channels stay this cluster's"
    )
    func pairedChannels() throws {
        let beta = try TestPKI.authority("beta")
        let alpha = try TestPKI.authority("alpha")
        let routes = TunnelRoutingTable()
        let target = Endpoint.unix(path: "/tmp/none")
        try routes.allow(
            channel: "migration/x/memory", to: target,
            peers: PeerPolicy(allowedRoles: [.node], allowedNames: ["b1"], cluster: "beta"))
        try routes.allow(
            channel: "migration/y/memory", to: target, peers: PeerPolicy(allowedRoles: [.node], allowedNames: ["b1"]))
        let betaNode = PeerIdentity(
            certificate: try beta.issue(LeafRequest(role: .node, name: "b1")).certificate, imported: true)
        let ownNode = PeerIdentity(certificate: try alpha.issue(LeafRequest(role: .node, name: "b1")).certificate)
        func forwarded(_ peer: PeerIdentity, _ channel: String) -> Bool {
            if case .forward = routes.route(peer: peer, channel: channel) { return true }
            return false
        }
        #expect(forwarded(betaNode, "migration/x/memory"))
        #expect(!forwarded(ownNode, "migration/x/memory"), "the paired channel is the peer cluster's node's only")
        #expect(!forwarded(betaNode, "migration/y/memory"), "an unscoped channel refuses an imported CA's node")
        #expect(forwarded(ownNode, "migration/y/memory"))
    }

    @Test("a peer of another CA cannot open a tunnel, even one whose CA names itself like this cluster")
    func foreignPeer() async throws {
        let sink = try DigestSink()
        defer { sink.close() }
        let bed = try await Bed(channel: channelName, target: sink.endpoint)
        // The impostor CA's node takes the exit for one of its own (same cluster name) and speaks; the exit refuses it.
        let impostor = try TestPKI.authority("alpha")
        let foreign = try TestPKI.provider(impostor, role: .node, name: "intruder", trusting: [impostor, bed.alpha])
        let events = EventLog()
        let entry = try await bed.entry(channel: channelName, provider: foreign, events: events)
        let outcome = try await onThread {
            let socket = try BlockingSocket.connect(entry.endpoint)
            defer { socket.close() }
            return socket.readOutcome()
        }
        #expect(outcome.bytes.isEmpty && outcome.reset)
        #expect(await eventually { events.refusals.first?.code == .rejectedByPeer })
        #expect(await eventually { bed.exitEvents.refusals.first?.code == .untrustedCertificate })
        await entry.close()
        await bed.exit.close()
    }

    @Test("garbled, oversized and missing channel requests are refused; the exit keeps serving")
    func badRequests() async throws {
        let sink = try DigestSink()
        defer { sink.close() }
        let bed = try await Bed(channel: channelName, target: sink.endpoint, requestTimeout: .milliseconds(500))
        let oversized: [UInt8] = Array("VMST".utf8) + [1, 0xff, 0xff] + [UInt8](repeating: 0x41, count: 100)
        let wrongVersion: [UInt8] = Array("VMST".utf8) + [9, 0, 1, 0x41]
        let cases: [([UInt8], String)] = [
            (Array("GARBAGE-GARBAGE".utf8), "did not open the tunnel"),
            (oversized, "exceeds the limit"),
            (wrongVersion, "protocol version 9"),
            (Array("VMST".utf8) + [1, 0, 3] + [0x66, 0x20, 0xff], "not valid"),
            ([], "no channel request within"),
        ]
        for (bytes, expected) in cases {
            let before = bed.exitEvents.refusals.count
            let (channel, _) = try await MutualTLSClient.connect(
                to: bed.exit.endpoint,
                provider: bed.entryProvider,
                policy: PeerPolicy(allowedRoles: [.node])
            ) { try $0.pipeline.syncOperations.addHandler(CloseOnEOF()) }
            if !bytes.isEmpty {
                try await channel.writeAndFlush(channel.allocator.buffer(bytes: bytes))
            }
            try await channel.closeFuture.get()
            #expect(await eventually { bed.exitEvents.refusals.count == before + 1 }, "\(bed.exitEvents.all)")
            let reason = bed.exitEvents.refusals.last
            #expect(reason?.code == .protocolViolation)
            #expect(reason?.message.contains(expected) == true, "\(String(describing: reason))")
        }
        #expect(await eventually { bed.exit.openConnections == 0 })
        await bed.exit.close()
    }

    @Test("an unreachable target refuses the channel and names the target")
    func unreachableTarget() async throws {
        let (reservation, closedPort) = try BlockingSocket.reservedClosedPort()
        defer { reservation.close() }
        let bed = try await Bed(channel: channelName, target: .tcp(host: "127.0.0.1", port: closedPort))
        let events = EventLog()
        let entry = try await bed.entry(channel: channelName, events: events)
        let outcome = try await onThread {
            let socket = try BlockingSocket.connect(entry.endpoint)
            defer { socket.close() }
            return socket.readOutcome()
        }
        #expect(outcome.bytes.isEmpty && outcome.reset)
        #expect(await eventually { events.refusals.count == 1 })
        #expect(events.refusals.first?.message.contains("127.0.0.1:\(closedPort)") == true, "\(events.refusals)")
        await entry.close()
        await bed.exit.close()
    }

    @Test(
        "rotating the CA and both leaves while data streams does not interrupt it; the next handshake uses the new leaves"
    )
    func rotationWhileStreaming() async throws {
        let sink = try DigestSink()
        defer { sink.close() }
        let bed = try await Bed(channel: channelName, target: sink.endpoint)
        let entryEvents = EventLog()
        let entry = try await bed.entry(channel: channelName, events: entryEvents)

        async let received = sink.serveOne()
        let stream = Task.detached {
            // ~2.5 s of paced traffic: 200 × 64 KiB with 12 ms pauses.
            try await exchangeStream(with: entry.endpoint, total: 200 << 16, seed: 42, chunk: 1 << 16, pause: 12_000)
        }
        #expect(await eventually { bed.exit.openConnections == 2 })
        try await Task.sleep(for: .milliseconds(800))

        // Rotate: a successor CA joins both bundles (the old one stays through the overlap), then new leaves.
        let successor = try bed.alpha.renewed()
        var trust = bed.exitProvider.trust
        trust.insert(successor.certificate)
        try bed.exitProvider.reload(trust: trust)
        try bed.entryProvider.reload(trust: trust)
        let newExitLeaf = try successor.issue(LeafRequest(role: .node, name: "target-node"))
        let newEntryLeaf = try successor.issue(LeafRequest(role: .node, name: "source-node"))
        try bed.exitProvider.reload(identity: newExitLeaf)
        try bed.entryProvider.reload(identity: newEntryLeaf)

        let (sent, answer) = try await stream.value
        let (count, digest) = try await received
        #expect(count == 200 << 16)
        #expect(digest == sent)
        #expect(answer == sent)
        #expect(bed.exitEvents.openedPeers.count == 1, "the stream must not have reconnected")

        // A new connection handshakes with the new leaves on both sides.
        async let second = sink.serveOne()
        _ = try await exchangeStream(with: entry.endpoint, total: 1024, seed: 1)
        _ = try await second
        #expect(bed.exitEvents.openedPeers.last?.fingerprint == PEM.fingerprint(newEntryLeaf.certificate))
        #expect(entryEvents.openedPeers.last?.fingerprint == PEM.fingerprint(newExitLeaf.certificate))
        #expect(entryEvents.openedPeers.first?.fingerprint != entryEvents.openedPeers.last?.fingerprint)
        await entry.close()
        await bed.exit.close()
    }

    @Test("channel names are validated before anything is sent")
    func channelNames() async throws {
        #expect(TunnelProtocol.validate("migration/abc-1/disk:vda") == nil)
        #expect(TunnelProtocol.validate("") != nil)
        #expect(TunnelProtocol.validate("has space") != nil)
        #expect(TunnelProtocol.validate(String(repeating: "a", count: 600)) != nil)
        let alpha = try TestPKI.authority("alpha")
        let provider = try TestPKI.provider(alpha, role: .node, name: "n1")
        let error = await #expect(throws: TransportError.self) {
            try await TunnelEntry.start(
                listeningOn: .tcp(host: "127.0.0.1", port: 0),
                remote: .tcp(host: "127.0.0.1", port: 1),
                channel: "bad name",
                provider: provider,
                exitPolicy: .anyRole
            )
        }
        #expect(error?.code == .invalidArgument)
        #expect(throws: TransportError.self) { try Endpoint(parsing: "nonsense") }
        #expect(try Endpoint(parsing: "[::1]:9187") == .tcp(host: "::1", port: 9187))
        #expect(try Endpoint(parsing: "unix:/run/x.sock") == .unix(path: "/run/x.sock"))
    }
}

/// Closes a channel when its peer ends the stream (what a well-behaved tunnel entry does).
final class CloseOnEOF: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }
}
