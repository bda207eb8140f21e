// Answering later: handlers that run off the event loop (a bounded pool of
// threads, or a Swift concurrency task) and answer from there.
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization

/// A request copied out of the receive buffer, so it outlives the handler
/// call (the `Request` view does not). Costs allocations: offloaded requests
/// only.
public struct OwnedRequest: Sendable {
    public let method: String
    public let target: String
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    public let versionMinor: Int
    public let keepAlive: Bool
    /// Header fields in arrival order, names as sent.
    public let headers: [(name: String, value: String)]
    public let body: [UInt8]
    /// `Request.remoteAddress`.
    public let remoteAddress: SocketAddress?

    public init(_ request: Request) {
        method = request.methodString
        target = request.targetString
        versionMinor = request.versionMinor
        keepAlive = request.keepAlive
        var hs: [(name: String, value: String)] = []
        hs.reserveCapacity(request.headerCount)
        for i in 0..<request.headerCount {
            hs.append((String(decoding: request.headerName(at: i), as: UTF8.self),
                       String(decoding: request.headerValue(at: i), as: UTF8.self)))
        }
        headers = hs
        body = Array(request.body)
        remoteAddress = request.remoteAddress
    }

    /// The first header named `name` (ASCII case-insensitive).
    public func header(named name: String) -> String? {
        let wanted = name.lowercased()
        return headers.first { $0.name.lowercased() == wanted }?.value
    }

    /// The path part of the target (before `?`).
    public var path: Substring { target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "" }
    /// The query part of the target (after `?`), if any.
    public var query: Substring? {
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        return parts.count == 2 ? parts[1] : nil
    }
}

/// A complete answer: status, headers, body. `Content-Length` is added
/// unless a header gives one; framing and keep-alive stay the engine's
/// (the same rules as `Response.header`: a refused header is left out).
public struct OffloadAnswer: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int = 200, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public init(status: Int = 200, contentType: String = "text/plain",
                headers: [(name: String, value: String)] = [], body: String) {
        self.init(status: status, headers: [("Content-Type", contentType)] + headers, body: Array(body.utf8))
    }
}

/// The handle an offloaded handler answers through: one-shot, usable from
/// any thread at any time. It stays safe after the client went away: the
/// answer is then dropped. A responder released without an answer answers
/// `500` (so a forgotten request does not hang its connection).
public final class Responder: Sendable {
    private let done = Atomic<Bool>(false)
    private let deliver: @Sendable (OffloadAnswer) -> Bool
    private let openStream: (@Sendable () -> (any DeferredAnswerEngine)?)?

    /// `deliver` receives the one answer (engines provide it) and says
    /// whether the client will get it: `false` when the engine dropped it
    /// (the handler timed out and the client got `503`, or the connection
    /// is gone). `openStream` gives the deferred answer to stream through
    /// (nil: `stream()` throws `ResponseStreamUnsupported`; it returning
    /// nil: `ResponseStreamUnavailable`).
    package init(deliverReporting deliver: @escaping @Sendable (OffloadAnswer) -> Bool,
                openStream: (@Sendable () -> (any DeferredAnswerEngine)?)? = nil) {
        self.deliver = deliver
        self.openStream = openStream
    }

    /// Answers over time instead of once: the returned stream is the answer
    /// (`send` is refused from here on). Throws `ResponseStreamUnsupported`
    /// where the answer is waited for instead of deferred (the engine could
    /// not defer it; the responder is then still unanswered), and
    /// `ResponseStreamUnavailable` when an answer was already given.
    public func stream() throws -> ResponseStream {
        guard openStream != nil else { throw ResponseStreamUnsupported(engine: "waiting (the answer was not deferred)") }
        guard let engine = takeStream() else { throw ResponseStreamUnavailable() }
        return ResponseStream(engine: engine)
    }

