// swift-metrics for every engine: what is counted, under which names, and
// the one decision whether anything is counted at all.
import CoreMetrics
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The server's swift-metrics handles, made once when a server is created.
///
/// `ServerMetrics(configuration)` is nil when there is nothing to count into:
/// no `Configuration.metricsFactory` and no backend bootstrapped
/// (`MetricsSystem.factory` is swift-metrics' no-op one). The engines decide
/// once, at start, from that nil: without metrics the application is not
/// wrapped and the C core's `on_open`/`on_close`/`on_metric` stay NULL, so a
/// request pays nothing (not even a clock read).
///
/// With metrics, a request costs a clock read, two meter updates, a counter
/// and a timer: the counters by status and the timers by method and status
/// come from a table made once (filled on first use, under a lock), so no
/// handle is created per request.
public final class ServerMetrics: Sendable {
    /// Counter, dimension `status`: requests answered.
    public static let requestsLabel = "peregrine_requests_total"
    /// Timer, dimensions `method` and `status`: from the handler's start to its answer.
    public static let durationLabel = "peregrine_request_duration_seconds"
    /// Meter: requests whose handler is running or whose answer is owed.
    public static let activeRequestsLabel = "peregrine_active_requests"
    /// Meter: connections open.
    public static let openConnectionsLabel = "peregrine_open_connections"
    /// Counter: connections accepted and closed at once while out of descriptors.
    public static let shedAcceptsLabel = "peregrine_shed_accepts_total"
    /// Counter, dimension `status`: requests the engine refused itself
    /// (malformed, over a limit: 400, 408, 413, 414, 431, 501, 505...).
    public static let parseErrorsLabel = "peregrine_parse_errors_total"

    /// The methods with a dimension value of their own; any other is `OTHER`.
    static let methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER"]
    /// Statuses 100...999 index the tables; anything else is counted as 999.
    private static let statusRange = 100...999

    private let factory: any MetricsFactory
    let activeRequests: Meter
    let openConnections: Meter
    let shedAccepts: Counter
    private let requests: Mutex<[Counter?]>
    private let parseErrors: Mutex<[Counter?]>
    private let durations: Mutex<[CoreMetrics.Timer?]>

    /// nil when nothing would record what is counted (see the type's comment).
    package convenience init?(_ configuration: Configuration) {
        let factory = configuration.metricsFactory ?? MetricsSystem.factory
        if factory is NOOPMetricsHandler { return nil }
        self.init(factory: factory)
    }

    package init(factory: any MetricsFactory) {
        self.factory = factory
        activeRequests = Meter(label: Self.activeRequestsLabel, factory: factory)
        openConnections = Meter(label: Self.openConnectionsLabel, factory: factory)
        shedAccepts = Counter(label: Self.shedAcceptsLabel, factory: factory)
        let statuses = Self.statusRange.count
        requests = Mutex([Counter?](repeating: nil, count: statuses))
        parseErrors = Mutex([Counter?](repeating: nil, count: statuses))
        durations = Mutex([CoreMetrics.Timer?](repeating: nil, count: statuses * Self.methods.count))
    }

    private static func statusIndex(_ status: Int) -> Int {
        (statusRange.contains(status) ? status : statusRange.upperBound) - statusRange.lowerBound
    }

    /// `methods` but OTHER, as bytes: compared without making a String.
    private static let methodBytes: [[UInt8]] = methods.dropLast().map { Array($0.utf8) }

    /// The index of a method's dimension value in `methods` (allocates
    /// nothing: the allocation tests run it per request).
    package static func methodIndex(_ method: UnsafeRawBufferPointer) -> Int {
        let table = methodBytes
        for i in table.indices where table[i].count == method.count {
            var same = true
            for j in 0..<method.count where table[i][j] != method[j] {
                same = false
                break
            }
            if same { return i }
        }
        return methods.count - 1
    }

    package static func methodIndex(_ method: String) -> Int {
        methods.dropLast().firstIndex(of: method) ?? methods.count - 1
    }

    /// A request's handler starts: the time to pass to `requestFinished`.
    @inline(__always)
    package func requestStarted() -> UInt64 {
        activeRequests.increment()
        return monotonicNanoseconds()
    }

