// The built-in `stream` app (BuiltinApp.stream, `peregrine serve --app
// stream`): `/?n=N&size=S&ms=T` answers N chunks of S bytes, one every T ms,
// through a ResponseStream. The handler takes the answer on the loop (no
// pool thread, so no pool queue to overflow with 10,000 streams), and one
// timer thread per app (Ticker) writes the chunks: an open stream costs its
// stream and one small job, not a task. A client that reads slowly parks
// its stream (onWritable) instead of growing its queue.
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// What `/?n=N&size=S&ms=T` asks for; nil when a value is missing its
/// number, out of bounds, or the key is unknown.
struct StreamAppRequest: Equatable {
    static let chunks = 1...10_000
    static let chunkSize = 1...65_536
    static let intervalMs = 0...60_000
    static let bounds = "stream: /?n=N&size=S&ms=T with n 1...10000, size 1...65536, ms 0...60000\n"

    var n = 10
    var size = 64
    var ms = 100

    init?(query: Substring?) {
        guard let query, !query.isEmpty else { return }
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard kv.count == 2, let v = Int(kv[1]) else { return nil }
            switch kv[0] {
            case "n": guard Self.chunks.contains(v) else { return nil }; n = v
            case "size": guard Self.chunkSize.contains(v) else { return nil }; size = v
            case "ms": guard Self.intervalMs.contains(v) else { return nil }; ms = v
            default: return nil
            }
        }
    }
}

/// Runs jobs at their times (CLOCK_MONOTONIC) on one thread, started when a
/// job is scheduled and ended when none is left. The jobs are a binary heap
/// (earliest first; equal times in scheduling order), so scheduling and
/// taking one are O(log n) under the lock: with 10,000 streams, a linear
/// scan per job held the lock long enough to stall the offload workers
/// that schedule, their queue filled and new streams got 503.
package final class Ticker: @unchecked Sendable {
    // @unchecked: jobs, seq and running are guarded by mutex.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var jobs: [(at: UInt64, seq: UInt64, run: @Sendable () -> Void)] = []
    private var seq: UInt64 = 0
    private var running = false
    private var jobRunning = false

    private func earlier(_ i: Int, _ j: Int) -> Bool {
        jobs[i].at < jobs[j].at || (jobs[i].at == jobs[j].at && jobs[i].seq < jobs[j].seq)
    }

    private func push(_ at: UInt64, _ run: @escaping @Sendable () -> Void) {
        seq &+= 1
        jobs.append((at, seq, run))
        var i = jobs.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if !earlier(i, parent) { break }
            jobs.swapAt(i, parent)
            i = parent
        }
    }

    private func popFirst() -> @Sendable () -> Void {
        jobs.swapAt(0, jobs.count - 1)
        let run = jobs.removeLast().run
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < jobs.count && earlier(l, m) { m = l }
            if r < jobs.count && earlier(r, m) { m = r }
            if m == i { break }
            jobs.swapAt(i, m)
            i = m
        }
        return run
    }

    package init() {
        // With these attributes glibc's inits cannot fail; a libc where they
        // do leaves no timer to use.
        var attr = pthread_condattr_t()
        precondition(pthread_condattr_init(&attr) == 0 && pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0,
                     "pthread_condattr failed")
        precondition(pthread_mutex_init(mutex, nil) == 0 && pthread_cond_init(cond, &attr) == 0, "pthread init failed")
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        cond.deallocate()
    }

    /// Runs `job` on the timer thread at `at` (monotonic ns). `false` when
    /// the thread could not be started (the job will not run).
    func schedule(at: UInt64, _ job: @escaping @Sendable () -> Void) -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        if running {
            push(at, job)
            pthread_cond_signal(cond)
            return true
        }
        var t = pthread_t()
        if startThread(&t, { self.work() }) != 0 { return false }
        push(at, job)   // the thread waits for the lock held here
        pthread_detach(t)
        running = true
        return true
    }

    /// The jobs scheduled or running now (a job that reschedules itself
    /// from its run is counted once throughout): for tests.
    package var liveJobs: Int {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return jobs.count + (jobRunning ? 1 : 0)
    }

    private func work() {
        pthread_mutex_lock(mutex)
        while let at = jobs.first?.at {
            if at > monotonicNanoseconds() {
                var ts = timespec(tv_sec: Int(at / 1_000_000_000), tv_nsec: Int(at % 1_000_000_000))
                pthread_cond_timedwait(cond, mutex, &ts)
                continue   // a job may have come meanwhile: pick again
            }
            let job = popFirst()
            jobRunning = true
            pthread_mutex_unlock(mutex)
            job()
            pthread_mutex_lock(mutex)
            jobRunning = false
        }
        running = false
        pthread_mutex_unlock(mutex)
    }
}

