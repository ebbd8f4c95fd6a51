import ClusterAPI
import Foundation
import Logging
import Synchronization
import TLSTransport

/// The Kubernetes-style REST surface over a `ResourceStore`: paths, verbs, authorization by certificate role,
/// JSON/YAML bodies, watches, tables, discovery, OpenAPI, health and metrics.
public final class ClusterAPIHandler: Sendable {
    let store: any ResourceStore
    let metrics = APIMetrics()
    let logger = Logger(label: "vmsync.api")
    /// Largest accepted body.
    public static let maximumBodyBytes = 3 << 20
    private let ready = Mutex(true)
    /// Signs node agents' certificate renewals; nil when the controller was started without the CA (`--pki`).
    let signer: CertificateSigner?

    /// The Prometheus text exposition `/metrics` answers with (the executable owns the registry); nil: 404.
    let exposition: (@Sendable () async -> [UInt8])?

    /// The handler's metrics are made here, from the metrics factory in force.
    public init(
        store: any ResourceStore, signer: CertificateSigner? = nil, exposition: (@Sendable () async -> [UInt8])? = nil
    ) {
        self.store = store
        self.signer = signer
        self.exposition = exposition
    }

    /// Answers one request.
    public func handle(_ request: APIRequest) async -> APIResponse {
        let started = ContinuousClock.now
        var scope = RequestScope()
        let response: APIResponse
        do {
            response = try await route(request, &scope)
        } catch {
            response = .error(error, yaml: request.wantsYAML)
        }
        metrics.record(
            verb: scope.verb(request.method), resource: scope.resource, code: response.status,
            duration: ContinuousClock.now - started)
        return response
    }

    private func route(_ request: APIRequest, _ scope: inout RequestScope) async throws(APIError) -> APIResponse {
        let segments = request.path.split(separator: "/").map(String.init)
        if let first = segments.first, ["healthz", "livez", "readyz", "metrics", "version", "openapi"].contains(first) {
            scope.resource = first
        }
        switch segments.first {
        case "healthz", "livez": return .text("ok")
        case "readyz": return ready.withLock { $0 } ? .text("ok") : .text("not ready", status: 503)
        case "metrics":
            guard let exposition else {
                throw APIError.notFound("this controller keeps no metrics (started without a metrics backend)")
            }
            return .full(
                status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: Data(await exposition()))
        case "version":
            return .json(["major": "1", "minor": "32", "gitVersion": "v1.32.0-vmsync", "platform": "linux/amd64"])
        case "api", "apis": return try await resourceRoute(request, segments, &scope)
        case "openapi": return try OpenAPIDocuments.answer(request, segments.dropFirst())
        default:
            throw APIError.notFound("the server could not find the requested resource (path \(request.path))")
        }
    }

    // MARK: Resources