    /// Its answer was given (`status` 0: none was, the engine answers 500).
    package func requestFinished(methodIndex: Int, status: Int, startedAt: UInt64) {
        let elapsed = monotonicNanoseconds() &- startedAt
        activeRequests.decrement()
        let status = status == 0 ? 500 : status
        let s = Self.statusIndex(status)
        let counter = requests.withLock { table in
            if let counter = table[s] { return counter }
            let counter = Counter(label: Self.requestsLabel, dimensions: [("status", String(status))], factory: factory)
            table[s] = counter
            return counter
        }
        counter.increment()
        let t = methodIndex * Self.statusRange.count + s
        let timer = durations.withLock { table in
            if let timer = table[t] { return timer }
            let timer = CoreMetrics.Timer(label: Self.durationLabel,
                                          dimensions: [("method", Self.methods[methodIndex]), ("status", String(status))],
                                          factory: factory)
            table[t] = timer
            return timer
        }
        timer.recordNanoseconds(Int64(clamping: elapsed))
    }

    /// The engine answered a request with an error status itself.
    package func parseError(status: Int) {
        let s = Self.statusIndex(status)
        let counter = parseErrors.withLock { table in
            if let counter = table[s] { return counter }
            let counter = Counter(label: Self.parseErrorsLabel, dimensions: [("status", String(status))], factory: factory)
            table[s] = counter
            return counter
        }
        counter.increment()
    }

    package func connectionOpened() { openConnections.increment() }
    package func connectionClosed() { openConnections.decrement() }
    package func acceptShed() { shedAccepts.increment() }
}

/// CLOCK_MONOTONIC in nanoseconds (no Foundation, no allocation).
@inline(__always)
package func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

extension Application {
    /// Every request counted into `metrics` (see `ServerMetrics`): made once
    /// at server start, only when metrics are on. `.raw` is unchanged.
    package func measured(_ metrics: ServerMetrics) -> Application {
        switch self {
        case .raw:
            return self
        case .http(let handler):
            return .http(Self.measured(handler, metrics))
        case .streaming(let head, let buffered):
            return .streaming(head: { req, response in
                let started = metrics.requestStarted()
                let method = ServerMetrics.methodIndex(req.method)
                guard let consumer = head(req, response) else {
                    if response.status != 0 {
                        // Answered from the head.
                        metrics.requestFinished(methodIndex: method, status: response.status, startedAt: started)
                    } else {
                        // Buffered: counted by the request handler below.
                        metrics.activeRequests.decrement()
                    }
                    return nil
                }
                consumer.onEnd { how, body in
                    let status = body.response?.status ?? 0
                    metrics.requestFinished(methodIndex: method,
                                            status: how == .complete && status == 0 ? 500 : status, startedAt: started)
                }
                return consumer
            }, request: Self.measured(buffered, metrics))
        case .offloaded(let handler, let inline):
            var measuredInline: InlineRoute? = nil
            if let route = inline {
                measuredInline = { request, response in
                    let started = metrics.requestStarted()
                    let answered = route(request, response)
                    if answered {
                        metrics.requestFinished(methodIndex: ServerMetrics.methodIndex(request.method),
                                                status: response.status, startedAt: started)
                    } else {
                        metrics.activeRequests.decrement()   // counted when the handler answers
                    }
                    return answered
                }
            }
            return .offloaded({ request, responder in
                let started = metrics.requestStarted()
                let method = ServerMetrics.methodIndex(request.method)
                handler(request, responder.reporting { status, _ in
                    metrics.requestFinished(methodIndex: method, status: status, startedAt: started)
                })
            }, inline: measuredInline)
        case .async(let handler):
            return .async { request, body, writer in
                let started = metrics.requestStarted()
                var method = request.method.rawValue
                let index = method.withUTF8 { ServerMetrics.methodIndex(UnsafeRawBufferPointer($0)) }
                do {
                    try await handler(request, body, writer)
                } catch {
                    metrics.requestFinished(methodIndex: index, status: writer.status ?? 500, startedAt: started)
                    throw error
                }
                metrics.requestFinished(methodIndex: index, status: writer.status ?? 500, startedAt: started)
            }
        }
    }

    /// An `.http` handler counted when it returns, or when the answer it
    /// deferred is complete (`AnswerWatch`).
    private static func measured(_ handler: @escaping HTTPHandler, _ metrics: ServerMetrics) -> HTTPHandler {
        return { request, response in
            let started = metrics.requestStarted()
            let method = ServerMetrics.methodIndex(request.method)
            let deferred = AnswerWatch.watching(Measure(metrics: metrics, method: method, started: started)) {
                handler(request, response)
            }
            if !deferred { metrics.requestFinished(methodIndex: method, status: response.status, startedAt: started) }
        }
    }

    /// A deferred `.http` answer counted when complete.
    private struct Measure: AnswerWatcher {
        let metrics: ServerMetrics, method: Int, started: UInt64
        func report() -> AnswerReport {
            { [metrics, method, started] status, _ in metrics.requestFinished(methodIndex: method, status: status, startedAt: started) }
        }
    }
}