    /// The deferred answer, taken as this responder's answer; nil when it
    /// cannot stream or answered already.
    private func takeStream() -> (any DeferredAnswerEngine)? {
        guard let openStream else { return nil }
        // The stream is made only by the caller that takes the answer: a
        // stream made and dropped would be a release (500 before the head).
        guard done.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            return nil
        }
        return openStream()
    }

    /// A responder for the handler that answers through this one and tells
    /// `report` once how the answer ended (the access log, metrics): a
    /// `send` when given, a stream when it ends or is dropped. It streams
    /// where this one streams.
    package func reporting(_ report: @escaping AnswerReport) -> Responder {
        let deliver: @Sendable (OffloadAnswer) -> Bool = { answer in
            let delivered = self.send(answer)
            report(answer.status, answer.body.count)   // once: the new responder delivers once
            return delivered
        }
        guard openStream != nil else { return Responder(deliverReporting: deliver) }
        return Responder(deliverReporting: deliver, openStream: {
            // Only the new responder reaches this one: it is unanswered here.
            self.takeStream().map { ReportingAnswer($0, report: report) }
        })
    }

    /// `deliver` that always takes the answer.
    package convenience init(deliver: @escaping @Sendable (OffloadAnswer) -> Void) {
        self.init(deliverReporting: { (answer: OffloadAnswer) -> Bool in deliver(answer); return true })
    }

    /// Answers. `false` when the answer will not reach the client: an
    /// answer was already given (this one is ignored), the handler timeout
    /// passed (`Configuration.handlerTimeout`: the client got `503`), or the
    /// connection closed meanwhile.
    @discardableResult
    public func send(_ answer: OffloadAnswer) -> Bool {
        guard done.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            return false
        }
        return deliver(answer)
    }

    @discardableResult
    public func send(status: Int = 200, contentType: String = "text/plain",
                     headers: [(name: String, value: String)] = [], body: String) -> Bool {
        send(OffloadAnswer(status: status, contentType: contentType, headers: headers, body: body))
    }

    @discardableResult
    public func send(status: Int = 200, headers: [(name: String, value: String)] = [], bytes: [UInt8]) -> Bool {
        send(OffloadAnswer(status: status, headers: headers, body: bytes))
    }

    /// Whether an answer was given.
    public var isAnswered: Bool { done.load(ordering: .acquiring) }

    deinit {
        if !done.load(ordering: .acquiring) {
            _ = deliver(OffloadAnswer(status: 500, body: "handler did not respond\n"))
        }
    }
}

/// How an answer ended, for the access log and metrics: the status the
/// client got (as far as known: 500 for an answer released unbegun) and
/// the body bytes taken for it.
package typealias AnswerReport = @Sendable (_ status: Int, _ bytes: Int) -> Void

/// A deferred answer that tells `report` once how it ended: when the one
/// answer is given, when the stream ends, or when it is released (the
/// client left, the handler dropped it). The one place where wrappers
/// learn that an answer given over time is complete.
package final class ReportingAnswer: DeferredAnswerEngine {
    private let inner: any DeferredAnswerEngine
    private let report: AnswerReport
    private let status = Atomic<Int>(0)
    private let bytes = Atomic<Int>(0)
    private let reported = Atomic<Bool>(false)

    package init(_ inner: any DeferredAnswerEngine, report: @escaping AnswerReport) {
        self.inner = inner
        self.report = report
    }

    deinit { finish() }

    private func finish() {
        guard !reported.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let s = status.load(ordering: .acquiring)
        report(s == 0 ? 500 : s, bytes.load(ordering: .acquiring))   // released unbegun: the engine answers 500
    }

    package func complete(_ answer: OffloadAnswer) -> Bool {
        let delivered = inner.complete(answer)
        status.store(answer.status, ordering: .releasing)
        bytes.store(answer.body.count, ordering: .releasing)
        finish()
        return delivered
    }

    package func streamHeader(name: String, value: String) -> Int32 { inner.streamHeader(name: name, value: value) }

    package func streamHead(status s: Int) -> Int32 {
        let code = inner.streamHead(status: s)
        if code >= 0 { status.store(s, ordering: .releasing) }
        else if code == -ETIMEDOUT { status.store(503, ordering: .releasing) }   // the client got 503
        return code
    }

    package func streamWrite(_ b: UnsafeRawBufferPointer) -> Int32 {
        let code = inner.streamWrite(b)
        if code >= 0 { bytes.add(b.count, ordering: .relaxed) }
        return code
    }

    package func streamTrailer(name: String, value: String) -> Int32 { inner.streamTrailer(name: name, value: value) }

    package func streamEnd() -> Int32 {
        let code = inner.streamEnd()
        if code != -EPROTO { finish() }   // not headed: the stream goes on
        return code
    }

    package func streamOnWritable(_ callback: (@Sendable () -> Void)?) { inner.streamOnWritable(callback) }
}

/// A wrapper watching an `.http` handler call (`AnswerWatch`): what it
/// reports when the answer the handler deferred is complete. `report()` is
/// called during the handler call (its request is still readable).
package protocol AnswerWatcher {
    func report() -> AnswerReport
}

