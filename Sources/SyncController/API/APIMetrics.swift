import Metrics
import Synchronization

/// The cluster API's metrics (swift-metrics; the executable picks the backend):
/// `vmsync_api_requests_total{verb,resource,code}`, `vmsync_api_request_duration_seconds{verb,resource}` (until the
/// answer is ready; for a watch, until it opens) and `vmsync_api_watches` (watches being served).
///
/// Labels stay few whatever clients send: `verb` is Kubernetes' (`GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`,
/// `DELETE`, `DELETECOLLECTION`, else `OTHER`), `resource` a served resource (`virtualmachineinstances.kubevirt.io`,
/// `…/status`) or one of the fixed non-resource paths, never a name or a path a client made up.
final class APIMetrics: Sendable {
    /// The factory in force when the handler was made (a test's task-local one, else the bootstrapped one): the
    /// metrics made later, per label set, come from it too.
    private let factory: any MetricsFactory
    private let requests = Mutex<[RequestLabels: Counter]>([:])
    private let durations = Mutex<[DurationLabels: Timer]>([:])
    private let watches: Meter

    private struct RequestLabels: Hashable {
        var verb: String, resource: String, code: Int
    }

    private struct DurationLabels: Hashable {
        var verb: String, resource: String
    }

    init() {
        factory = MetricsSystem.factory
        watches = Meter(label: "vmsync_api_watches", factory: factory)
        watches.set(0)
    }

    /// Counts one answered request and how long it took.
    func record(verb: String, resource: String, code: Int, duration: Duration) {
        let counter = requests.withLock { counters in
            let labels = RequestLabels(verb: verb, resource: resource, code: code)
            if let counter = counters[labels] { return counter }
            let counter = Counter(
                label: "vmsync_api_requests_total",
                dimensions: [("verb", verb), ("resource", resource), ("code", String(code))], factory: factory)
            counters[labels] = counter
            return counter
        }
        counter.increment()
        let timer = durations.withLock { timers in
            let labels = DurationLabels(verb: verb, resource: resource)
            if let timer = timers[labels] { return timer }
            let timer = Timer(
                label: "vmsync_api_request_duration_seconds", dimensions: [("verb", verb), ("resource", resource)],
                factory: factory)
            timers[labels] = timer
            return timer
        }
        timer.record(duration: duration)
    }

    func watchStarted() { watches.increment() }
    func watchEnded() { watches.decrement() }
}

/// What a request was about, for the metrics' labels; `route` fills in what it learns.
struct RequestScope {
    /// A served resource (with `/status` for that subresource), a fixed non-resource path, or `unknown`.
    var resource = "unknown"
    /// Whether `resource` names a served resource (not a fixed path).
    var isResource = false
    /// A request for one object by name (else a collection).
    var hasName = false
    /// A collection read that is a watch.
    var isWatch = false

    /// Kubernetes' verb of `method` on this scope; a method outside HTTP's usual ones is `OTHER`.
    func verb(_ method: String) -> String {
        switch method {
        case "GET": !isResource || hasName ? "GET" : isWatch ? "WATCH" : "LIST"
        case "DELETE": !isResource || hasName ? "DELETE" : "DELETECOLLECTION"
        case "POST", "PUT", "PATCH", "HEAD", "OPTIONS": method
        default: "OTHER"
        }
    }
}
