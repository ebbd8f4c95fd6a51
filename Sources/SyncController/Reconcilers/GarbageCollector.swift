public import ClusterAPI
public import ControllerRuntime
public import Logging

/// Owner references, as Kubernetes' garbage collector honours them in the background: an object all of whose owners
/// (by uid) are gone is deleted. Keyed by owner uid: when an object goes, the objects that named it as an owner are
/// looked at; when an object names owners, they are looked at once (an owner may be gone before its dependent is
/// seen). An owner that is only marked for deletion (finalizers pending) still owns; foreground deletion and
/// `blockOwnerDeletion` are not acted on. Deletes go through the store's API with the dependent's uid as precondition,
/// so a newer object under the same name is never taken for it.
public struct GarbageCollectionReconciler: Reconciler {
    public let name = "garbagecollector"

    let store: any ResourceStore
    let kinds: [CollectedKind]
    let logger: Logger

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileResult {
        let owner = key.name
        guard !held(owner) else { return .done }
        for kind in kinds {
            for dependent in kind.dependents(owner) { try await collect(dependent, of: kind.kind) }
        }
        return .done
    }

    /// Deletes `dependent` unless one of its owners still exists (or it is already being deleted).
    private func collect(_ dependent: ObjectMeta, of kind: ResourceKind) async throws(APIError) {
        guard !dependent.isDeleting, let name = dependent.name else { return }
        for reference in dependent.ownerReferences ?? [] {
            if try await exists(reference, namespace: dependent.namespace) { return }
        }
        do {
            _ = try await store.delete(
                kind, namespace: dependent.namespace, name: name, precondition: DeletePrecondition(uid: dependent.uid))
            logger.info(
                "deleted an object whose owners are gone",
                metadata: ["kind": "\(kind.kind)", "object": "\(dependent.namespace.map { "\($0)/" } ?? "")\(name)"])
        } catch  where error.code == 404 || error.code == 409 {
            // Gone already, or the name now belongs to another object: nothing of this one is left to collect.
        }
    }

    /// Whether the owner `reference` names exists: in the caches, or else (a cache may not have seen an owner created
    /// just before its dependent) as the store has it now. An owner of a kind this controller does not serve counts as
    /// existing: what cannot be checked is not deleted.
    private func exists(_ reference: OwnerReference, namespace: String?) async throws(APIError) -> Bool {
        if held(reference.uid) { return true }
        guard let kind = Kinds.lookup(apiVersion: reference.apiVersion, kind: reference.kind) else { return true }
        do {
            let owner = try await store.get(kind, namespace: kind.namespaced ? namespace : nil, name: reference.name)
            return owner["metadata"]?["uid"]?.string == reference.uid
        } catch  where error.code == 404 {
            return false
        }
    }

    private func held(_ uid: String) -> Bool { kinds.contains { $0.holds(uid) } }
}

/// The garbage collector: every served kind's objects indexed by uid and by owner uid, feeding one queue of owner uids
/// to `GarbageCollectionReconciler`. A kind whose cache another informer keeps (the cluster controllers' typed caches,
/// given as `shared`, their informers calling `observe`) is read there; for every other kind it runs a metadata-only
/// informer of its own — so no kind is watched and cached twice.
public struct GarbageCollector: Sendable {
    public let controller: Controller<GarbageCollectionReconciler>
    let kinds: [CollectedKind]

    /// The kinds it watches: every served kind.
    public static var watchedKinds: [ResourceKind] { KindMarkers.all.map { $0.kind } }

    /// `queue` is the one the sharing informers' handlers feed through `observe(old:new:into:)`.
    public init(
        store: any ResourceStore, shared: [SharedKind] = [], queue: WorkQueue<ObjectKey> = WorkQueue(),
        logger: Logger = Logger(label: "vmsync.garbagecollector")
    ) {
        let kinds = KindMarkers.all.map { marker in
            shared.first { $0.kind.plural == marker.kind.plural && $0.kind.group == marker.kind.group }?.collected
                ?? CollectedKind.watching(marker, store: store, queue: queue, logger: logger)
        }
        self.kinds = kinds
        controller = Controller(
            GarbageCollectionReconciler(store: store, kinds: kinds, logger: logger), queue: queue, logger: logger)
    }