extension AnswerWatcher {
    fileprivate static func report(at watcher: UnsafeRawPointer) -> AnswerReport {
        watcher.assumingMemoryBound(to: Self.self).pointee.report()
    }
}

/// `.http` handlers under the access log or metrics: an answer the handler
/// defers (`Response.deferAnswer()`, the stream app) is complete only
/// after the handler returns. The wrappers watch the handler call; a
/// deferral during it is wrapped in a `ReportingAnswer` that reports to
/// each of them when the answer is complete. A watch costs no allocation
/// (its frame and watcher are on the stack, found through a thread-specific
/// slot): the metrics wrapper counts a request allocation-free.
package enum AnswerWatch {
    /// A watch in progress; `outer`: the enclosing one on this thread.
    private struct Frame {
        let watcher: UnsafeRawPointer
        let type: any AnswerWatcher.Type
        let outer: UnsafeMutableRawPointer?
        var deferred = false
    }

    /// The innermost frame of this thread's watched handler call; nil
    /// when the key could not be made (nothing is watched then).
    private static let key: pthread_key_t? = {
        var key = pthread_key_t()
        return pthread_key_create(&key, nil) == 0 ? key : nil
    }()
    /// Set by the first watch: until then `deferAnswer` looks for none.
    private static let enabled = Atomic<Bool>(false)

    /// Runs `handler`; `true` when it deferred its answer: `watcher`'s
    /// report then runs once when the answer is complete. `false`: the
    /// caller reports the answer now.
    package static func watching<W: AnswerWatcher>(_ watcher: W, _ handler: () -> Void) -> Bool {
        guard let key else { handler(); return false }
        enabled.store(true, ordering: .relaxed)
        return withUnsafePointer(to: watcher) { w in
            var frame = Frame(watcher: UnsafeRawPointer(w), type: W.self, outer: pthread_getspecific(key))
            return withUnsafeMutablePointer(to: &frame) { p in
                // Setting a key made here fails only for a bad key: then no watch, reported now.
                guard pthread_setspecific(key, p) == 0 else { handler(); return false }
                handler()
                _ = pthread_setspecific(key, p.pointee.outer)   // the value it held: cannot fail
                return p.pointee.deferred
            }
        }
    }

    /// An answer deferred now, reporting to the watches of this thread's
    /// handler call; as it is when none watches.
    package static func wrap(_ engine: any DeferredAnswerEngine) -> any DeferredAnswerEngine {
        guard enabled.load(ordering: .relaxed), let key, var next = pthread_getspecific(key) else { return engine }
        var reports: [AnswerReport] = []
        while true {
            let frame = next.assumingMemoryBound(to: Frame.self)
            frame.pointee.deferred = true
            reports.append(frame.pointee.type.report(at: frame.pointee.watcher))
            guard let outer = frame.pointee.outer else { break }
            next = outer
        }
        let each = reports
        return ReportingAnswer(engine, report: { status, bytes in for report in each { report(status, bytes) } })
    }
}

/// Runs on a worker of the server's offload pool (`Configuration.offloadThreads`),
/// so it may block (sleep, a database call). Answers through `responder`,
/// from this thread or any other, now or later.
public typealias OffloadedHandler = @Sendable (OwnedRequest, Responder) -> Void

/// The one dispatch of `.offloaded` applications for every engine that
/// defers (`Response.deferAnswer()`): the inline route first, then a copy
/// of the request to the pool, whose handler answers through a `Responder`
/// over the deferred handle (every engine defers; when it cannot, out of
/// memory, the handler runs inline and is waited for).
package final class OffloadDispatcher: Sendable {
    let handler: OffloadedHandler
    let inline: InlineRoute?
    package let pool: OffloadPool
    let failures: FailureLog
    /// No deferred handle (out of memory): the handler inline, waited for.
    let waiting: HTTPHandler

    package init(handler: @escaping OffloadedHandler, inline: InlineRoute?, threads: Int, queueLimit: Int, logger: Logger) {
        self.handler = handler
        self.inline = inline
        pool = OffloadPool(threads: threads, queueLimit: queueLimit)
        failures = FailureLog(logger: logger)
        waiting = Application.offloaded(handler, inline: nil).waitingHandler(routeFirst: false)!
    }

    /// The engine's request callback.
    package func handle(_ request: Request, _ response: Response) {
        if let inline {
            if inline(request, response) { return }
            // The route began an answer and then declined the request: the
            // handler must not run behind it (it would block the loop).
            if response.status != 0 {
                failures.warning("route for \(request.methodString) \(request.targetString) began an answer and declined the request: 500")
                if !response.replace(status: 500) { response.end() }
                return
            }
        }
        guard let d = response.deferAnswer() else {
            waiting(request, response)   // the engine could not defer: inline
            return
        }
        let responder = Responder(deliverReporting: { d.complete($0) }, openStream: { d })
        let owned = OwnedRequest(request)
        let handler = self.handler
        if !pool.submit({ handler(owned, responder) }) {
            failures.warning("offload queue full: 503 for \(owned.method) \(owned.target)")
            responder.send(status: 503, headers: [("Retry-After", "1")], body: "Service Unavailable\n")
        }
    }
}

