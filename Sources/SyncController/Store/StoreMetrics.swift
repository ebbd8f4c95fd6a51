import Metrics

/// The store's gauges, `vmsync_store_resource_version` (the newest resourceVersion: its rate is the cluster's write
/// rate) and `vmsync_store_watchers` (watches open on the store, the controllers' informers included), read from the
/// store when a scrape asks (`sample()`), not on every write.
public struct StoreMetrics: Sendable {
    private let store: any ResourceStore
    private let resourceVersion: Gauge
    private let watchers: Gauge

    /// The gauges are made here, from the metrics factory in force.
    public init(store: any ResourceStore) {
        self.store = store
        resourceVersion = Gauge(label: "vmsync_store_resource_version")
        watchers = Gauge(label: "vmsync_store_watchers")
    }

    /// Records what the store says now (nothing if it cannot tell).
    public func sample() async {
        guard let statistics = await store.statistics() else { return }
        resourceVersion.record(statistics.resourceVersion)
        watchers.record(statistics.watchers)
    }
}