/// One answer of the stream app: writes its chunks at their times; parks
/// on `.wouldBlock` until onWritable.
final class StreamAppJob: Sendable {
    private enum Park { static let running: UInt8 = 0, parked: UInt8 = 1, wokenWhileRunning: UInt8 = 2 }
    private let stream: ResponseStream
    private let ticker: Ticker
    private let size: Int
    private let interval: UInt64
    private let total: Int
    private let progress: Locked<(sent: Int, next: UInt64)>
    private let park = Atomic<UInt8>(Park.running)

    init(stream: ResponseStream, ticker: Ticker, request: StreamAppRequest) {
        self.stream = stream
        self.ticker = ticker
        size = request.size
        interval = UInt64(request.ms) * 1_000_000
        total = request.n
        progress = Locked((0, monotonicNanoseconds()))
    }

    func start() {
        stream.onWritable { [self] in
            if park.compareExchange(expected: Park.parked, desired: Park.running, ordering: .acquiringAndReleasing).exchanged {
                scheduleNext()
            } else {
                _ = park.compareExchange(expected: Park.running, desired: Park.wokenWhileRunning, ordering: .acquiringAndReleasing)
            }
        }
        scheduleNext()
    }

    private func scheduleNext() {
        let at = progress.withLock { $0.next }
        if !ticker.schedule(at: at, { [self] in tick() }) { finish(end: true) }
    }

    /// The cycle stream -> onWritable -> self ends here.
    private func finish(end: Bool) {
        stream.onWritable(nil)
        if end { stream.end() }
    }

    private func tick() {
        let r = stream.write(StreamAppBytes.shared.chunk(size))
        guard r.isAccepted else { return finish(end: false) }   // the client left, or the stream ended
        let done = progress.withLock { p -> Bool in
            p.sent += 1
            p.next &+= interval
            return p.sent == total
        }
        if done { return finish(end: true) }
        if r == .wouldBlock {
            if park.compareExchange(expected: Park.running, desired: Park.parked, ordering: .acquiringAndReleasing).exchanged {
                return   // onWritable schedules the next chunk
            }
            park.store(Park.running, ordering: .releasing)   // woken already
        }
        scheduleNext()
    }
}

/// The bytes every answer's chunks are cut from: 65,535 `x` and a newline,
/// made once; a chunk of S bytes is the last S (no copy per stream).
private final class StreamAppBytes: @unchecked Sendable {
    // @unchecked: written once in init, only read afterwards.
    static let shared = StreamAppBytes()
    let bytes: UnsafeRawBufferPointer

    private init() {
        let count = StreamAppRequest.chunkSize.upperBound
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 1)
        b.initializeMemory(as: UInt8.self, repeating: UInt8(ascii: "x"))
        b[count - 1] = UInt8(ascii: "\n")
        bytes = UnsafeRawBufferPointer(b)   // kept for the process's life
    }

    /// `size` bytes: `size - 1` times `x`, then a newline.
    func chunk(_ size: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[(bytes.count - size)...])
    }
}

extension BuiltinApp {
    /// The `stream` app: one ticker per application. The answer is taken
    /// inside the request callback (`deferAnswer`), on the loop (or the
    /// connection's thread): nothing waits for a pool thread. Every engine
    /// streams; a request the engine cannot defer (out of memory) gets 503.
    package static func streamApplication(ticker: Ticker = Ticker()) -> Application {
        return .http { request, response in
            let target = request.targetString
            let query = target.firstIndex(of: "?").map { target[target.index(after: $0)...] }
            guard let asked = StreamAppRequest(query: query) else {
                response.send(status: 400, contentType: "text/plain", body: StreamAppRequest.bounds)
                return
            }
            guard let engine = response.deferAnswer() else {
                response.send(status: 503, contentType: "text/plain", body: "stream: the answer could not be deferred\n")
                return
            }
            let stream = ResponseStream(engine: engine)
            stream.head(status: 200, headers: [("Content-Type", "text/plain")])
            StreamAppJob(stream: stream, ticker: ticker, request: asked).start()
        }
    }
}