/// A fixed set of worker threads and a bounded queue of jobs. `submit`
/// never blocks: with the queue full it returns `false` (the server then
/// answers `503 Service Unavailable`).
///
/// Wakes are economical: a job queued while some worker is already awake and
/// looking for work (or woken and not yet running) wakes nobody; a worker
/// that takes a job and leaves others queued wakes the next sleeper itself if
/// no other worker is looking. So a burst of short jobs costs one or two
/// wakes instead of one per job, and jobs that block still spread over the
/// workers (each taken job hands the queue on). The lock is taken with a
/// short try-lock spin first: its holders keep it for a few instructions.
package final class OffloadPool: @unchecked Sendable {
    // @unchecked: jobs, head, stopping, running, sleeping, looking and
    // threads are guarded by mutex.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var jobs: [@Sendable () -> Void] = []
    private var head = 0
    private var stopping = false
    private var running = 0
    /// Workers in `pthread_cond_wait`.
    private var sleeping = 0
    /// Signals sent and not yet taken by a worker returning from its wait.
    private var signals = 0
    /// Workers awake and not running a job (about to take one).
    private var looking = 0
    private var threads: [pthread_t] = []
    package let threadCount: Int
    /// Jobs waiting for a worker at most, beyond one running on each worker.
    package let queueLimit: Int

    /// Nonzero: the errno initialising the mutex or condition failed with;
    /// `start` returns it and `submit` refuses every job.
    private let initFailure: Int32
    private let condReady: Bool

    package init(threads: Int, queueLimit: Int) {
        threadCount = max(1, threads)
        self.queueLimit = max(0, queueLimit)
        let m = pthread_mutex_init(mutex, nil)
        let c = m == 0 ? pthread_cond_init(cond, nil) : m
        if c != 0 && m == 0 { pthread_mutex_destroy(mutex) }
        initFailure = c
        condReady = c == 0
    }

    deinit {
        if condReady {
            shutdown()
            pthread_cond_destroy(cond)
            pthread_mutex_destroy(mutex)
        }
        mutex.deallocate()
        cond.deallocate()
    }

    /// Held for a few instructions at a time: a short try-lock spin first
    /// saves the futex sleep and wake of a contended `pthread_mutex_lock`.
    @inline(__always)
    private func lock() {
        for _ in 0..<64 where pthread_mutex_trylock(mutex) == 0 { return }
        pthread_mutex_lock(mutex)
    }

    /// Starts the workers. Returns 0 or an errno.
    package func start() -> Int32 {
        if initFailure != 0 { return initFailure }
        lock()
        defer { pthread_mutex_unlock(mutex) }
        stopping = false   // a server may be started again after stop
        if threads.isEmpty { sleeping = 0; signals = 0; looking = 0; running = 0 }
        for _ in 0..<threadCount {
            var t = pthread_t()
            looking += 1   // until its first wait
            let rc = startThread(&t) { self.work() }   // workers take no signals
            if rc != 0 { looking -= 1; return rc }
            threads.append(t)
        }
        return 0
    }

    /// Queues a job. `false` when the queue is full or the pool stopped.
    package func submit(_ job: @escaping @Sendable () -> Void) -> Bool {
        if initFailure != 0 { return false }
        lock()
        guard !stopping, running + jobs.count - head < threadCount + queueLimit else {
            pthread_mutex_unlock(mutex)
            return false
        }
        jobs.append(job)
        let wake = wakeNeeded()
        pthread_mutex_unlock(mutex)
        if wake { pthread_cond_signal(cond) }
        return true
    }

    /// Under the lock: jobs are queued; whether to wake a sleeper (none is
    /// woken while some worker is looking: it takes one and hands the rest
    /// on). The caller signals after unlocking, so the woken worker does not
    /// find the lock still held (the sleeper counted here waits already:
    /// the signal reaches it).
    @inline(__always)
    private func wakeNeeded() -> Bool {
        guard looking == 0 && signals == 0 && sleeping > 0 else { return false }
        signals += 1
        return true
    }

    /// Drops the jobs still queued (their responders answer 500, which a
    /// stopped server drops), waits for the running ones, ends the workers.
    package func shutdown() {
        if initFailure != 0 { return }
        lock()
        stopping = true
        let dropped = jobs
        jobs = []
        head = 0
        let workers = threads
        threads = []
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
        _ = dropped   // released here, outside the lock
        for t in workers { pthread_join(t, nil) }
    }

    private func work() {
        lock()
        while true {
            // Here this worker counts in `looking`.
            while jobs.count == head && !stopping {
                looking -= 1
                sleeping += 1
                pthread_cond_wait(cond, mutex)
                // Whichever waiter returns takes a pending signal (a spurious
                // wake may take another's: the count only says someone is up).
                sleeping -= 1
                looking += 1
                if signals > 0 { signals -= 1 }
            }
            if stopping { looking -= 1; break }
            let job = jobs[head]
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 64 && head * 2 >= jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            looking -= 1
            running += 1
            let wake = jobs.count > head && wakeNeeded()   // hand the rest on
            pthread_mutex_unlock(mutex)
            if wake { pthread_cond_signal(cond) }
            job()
            lock()
            running -= 1
            looking += 1
        }
        pthread_mutex_unlock(mutex)
    }
}

