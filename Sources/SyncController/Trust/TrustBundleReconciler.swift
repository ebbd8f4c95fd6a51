public import ClusterAPI
public import ControllerRuntime
import Foundation
import Logging
import TLSTransport
import X509

/// KubeVirt's CA exchange through the API, keyed by the two ConfigMaps in `kubevirt`: whatever lands in
/// `kubevirt-external-ca` (`ca-bundle`) is merged into the trust bundle by TLSTransport's rules (duplicates, expired,
/// not-yet-valid, non-CA and garbage dropped, each with its reason in the inbox's `vmsync.io/last-merge` annotation),
/// the inbox is cleared, and `kubevirt-ca` always shows the bundle in force — the cluster's own CA (renewed at 80% of
/// its life, the old one kept through the overlap) and those merged. Every listener and client of the controller
/// follows the bundle without a restart.
public struct TrustBundleReconciler: Reconciler {
    public let name = "ca-bundle"
    let store: any ResourceStore
    let configMaps: Cache<ConfigMap>
    let trust: ClusterTrust
    let logger: Logger

    static let bundleKey = ObjectKey(namespace: ConfigMap.caNamespace, name: ConfigMap.caBundleName)
    static let inboxKey = ObjectKey(namespace: ConfigMap.caNamespace, name: ConfigMap.externalCABundleName)

    /// Whether a change of `key` concerns the bundle.
    static func concerns(_ key: ObjectKey) -> Bool { key == bundleKey || key == inboxKey }

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileResult {
        try await mergeInbox()
        if let renewed = try trust.rotateIfDue() {
            logger.notice(
                "the cluster CA was renewed; the previous one stays trusted through the overlap",
                metadata: ["subject": "\(renewed.certificate.subject)"])
        }
        try await publish()
        // Looked at again when the CA is due (at most hourly: a clock that jumped is noticed).
        let due = trust.renewalDue().map { $0.timeIntervalSinceNow } ?? 3600
        return .requeue(after: .seconds(Int64(max(1, min(3600, due.rounded(.up))))))
    }

    /// The inbox merged and cleared (created empty when missing, as KubeVirt has it).
    private func mergeInbox() async throws {
        guard let inbox = configMaps[Self.inboxKey] else {
            let empty = ConfigMap(
                metadata: ObjectMeta(name: ConfigMap.externalCABundleName, namespace: ConfigMap.caNamespace),
                data: [ConfigMap.caBundleKey: ""])
            try await createIfMissing(empty)
            return
        }
        let text = inbox.data?[ConfigMap.caBundleKey] ?? ""
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { return }
        var result: [String]
        do {
            result = try trust.merge(text).map(\.description)
        } catch {
            result = ["not merged: \(error.message)"]
        }
        var cleared = inbox
        cleared.data = (cleared.data ?? [:]).merging([ConfigMap.caBundleKey: ""]) { $1 }
        cleared.metadata.annotations = (cleared.metadata.annotations ?? [:]).merging([
            ConfigMap.mergeResultAnnotation: result.joined(separator: "\n")
        ]) { $1 }
        // Only the inbox as it was merged is cleared: a bundle pasted meanwhile is merged next time.
        try await store.write(cleared, from: inbox, guarded: true, cache: configMaps)
        for line in result { logger.info("kubevirt-external-ca merged", metadata: ["entry": "\(line)"]) }
    }

    /// Creates `map` unless it exists (somebody else made it meanwhile).
    private func createIfMissing(_ map: ConfigMap) async throws(APIError) {
        do {
            try await store.create(map.json, as: ConfigMap.self, cache: configMaps)
        } catch {
            guard error.code == 409 else { throw error }
        }
    }

    /// `kubevirt-ca` holds the bundle in force.
    private func publish() async throws {
        let pem = try trust.bundle().pem
        guard let current = configMaps[Self.bundleKey] else {
            let bundle = ConfigMap(
                metadata: ObjectMeta(name: ConfigMap.caBundleName, namespace: ConfigMap.caNamespace),
                data: [ConfigMap.caBundleKey: pem])
            try await createIfMissing(bundle)
            return
        }
        guard current.data?[ConfigMap.caBundleKey] != pem else { return }
        var changed = current
        changed.data = (changed.data ?? [:]).merging([ConfigMap.caBundleKey: pem]) { $1 }
        try await store.write(changed, from: current, cache: configMaps)
    }
}