    /// `/api/v1[/namespaces/NS]/PLURAL[/NAME[/status]]` and `/apis/GROUP/VERSION/…`.
    private func resourceRoute(_ request: APIRequest, _ segments: [String], _ scope: inout RequestScope)
        async throws(APIError) -> APIResponse
    {
        var rest = segments
        let group: String
        let version: String
        if rest.first == "api" {
            rest.removeFirst()
            guard let first = rest.first else {
                scope.resource = "discovery"
                return .json(Discovery.apiVersions)
            }
            group = ""
            version = first
            rest.removeFirst()
        } else {
            rest.removeFirst()
            guard rest.count >= 1 else {
                scope.resource = "discovery"
                return .json(Discovery.groupList)
            }
            guard rest.count >= 2 else {
                throw APIError.notFound("the server could not find the requested resource (path \(request.path))")
            }
            group = rest[0]
            version = rest[1]
            rest.removeFirst(2)
        }
        guard !rest.isEmpty else {
            guard let list = Discovery.resourceList(group: group, version: version) else {
                throw APIError.notFound("the server could not find the requested resource (group \(group)/\(version))")
            }
            scope.resource = "discovery"
            guard request.method == "GET" else { throw Self.methodNotAllowed(request) }
            return .json(list)
        }
        var namespace: String?
        if rest.first == "namespaces", rest.count >= 3 {
            namespace = rest[1]
            rest.removeFirst(2)
        } else if rest.first == "namespaces" {
            // Namespaces themselves: every namespace exists implicitly.
            scope.resource = "namespaces"
            if rest.count == 1 {
                return .json([
                    "apiVersion": "v1", "kind": "NamespaceList", "metadata": [:],
                    "items": [Discovery.namespace("default")],
                ])
            }
            return .json(Discovery.namespace(rest[1]))
        }
        let plural = rest.removeFirst()
        guard let kind = Kinds.lookup(group: group, plural: plural), kind.version == version else {
            throw APIError.notFound(
                "the server doesn't have a resource type \"\(plural)\" in \(group.isEmpty ? version : "\(group)/\(version)")"
            )
        }
        if !kind.namespaced, namespace != nil {
            throw APIError.notFound("\(kind.resource) is cluster-scoped: it has no namespaces")
        }
        let name = rest.first
        scope.resource = kind.resource
        scope.isResource = true
        scope.hasName = name != nil
        var subresource = Subresource.main
        if rest.count == 2 {
            guard rest[1] == "status", kind.hasStatus else {
                throw APIError.notFound(
                    "the server could not find the requested resource (\(kind.resource) has no subresource \"\(rest[1])\")"
                )
            }
            subresource = .status
            scope.resource = kind.resource + "/status"
        } else if rest.count > 2 {
            throw APIError.notFound("the server could not find the requested resource (path \(request.path))")
        }
        try Authorization.check(request, kind: kind, namespace: namespace, name: name, subresource: subresource)
        // A node's writes are checked against the object as stored when the write lands (inside its transaction), so
        // a change in between — the VMI handed to another node, the migration moved on — cannot slip through.
        var admission: Admission?
        if request.peer.role == .node, subresource == .status, let name, request.method != "GET" {
            admission = try await nodeStatusAdmission(request, kind: kind, namespace: namespace, name: name)
        }
        if request.peer.role == .node, subresource == .main, kind.kind == Kinds.node.kind, let name,
            ["PATCH", "PUT"].contains(request.method)
        {
            let check: Admission = { existing throws(APIError) in
                try Self.checkNodeWrite(request, name: name, existing: existing)
            }
            try check(try await store.get(Kinds.node, namespace: nil, name: name))
            admission = check
        }
        let yaml = request.wantsYAML
        switch (request.method, name) {
        case ("GET", nil):
            let selection = try Self.selection(request, namespace: kind.namespaced ? namespace : nil)
            if request.query["watch"] == "true" || request.query["watch"] == "1" {
                scope.isWatch = true
                return try await watch(kind, selection, request)
            }
            if !request.wantsTable && !yaml {
                let (documents, version) = try await store.listEncoded(kind, selection)
                var body = Data(#"{"apiVersion":"\#(kind.apiVersion)","items":["#.utf8)
                for (index, document) in documents.enumerated() {
                    if index > 0 { body.append(UInt8(ascii: ",")) }
                    body.append(document)
                }
                body.append(
                    contentsOf: Data(
                        #"],"kind":"\#(kind.listKind)","metadata":{"resourceVersion":"\#(version)"}}"#.utf8))
                return .full(status: 200, contentType: "application/json", body: body)
            }
            let (items, version) = try await store.list(kind, selection)
            if request.wantsTable { return .json(Tables.table(kind, items, resourceVersion: version)) }
            let list: JSONValue = [
                "apiVersion": .string(kind.apiVersion), "kind": .string(kind.listKind),
                "metadata": ["resourceVersion": .string(String(version))], "items": .array(items),
            ]
            return .json(list, yaml: yaml)
        case ("GET", let name?):
            let object = try await store.get(kind, namespace: namespace, name: name)
            if request.wantsTable { return .json(Tables.table(kind, [object], resourceVersion: nil)) }
            return .json(object, yaml: yaml)
        case ("POST", nil):
            var object = try request.bodyValue()
            try Self.placeIn(&object, kind: kind, namespace: namespace)
            if request.peer.role == .node, kind.kind == Kinds.node.kind {
                // Registering: what an agent reports, nothing an operator sets.
                try Self.checkRegistration(object, registeredBy: request.peer.name)
            }
            if kind.kind == Kinds.migration.kind { try await admitMigration(object) }
            if kind.kind == Kinds.virtualMachine.kind, object["spec"]?["runStrategy"]?.string == "WaitAsReceiver" {
                try await requireDecentralizedGate("runStrategy WaitAsReceiver")
            }
            if kind.kind == Kinds.certificateSigningRequest.kind {
                return .json(try await signCertificate(object, for: request.peer), status: 201, yaml: yaml)
            }
            return .json(try await store.create(kind, object), status: 201, yaml: yaml)
        case ("PUT", let name?):
            var object = try request.bodyValue()
            try Self.placeIn(&object, kind: kind, namespace: namespace)
            guard object["metadata"]?["name"]?.string == name else {
                throw APIError.badRequest(
                    "the name of the object (\(object["metadata"]?["name"]?.string ?? "none")) does not match the name on the URL (\(name))"
                )
            }
            return .json(try await store.update(kind, object, subresource: subresource, admit: admission), yaml: yaml)
        case ("PATCH", let name?):
            let type = (request.header("Content-Type") ?? "").lowercased()
            guard type.contains("merge-patch") || type.contains("strategic-merge-patch") else {
                throw APIError(
                    .unsupportedMediaType, code: 415,
                    "the patch type \"\(type)\" is not supported; use application/merge-patch+json")
            }
            let patch = try request.bodyValue()
            return .json(
                try await store.patch(
                    kind, namespace: namespace, name: name, mergePatch: patch, subresource: subresource,
                    admit: admission), yaml: yaml)
        case ("DELETE", let name?):
            var precondition: DeletePrecondition?
            if !request.body.isEmpty, let options = try? request.bodyValue(), let conditions = options["preconditions"]
            {
                precondition = DeletePrecondition(
                    uid: conditions["uid"]?.string,
                    resourceVersion: conditions["resourceVersion"]?.string.flatMap { Int64($0) })
            }
            let object = try await store.delete(kind, namespace: namespace, name: name, precondition: precondition)
            return .json(object, yaml: yaml)
        case ("DELETE", nil):
            // deletecollection with a selector.
            let selection = try Self.selection(request, namespace: kind.namespaced ? namespace : nil)
            let (items, version) = try await store.list(kind, selection)
            var deleted: [JSONValue] = []
            for item in items {
                if let itemName = item["metadata"]?["name"]?.string {
                    deleted.append(
                        try await store.delete(
                            kind, namespace: item["metadata"]?["namespace"]?.string, name: itemName, precondition: nil))
                }
            }
            return .json([
                "apiVersion": .string(kind.apiVersion), "kind": .string(kind.listKind),
                "metadata": ["resourceVersion": .string(String(version))], "items": .array(deleted),
            ])
        default:
            throw Self.methodNotAllowed(request)
        }
    }

    /// A node's certificate renewal: signed at create (auto-approved: a node renewing its own identity), stored with
    /// its certificate in `status.certificate`; the node's earlier requests go.
    private func signCertificate(_ object: JSONValue, for peer: PeerIdentity) async throws(APIError) -> JSONValue {
        guard let signer else {
            throw APIError(
                .serviceUnavailable, code: 503,
                "this controller signs no certificates: it was started without the cluster CA (--pki)")
        }
        let certificate = try signer.sign(object, by: peer)
        let kind = Kinds.certificateSigningRequest
        var request = object
        request["status"] = nil
        var metadata = request["metadata"]?.object ?? [:]
        if metadata["name"] == nil, metadata["generateName"] == nil {
            metadata["generateName"] = .string("node-\(peer.name)-")
        }
        var labels = metadata["labels"]?.object ?? [:]
        labels[CertificateSigner.nodeLabel] = .string(peer.name)
        metadata["labels"] = .object(labels)
        request["metadata"] = .object(metadata)
        var spec = request["spec"]?.object ?? [:]
        spec["username"] = .string("node:\(peer.name)")
        request["spec"] = .object(spec)
        var created = try await store.create(kind, request)
        let now = Resources.now()
        created["status"] = [
            "conditions": [
                [
                    "type": "Approved", "status": "True", "reason": "AutoApproved", "lastUpdateTime": .string(now),
                    "lastTransitionTime": .string(now),
                    "message": .string("node \(peer.name) renews its own certificate"),
                ]
            ],
            "certificate": .string(Data(certificate.utf8).base64EncodedString()),
        ]
        let stored = try await store.update(kind, created, subresource: .status)
        // One request per node is kept: the latest.
        let name = stored["metadata"]?["name"]?.string
        let selection = Selection(labels: try LabelSelector("\(CertificateSigner.nodeLabel)=\(peer.name)"))
        for earlier in try await store.list(kind, selection).items {
            guard let earlierName = earlier["metadata"]?["name"]?.string, earlierName != name else { continue }
            _ = try? await store.delete(kind, namespace: nil, name: earlierName, precondition: nil)
        }
        logger.info("signed a certificate", metadata: ["node": "\(peer.name)", "request": "\(name ?? "")"])
        return stored
    }

    /// The longest a watch may be asked to last (a day).
    static let maxWatchSeconds = 86_400
    /// How many events may wait for a watch's client before the watch is closed.
    static let watchBufferEvents = 1024

    private func watch(_ kind: ResourceKind, _ selection: Selection, _ request: APIRequest) async throws(APIError)
        -> APIResponse
    {
        let from: Int64?
        if let text = request.query["resourceVersion"], !text.isEmpty {
            guard let version = Int64(text) else {
                throw APIError.badRequest("resourceVersion \"\(text)\" is not a number")
            }
            from = version
        } else {
            from = nil
        }
        let timeout: Int
        if let text = request.query["timeoutSeconds"] {
            guard let seconds = Int(text), (0...Self.maxWatchSeconds).contains(seconds) else {
                throw APIError.badRequest(
                    "timeoutSeconds \"\(text)\" must be a whole number of seconds from 0 to \(Self.maxWatchSeconds)")
            }
            timeout = seconds
        } else {
            timeout = 1800
        }
        let events: AsyncStream<WatchEvent>
        do {
            events = try await store.watch(kind, selection, from: from)
        } catch  where error.code == 410 {
            // As Kubernetes does: the watch opens, and its first event is an ERROR carrying the 410 Status.
            let line =
                JSONValue(dictionaryLiteral: ("type", "ERROR"), ("object", error.status)).jsonData() + Data("\n".utf8)
            return .stream(status: 200, contentType: "application/json", lines: .lines([line]))
        }
        let metrics = metrics
        let logger = logger
        let watcher = "\(request.peer)"
        let watched = kind.kind
        // A client that does not read gets at most this many events queued for it; then its watch ends (it resumes
        // from the last resourceVersion it saw, as after any watch that ends), instead of the controller's memory.
        // The server runs this on the connection's task, as long as it writes the lines out.
        let lines = LineStream(bufferLimit: Self.watchBufferEvents) { continuation in
            metrics.watchStarted()
            defer { metrics.watchEnded() }
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await event in events {
                        switch continuation.yield(event.line) {
                        case .dropped:
                            logger.warning(
                                "watch closed: its client does not read",
                                metadata: ["peer": "\(watcher)", "kind": "\(watched)"])
                            return
                        case .terminated:
                            return  // the client went
                        case .enqueued:
                            continue
                        @unknown default:
                            continue
                        }
                    }
                }
                group.addTask { try? await Task.sleep(for: .seconds(timeout)) }
                await group.next()
                group.cancelAll()
            }
        }
        return .stream(status: 200, contentType: "application/json", lines: lines)
    }

    /// A node writes the status of a VMI only while the VMI is on it — handing it to another node only at the end of a
    /// migration to that node — and the status of a migration only if it is the migration's source or target.
    /// KubeVirt's admission of a new migration: refused with the reason when the VMI is missing, not running, not
    /// live-migratable or already migrating (the reconciler checks again when it admits it).
    private func admitMigration(_ object: JSONValue) async throws(APIError) {
        let namespace = object["metadata"]?["namespace"]?.string ?? "default"
        guard let vmiName = object["spec"]?["vmiName"]?.string, !vmiName.isEmpty else { return }
        let sendTo = object["spec"]?["sendTo"]
        let receive = object["spec"]?["receive"]
        if sendTo != nil && receive != nil {
            throw APIError(
                .invalid, code: 422, "a migration either sends (spec.sendTo) or receives (spec.receive), not both")
        }
        if sendTo != nil { try await requireDecentralizedGate("spec.sendTo") }
        if receive != nil {
            // The receiving VMI may not exist yet (its VM creates it); the reconciler waits for it.
            try await requireDecentralizedGate("spec.receive")
            return
        }
        let vmi = (try? await store.get(Kinds.virtualMachineInstance, namespace: namespace, name: vmiName)).flatMap {
            try? VirtualMachineInstance(json: $0)
        }
        let others = try await store.list(Kinds.migration, Selection(namespace: namespace)).items.compactMap {
            try? VirtualMachineInstanceMigration(json: $0)
        }
        if let problem = MigrationReconciler.admissionProblem(
            namespace: namespace, vmiName: vmiName, uid: nil, creationOrder: nil, vmi: vmi, others: others,
            decentralized: sendTo != nil)
        {
            throw APIError(.invalid, code: 422, "cannot migrate: \(problem.message) (\(problem.reason))")
        }
    }

    /// Refuses `what` unless the KubeVirt configuration enables decentralized live migration.
    private func requireDecentralizedGate(_ what: String) async throws(APIError) {
        let stored = try? await store.get(Kinds.kubeVirt, namespace: KubeVirt.namespace, name: KubeVirt.name)
        let configuration = stored.flatMap { try? KubeVirt(json: $0) } ?? KubeVirt()
        guard configuration.isEnabled(Migration.decentralizedFeatureGate) else {
            throw APIError(
                .invalid, code: 422,
                "\(what) needs the \(Migration.decentralizedFeatureGate) feature gate: add it to spec.configuration.developerConfiguration.featureGates of the KubeVirt object (FeatureGateDisabled)"
            )
        }
    }

    /// The check of a node's status write: read once here (a claim needs the migration, read from the store), and
    /// returned to be run again on the object as stored when the write lands.
    private func nodeStatusAdmission(_ request: APIRequest, kind: ResourceKind, namespace: String?, name: String)
        async throws(APIError) -> Admission
    {
        let node = request.peer.name
        let existing = try await store.get(kind, namespace: namespace, name: name)
        var claimedFrom: String??
        if kind.kind == Kinds.virtualMachineInstance.kind, existing["status"]?["nodeName"]?.string != node,
            try await isClaim(request, of: existing, by: node, namespace: namespace)
        {
            claimedFrom = .some(existing["status"]?["nodeName"]?.string)
        }
        let claim = claimedFrom
        let check: Admission = { existing throws(APIError) in
            try Self.checkNodeStatusWrite(request, kind: kind, name: name, existing: existing, claimedFrom: claim)
        }
        try check(existing)
        return check
    }

    /// Whether `request.peer` may write the status of `existing`: a VMI on it (or one it claims, still where it was when
    /// the claim was recognised), a migration it is the source or target of, moved only forward.
    static func checkNodeStatusWrite(
        _ request: APIRequest, kind: ResourceKind, name: String, existing: JSONValue, claimedFrom: String??
    ) throws(APIError) {
        let node = request.peer.name
        switch kind.kind {
        case "VirtualMachineInstance":
            let state = existing["status"]?["migrationState"]
            if let from = claimedFrom, existing["status"]?["nodeName"]?.string == from,
                state?["targetNode"]?.string == node
            {
                return
            }
            if existing["metadata"]?["annotations"]?[Migration.receiverAnnotation] != nil,
                existing["status"]?["nodeName"] == nil || existing["status"]?["nodeName"] == .null,
                state?["targetNode"]?.string == node
            {
                // A receiving VMI placed on this node: its agent writes the target's half of the migration state (where
                // it listens, where the disks are) — nothing else until it claims the guest.
                var before = existing["status"] ?? [:]
                var after = try result(of: request, on: existing)["status"] ?? [:]
                before["migrationState"]?["targetState"] = nil
                after["migrationState"]?["targetState"] = nil
                guard before == after else {
                    throw APIError.forbidden(
                        "virtualmachineinstances.kubevirt.io \"\(name)\" is forbidden: node \"\(node)\" may write only the target's half (migrationState.targetState) of the VMI it receives until the guest runs there"
                    )
                }
                return
            }
            guard existing["status"]?["nodeName"]?.string == node else {
                throw APIError.forbidden(
                    "virtualmachineinstances.kubevirt.io \"\(name)\" is forbidden: it is not on node \"\(node)\", which may write only the status of VMIs on it"
                )
            }
            if let after = (try? request.bodyValue())?["status"]?["nodeName"]?.string, after != node {
                guard state?["sourceNode"]?.string == node, state?["targetNode"]?.string == after else {
                    throw APIError.forbidden(
                        "virtualmachineinstances.kubevirt.io \"\(name)\" is forbidden: node \"\(node)\" may hand the VMI only to the target of its migration, not to \"\(after)\""
                    )
                }
            }
        case "VirtualMachineInstanceMigration":
            let state = existing["status"]?["migrationState"]
            // One side of a decentralized migration names a node of the peer cluster too: only this side's node counts.
            let spec = existing["spec"]
            let source = spec?["receive"] == nil || spec?["receive"] == .null
            let target = spec?["sendTo"] == nil || spec?["sendTo"] == .null
            guard (source && state?["sourceNode"]?.string == node) || (target && state?["targetNode"]?.string == node)
            else {
                throw APIError.forbidden(
                    "virtualmachineinstancemigrations.kubevirt.io \"\(name)\" is forbidden: node \"\(node)\" is neither its source nor its target"
                )
            }
            try checkMigrationStatusChange(existing, after: try result(of: request, on: existing), by: node, name: name)
        default:
            break
        }
    }

    /// The object a node's write would leave: a merge patch applied to `existing`, or the PUT body.
    static func result(of request: APIRequest, on existing: JSONValue) throws(APIError) -> JSONValue {
        let body = try request.bodyValue()
        return request.method == "PATCH" ? existing.merged(with: body) : body
    }

    /// The labels a node agent reports on its Node (CPU models and features, its hostname, schedulable).
    static func isAgentLabel(_ key: String) -> Bool {
        key.hasPrefix("cpu-model") || key.hasPrefix("host-model") || key.hasPrefix("cpu-feature")
            || key == "kubevirt.io/schedulable"
    }

    /// A node writes its own Node as its agent does — the labels it reports — and nothing an operator or the
    /// controller owns: not its spec (taints, unschedulable), not other labels, annotations or finalizers.
    static func checkNodeWrite(_ request: APIRequest, name: String, existing: JSONValue) throws(APIError) {
        let after = try Self.result(of: request, on: existing)
        let denied = { (what: String) -> APIError in
            APIError.forbidden(
                "nodes \"\(name)\" is forbidden: node \"\(request.peer.name)\" may not change \(what) of its Node")
        }
        if (after["spec"] ?? [:]) != (existing["spec"] ?? [:]) {
            throw denied("spec (taints, unschedulable: an operator's)")
        }
        for field in ["annotations", "finalizers", "ownerReferences"]
        where (after["metadata"]?[field] ?? .null) != (existing["metadata"]?[field] ?? .null) {
            throw denied("metadata.\(field)")
        }
        let before = existing["metadata"]?["labels"]?.stringMap ?? [:]
        let labels = after["metadata"]?["labels"]?.stringMap ?? [:]
        for key in Set(before.keys).union(labels.keys) where before[key] != labels[key] && !Self.isAgentLabel(key) {
            throw APIError.forbidden(
                "nodes \"\(name)\" is forbidden: label \(key): node \"\(request.peer.name)\" may change only the labels a node agent reports (CPU models and features, kubevirt.io/schedulable)"
            )
        }
    }

    /// A Node a node registers carries only its hostname label and the labels an agent reports: no spec, no
    /// annotations.
    static func checkRegistration(_ object: JSONValue, registeredBy node: String) throws(APIError) {
        let denied = { (what: String) -> APIError in
            APIError.forbidden(
                "nodes \"\(node)\" is forbidden: node \"\(node)\" may not register its Node with \(what)")
        }
        if let spec = object["spec"], spec != .null, spec != [:] {
            throw denied("a spec (taints, unschedulable: an operator's)")
        }
        if let annotations = object["metadata"]?["annotations"], annotations != .null, annotations != [:] {
            throw denied("annotations")
        }
        for (key, value) in object["metadata"]?["labels"]?.stringMap ?? [:] where !Self.isAgentLabel(key) {
            guard key == Resources.hostnameLabel, value == node else { throw denied("the label \(key)=\(value)") }
        }
    }

    /// The fields of a migration's `migrationState` that only the controller sets, and those each side owns.
    static let controllerFields = [
        "sourceNode", "targetNode", "migrationUid", "migrationUID", "sourcePod", "targetPod",
    ]
    static let sourceFields = ["startTimestamp", "mode", "libvirtJobStartTimestamp", "libvirtJobEndTimestamp"]
    static let targetFields = ["targetNodeAddress", "targetRunDirectory"]
    /// The order a migration's phases follow (Failed may follow any of them).
    static let phaseOrder = [
        "", "Pending", "Scheduling", "Scheduled", "PreparingTarget", "TargetReady", "Running", "Succeeded",
    ]

    /// A node moves a migration only forward, never out of a final phase, and writes only its side's fields.
    static func checkMigrationStatusChange(_ existing: JSONValue, after: JSONValue, by node: String, name: String)
        throws(APIError)
    {
        let resource = "virtualmachineinstancemigrations.kubevirt.io \"\(name)\""
        let phase = existing["status"]?["phase"]?.string ?? ""
        let next = after["status"]?["phase"]?.string ?? ""
        if next != phase {
            guard !Migration.finalPhases.contains(phase) else {
                throw APIError.forbidden(
                    "\(resource) is forbidden: it is \(phase); node \"\(node)\" may not move it to \(next.isEmpty ? "no phase" : next)"
                )
            }
            let forward =
                next == "Failed"
                || (phaseOrder.firstIndex(of: next) ?? -1) > (phaseOrder.firstIndex(of: phase) ?? Int.max)
            guard forward else {
                throw APIError.forbidden(
                    "\(resource) is forbidden: node \"\(node)\" moves a migration only forward, not from \(phase) to \(next.isEmpty ? "no phase" : next)"
                )
            }
        }
        let state = existing["status"]?["migrationState"]
        let source = state?["sourceNode"]?.string == node
        let target = state?["targetNode"]?.string == node
        for key in controllerFields + sourceFields + targetFields {
            let before = existing["status"]?["migrationState"]?[key] ?? .null
            let now = after["status"]?["migrationState"]?[key] ?? .null
            guard before != now else { continue }
            let owner =
                controllerFields.contains(key)
                ? "the controller's"
                : sourceFields.contains(key) ? (source ? nil : "the source's") : (target ? nil : "the target's")
            if let owner {
                throw APIError.forbidden(
                    "\(resource) is forbidden: migrationState.\(key) is \(owner); node \"\(node)\" may not change it")
            }
        }
    }

    /// Whether a write by `node` to a VMI that is not on it is the target of its migration claiming the guest
    /// libvirt moved there (when the source could not hand it over): the write names `node` as the VMI's node, the
    /// VMI's migration state names `node` as the target, and that migration — stored, with `node` as its target —
    /// has reached the switchover (Running or later).
    private func isClaim(_ request: APIRequest, of vmi: JSONValue, by node: String, namespace: String?)
        async throws(APIError) -> Bool
    {
        let state = vmi["status"]?["migrationState"]
        guard let body = try? request.bodyValue(), body["status"]?["nodeName"]?.string == node,
            state?["targetNode"]?.string == node,
            let uid = state?["migrationUid"]?.string
        else { return false }
        let migrations = try await store.list(Kinds.migration, Selection(namespace: namespace)).items
        guard let migration = migrations.first(where: { $0["metadata"]?["uid"]?.string == uid }) else { return false }
        // A receiving VMI's guest may run before its migration's Running (written once the source's start arrives).
        let receiving = vmi["metadata"]?["annotations"]?[Migration.receiverAnnotation] != nil
        return migration["status"]?["migrationState"]?["targetNode"]?.string == node
            && (["Running", "Succeeded", "Failed"] + (receiving ? ["TargetReady"] : [])).contains(
                migration["status"]?["phase"]?.string ?? "")
    }

    static func selection(_ request: APIRequest, namespace: String?) throws(APIError) -> Selection {
        let labels = try request.query["labelSelector"].flatMap { text throws(APIError) in
            text.isEmpty ? nil : try LabelSelector(text)
        }
        let fields = try request.query["fieldSelector"].flatMap { text throws(APIError) in
            text.isEmpty ? nil : try FieldSelector(text)
        }
        return Selection(namespace: namespace, labels: labels, fields: fields)
    }

    /// Puts the body's namespace where the path says (a mismatch is an error, as in Kubernetes).
    static func placeIn(_ object: inout JSONValue, kind: ResourceKind, namespace: String?) throws(APIError) {
        guard case .object = object else {
            throw APIError.badRequest("the body must be a JSON object, not \(object.typeName)")
        }
        guard kind.namespaced else { return }
        let path = namespace ?? "default"
        if let given = object["metadata"]?["namespace"]?.string, !given.isEmpty, given != path {
            throw APIError.badRequest(
                "the namespace of the provided object (\(given)) does not match the namespace sent on the request (\(path))"
            )
        }
        object["metadata"]?["namespace"] = .string(path)
        if object["metadata"] == nil { object["metadata"] = ["namespace": .string(path)] }
    }

    static func methodNotAllowed(_ request: APIRequest) -> APIError {
        APIError(
            .methodNotAllowed, code: 405,
            "the server does not allow this method on the requested resource (\(request.method) \(request.path))")
    }
}