/// Waits for one answer (engines that may block run offloaded handlers
/// inline and wait here).
final class AnswerLatch: @unchecked Sendable {
    // @unchecked: answer is guarded by mutex.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>
    private var answer: OffloadAnswer?

    /// nil when the mutex or condition cannot be initialised.
    static func make() -> AnswerLatch? {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        let c = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        if pthread_mutex_init(m, nil) == 0 {
            if pthread_cond_init(c, nil) == 0 { return AnswerLatch(mutex: m, cond: c) }
            pthread_mutex_destroy(m)
        }
        m.deallocate()
        c.deallocate()
        return nil
    }

    private init(mutex: UnsafeMutablePointer<pthread_mutex_t>, cond: UnsafeMutablePointer<pthread_cond_t>) {
        self.mutex = mutex
        self.cond = cond
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        cond.deallocate()
    }

    func put(_ a: OffloadAnswer) {
        pthread_mutex_lock(mutex)
        answer = a
        pthread_cond_signal(cond)
        pthread_mutex_unlock(mutex)
    }

    func wait() -> OffloadAnswer {
        pthread_mutex_lock(mutex)
        while answer == nil { pthread_cond_wait(cond, mutex) }
        let a = answer!
        pthread_mutex_unlock(mutex)
        return a
    }
}

extension Response {
    /// Writes a complete answer (inline engines, and the Swift engine).
    package func write(answer: OffloadAnswer) {
        guard begin(status: answer.status) else { return }   // the engine answers 500
        var hasLength = false
        for (name, value) in answer.headers {
            if name.lowercased() == "content-length" { hasLength = true }
            header(name, value)
        }
        if !hasLength && answer.status != 204 && answer.status != 304 {
            header("Content-Length", String(answer.body.count))
        }
        if !answer.body.isEmpty { answer.body.withUnsafeBytes { _ = write($0) } }
        end()
    }
}

extension Application {
    /// An HTTP handler that runs an `.offloaded` application inline and
    /// waits for its answer, for engines where a handler may block
    /// (blocking, threaded). nil for the others.
    package var inlineHandler: HTTPHandler? { waitingHandler(routeFirst: true) }

    /// `inlineHandler`; `routeFirst: false` skips `.offloaded`'s inline route
    /// (for a caller that already ran it).
    package func waitingHandler(routeFirst: Bool) -> HTTPHandler? {
        switch self {
        case .http, .raw, .streaming, .async:
            return nil
        case .offloaded(let handler, let inline):
            return { request, response in
                if routeFirst, let inline {
                    if inline(request, response) { return }
                    // The route began an answer and then declined: 500, and
                    // no handler behind it (as the engines that defer).
                    if response.status != 0 {
                        if !response.replace(status: 500) { response.end() }
                        return
                    }
                }
                guard let latch = AnswerLatch.make() else {
                    response.send(status: 500, body: "no memory to wait for the handler\n")
                    return
                }
                handler(OwnedRequest(request), Responder { latch.put($0) })
                response.write(answer: latch.wait())
            }
        }
    }
}