    /// The indexes a cache shared with the collector carries.
    public static func indexes<R: Resource>(for type: R.Type) -> [String: Cache<R>.IndexFunction] {
        [
            CollectedKind.uidIndex: { [$0.metadata.uid].compactMap { $0 } },
            CollectedKind.ownerIndex: { ($0.metadata.ownerReferences ?? []).map(\.uid) },
        ]
    }

    /// A kind another informer caches (its cache carrying `indexes(for:)`), and how to wait for its first list.
    public struct SharedKind: Sendable {
        let kind: ResourceKind
        let collected: CollectedKind

        public init<R: Resource>(cache: Cache<R>, informer: Informer<R>) {
            kind = R.kind
            collected = CollectedKind(
                kind: R.kind, run: nil, waitForSync: { await informer.waitForSync() },
                holds: { !cache.keys(in: CollectedKind.uidIndex, $0).isEmpty },
                dependents: { cache.objects(in: CollectedKind.ownerIndex, $0).map(\.metadata) })
        }
    }

    /// What a change of an object means for the collector: the sharing informers' handlers call it with the
    /// collector's queue.
    public static func observe(old: ObjectMeta?, new: ObjectMeta?, into queue: WorkQueue<ObjectKey>) {
        for owner in ownersConcerned(old: old, new: new) { queue.add(ObjectKey(namespace: nil, name: owner)) }
    }

    /// The owner uids to look at after a change: an object gone (what it owned may have no owner left), and the owners
    /// an object names when it first names them (they may be gone already).
    static func ownersConcerned(old: ObjectMeta?, new: ObjectMeta?) -> Set<String> {
        var owners: Set<String> = []
        if new == nil, let uid = old?.uid { owners.insert(uid) }
        let named = Set((new?.ownerReferences ?? []).map(\.uid))
        if !named.isEmpty, old == nil || named != Set((old?.ownerReferences ?? []).map(\.uid)) {
            owners.formUnion(named)
        }
        return owners
    }

    /// Runs the informers and, once all have listed, the reconciler, until cancelled.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            // Only its own informers: a shared kind's informer runs with its owner's controllers.
            for kind in kinds { if let run = kind.run { group.addTask { await run() } } }
            group.addTask {
                await waitForSync()
                await controller.run()
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// Waits until every informer has listed.
    public func waitForSync() async {
        for kind in kinds { await kind.waitForSync() }
    }
}

/// One kind as the garbage collector sees it, whatever its type: its informer, and the two questions asked of its
/// cache.
struct CollectedKind: Sendable {
    static let uidIndex = "uid"
    static let ownerIndex = "ownerUID"

    let kind: ResourceKind
    /// Its own informer's run, nil for a kind whose informer someone else runs.
    let run: (@Sendable () async -> Void)?
    let waitForSync: @Sendable () async -> Void
    /// Whether an object with this uid is in the cache.
    let holds: @Sendable (_ uid: String) -> Bool
    /// The cached objects that name this uid as an owner.
    let dependents: @Sendable (_ owner: String) -> [ObjectMeta]

    static func watching<Marker: KindMarker>(
        _ marker: Marker.Type, store: any ResourceStore, queue: WorkQueue<ObjectKey>, logger: Logger
    ) -> CollectedKind {
        // Metadata alone: the objects' bodies are not kept.
        let cache = Cache<ObjectMetadata<Marker>>(
            indexes: [
                uidIndex: { [$0.metadata.uid].compactMap { $0 } },
                ownerIndex: { ($0.metadata.ownerReferences ?? []).map(\.uid) },
            ], keepsEnvelopes: false)
        let informer = Informer<ObjectMetadata<Marker>>(
            source: store,
            cache: cache,
            logger: logger
        ) { change in
            for owner in GarbageCollector.ownersConcerned(old: change.old?.metadata, new: change.new?.metadata) {
                queue.add(ObjectKey(namespace: nil, name: owner))
            }
        }
        return CollectedKind(
            kind: Marker.kind,
            run: { await informer.run() },
            waitForSync: { await informer.waitForSync() },
            holds: { !informer.cache.keys(in: uidIndex, $0).isEmpty },
            dependents: { informer.cache.objects(in: ownerIndex, $0).map(\.metadata) })
    }
}
