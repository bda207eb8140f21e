// The built-in `stream` app (BuiltinApp.stream, `peregrine serve --app
// stream`): `/?n=N&size=S&ms=T` answers N chunks of S bytes, one every T ms.
// An async handler: it writes each chunk itself, on the loop that owns the
// connection, after sleeping on the app's StreamTimer (no pool); a client
// that reads slowly makes its write suspend at the high mark, and a client
// that leaves cancels the sleep.
#if canImport(Glibc)
import Glibc
#endif
import HTTPTypes

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

/// Wakes sleeping handler tasks at their times (CLOCK_MONOTONIC), from one
/// thread started when a task sleeps and ended when none is left. A sleep
/// costs one heap entry (its time, its order and the task's continuation),
/// where `Task.sleep` costs a libdispatch timer source per sleep (measured:
/// +5.5 KB per open stream against +1 KiB targeted). The sleepers are a
/// binary heap (earliest first, equal times in arrival order): O(log n)
/// under the lock. A woken task is resumed on its own executor (the loop).
final class StreamTimer: @unchecked Sendable {
    // @unchecked: sleepers, nextID and running are guarded by mutex.
    private struct Sleeper {
        var at: UInt64
        var id: UInt64
        var task: UnsafeContinuation<Bool, Never>
    }
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var sleepers: [Sleeper] = []
    private var nextID: UInt64 = 0
    private var running = false

    /// nil when the lock or condition cannot be made.
    init?() {
        var attr = pthread_condattr_t()
        guard pthread_condattr_init(&attr) == 0 else { return nil }
        defer { pthread_condattr_destroy(&attr) }
        guard pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0, pthread_mutex_init(mutex, nil) == 0 else {
            mutex.deallocate(); cond.deallocate(); return nil
        }
        guard pthread_cond_init(cond, &attr) == 0 else {
            pthread_mutex_destroy(mutex); mutex.deallocate(); cond.deallocate(); return nil
        }
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        cond.deallocate()
    }

    /// Suspends until `at` (monotonic ns): `true` then; `false` at once when
    /// the task is cancelled (before or during the sleep) or the timer's
    /// thread cannot be started.
    func sleep(until at: UInt64) async -> Bool {
        pthread_mutex_lock(mutex)
        nextID &+= 1
        let id = nextID
        pthread_mutex_unlock(mutex)
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { (task: UnsafeContinuation<Bool, Never>) in
                if !add(Sleeper(at: at, id: id, task: task)) { task.resume(returning: false) }
            }
        } onCancel: {
            cancel(id)
        }
    }

    /// false: cancelled already, or no thread. The cancellation flag is set
    /// before `cancel` runs, and both hold the lock: a sleeper is either
    /// added before `cancel` looks for it, or sees the flag here.
    private func add(_ s: Sleeper) -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        if Task.isCancelled { return false }
        if !running {
            var t = pthread_t()
            if startThread(&t, { self.work() }) != 0 { return false }
            pthread_detach(t)
            running = true
        }
        push(s)
        pthread_cond_signal(cond)
        return true
    }

    private func cancel(_ id: UInt64) {
        pthread_mutex_lock(mutex)
        guard let i = sleepers.firstIndex(where: { $0.id == id }) else {
            pthread_mutex_unlock(mutex)   // woken already, or not added yet (then `add` sees the flag)
            return
        }
        let s = remove(at: i)
        pthread_mutex_unlock(mutex)
        s.task.resume(returning: false)
    }

    private func work() {
        pthread_mutex_lock(mutex)
        var due: [UnsafeContinuation<Bool, Never>] = []
        while let at = sleepers.first?.at {
            let now = monotonicNanoseconds()
            if at > now {
                var ts = timespec(tv_sec: Int(at / 1_000_000_000), tv_nsec: Int(at % 1_000_000_000))
                pthread_cond_timedwait(cond, mutex, &ts)
                continue   // an earlier sleeper may have come meanwhile
            }
            while let first = sleepers.first, first.at <= now { due.append(remove(at: 0).task) }
            pthread_mutex_unlock(mutex)
            for task in due { task.resume(returning: true) }
            due.removeAll(keepingCapacity: true)
            pthread_mutex_lock(mutex)
        }
        running = false
        pthread_mutex_unlock(mutex)
    }

    // MARK: The heap (under the lock)

    private func earlier(_ i: Int, _ j: Int) -> Bool {
        sleepers[i].at < sleepers[j].at || (sleepers[i].at == sleepers[j].at && sleepers[i].id < sleepers[j].id)
    }

    private func push(_ s: Sleeper) {
        sleepers.append(s)
        siftUp(sleepers.count - 1)
    }

    private func remove(at i: Int) -> Sleeper {
        sleepers.swapAt(i, sleepers.count - 1)
        let s = sleepers.removeLast()
        if i < sleepers.count {
            siftDown(i)
            siftUp(i)
        }
        return s
    }

    private func siftUp(_ start: Int) {
        var i = start
        while i > 0 {
            let parent = (i - 1) / 2
            if !earlier(i, parent) { break }
            sleepers.swapAt(i, parent)
            i = parent
        }
    }

    private func siftDown(_ start: Int) {
        var i = start
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < sleepers.count && earlier(l, m) { m = l }
            if r < sleepers.count && earlier(r, m) { m = r }
            if m == i { return }
            sleepers.swapAt(i, m)
            i = m
        }
    }
}

/// The stream app's timer had no thread to wake its sleepers.
struct StreamTimerUnavailable: Error, CustomStringConvertible {
    var description: String { "stream: the timer thread could not be started" }
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
    /// The `stream` app: an async handler per answer. Chunk i is written at
    /// i × T after the request started (absolute times: a late wake-up does
    /// not delay the chunks after it).
    static func streamApplication() -> Application {
        guard let timer = StreamTimer() else {
            return .http { _, response in
                response.send(status: 500, contentType: "text/plain", body: "stream: no timer (pthread init failed)\n")
            }
        }
        let ok = HTTPResponse(status: .ok, headerFields: [.contentType: "text/plain"])
        let bad = HTTPResponse(status: .badRequest, headerFields: [.contentType: "text/plain"])
        let bounds = Array(StreamAppRequest.bounds.utf8)
        return .async { request, _, writer in
            let path = request.path ?? ""
            let query = path.firstIndex(of: "?").map { path[path.index(after: $0)...] }
            guard let asked = StreamAppRequest(query: query) else {
                return try await writer.respond(bad, body: bounds)
            }
            // The handler's first job runs on the loop thread of the engines
            // that have one; the blocking and threaded engines run it on the
            // global executor and buffer the whole answer: no stream there.
            guard LoopExecutor.current != nil else {
                return try await writer.respond(HTTPResponse(status: .notImplemented, headerFields: [.contentType: "text/plain"]),
                                                body: "stream: this engine cannot stream a response (blocking, threaded)\n")
            }
            let chunk = StreamAppBytes.shared.chunk(asked.size)
            let start = monotonicNanoseconds()
            do {
                try await writer.writeHead(ok)
                for i in 0..<asked.n {
                    if i > 0 && asked.ms > 0 {
                        guard await timer.sleep(until: start + UInt64(i * asked.ms) * 1_000_000) else {
                            if Task.isCancelled { return }   // the client left (or the server stops)
                            throw StreamTimerUnavailable()
                        }
                    }
                    try await writer.write(chunk)
                }
                try await writer.finish()
            } catch is CancellationError {
                // The client left (or the server stops): the writer ends
                // what was written; nothing to log.
            } catch ResponseWriterError.clientGone {
            }
        }
    }
}
