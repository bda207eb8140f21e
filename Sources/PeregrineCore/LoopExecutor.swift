// An event loop as a Swift task executor (TaskExecutor): the tasks an async
// handler starts prefer it, so they run on the loop thread that owns the
// connection, so a handler that awaits
// nothing else never changes thread, and continuations resume on the loop.
//
// Every engine with loops (the C epoll and libev engines through on_tick,
// the Swift engine directly) makes one per loop, binds it on the loop
// thread at start, runs its jobs after each batch of events, and closes it
// when the loop ends. Jobs enqueued from the loop thread itself go on a
// local list (no lock, no wake-up: the batch's end runs them); from other
// threads onto a locked list, and the first such job wakes the loop.
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

public final class LoopExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: `local`, `owner` and `closed`'s reads on the loop path are
    // the loop thread's; `remote` is guarded by its Mutex.
    // @exclusivity(unchecked) on the loop thread's state: only that thread
    // touches it, never in overlapping accesses, and the runtime's checks
    // cost about 80 instructions each on every request.
    @exclusivity(unchecked) private var local: [UnownedJob] = []
    private let remote = Mutex<Remote>(Remote())
    private let wakeLoop: @Sendable () -> Void
    @exclusivity(unchecked) private var owner: pthread_t? = nil
    /// Handler tasks started on this loop and not yet finished (loop thread only).
    @exclusivity(unchecked) package internal(set) var tasksInFlight = 0
    /// Handlers waiting for `tasksInFlight` to drop under the dispatcher's
    /// limit, oldest first (loop thread only).
    @exclusivity(unchecked) private var parked: [() -> Void] = []
    @exclusivity(unchecked) private var parkedHead = 0
    @exclusivity(unchecked) private var parkedLimit = Int.max

    var parkedCount: Int { parked.count - parkedHead }

    /// What async handlers reuse from one request to the next on this loop
    /// (loop thread only): parked handler tasks, the last request head.
    @exclusivity(unchecked) var handlerParts = HandlerParts()

    /// Runs `launch` once fewer than `limit` handler tasks run (at the end
    /// of a batch's jobs), after the handlers parked before it.
    func park(limit: Int, _ launch: @escaping () -> Void) {
        parkedLimit = limit
        parked.append(launch)
    }

    private struct Remote {
        var jobs: [UnownedJob] = []
        /// The loop ended: jobs go to the global executor from now on.
        var closed = false
    }

    /// `wake` makes the loop run a batch soon (any thread).
    package init(wake: @escaping @Sendable () -> Void) {
        self.wakeLoop = wake
        local.reserveCapacity(64)
    }

    /// The executor of the loop running on this thread, nil elsewhere.
    public static var current: LoopExecutor? {
        guard let p = pthread_getspecific(currentKey) else { return nil }
        return Unmanaged<LoopExecutor>.fromOpaque(p).takeUnretainedValue()
    }

    /// On the loop thread, before it serves: this thread's executor.
    package func bind() {
        owner = pthread_self()
        pthread_setspecific(currentKey, Unmanaged.passUnretained(self).toOpaque())
    }

    private var onLoopThread: Bool {
        guard let owner else { return false }
        return pthread_equal(owner, pthread_self()) != 0
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if onLoopThread {
            local.append(job)
            return
        }
        let closed = remote.withLock { r -> Bool in
            if r.closed { return true }
            r.jobs.append(job)
            // Under the lock: once close() returned, no wake-up is in flight
            // (the engine frees the loop after that).
            if r.jobs.count == 1 { wakeLoop() }
            return false
        }
        if closed {
            // The loop is gone: the task still gets to finish (its writes are refused).
            globalConcurrentExecutor.enqueue(ExecutorJob(job))
        }
    }

    /// Jobs queued from the loop thread and not yet run (loop thread only).
    var queuedHere: Int { local.count }

    /// The loop thread: runs the job queued at `mark` (a task just made
    /// there) now, as this executor; what it queues waits for the batch's end.
    func runQueuedHere(from mark: Int) {
        guard local.count > mark else { return }
        // Usually the last one (removeLast moves nothing).
        let job = mark == local.count - 1 ? local.removeLast() : local.remove(at: mark)
        job.runSynchronously(on: asUnownedTaskExecutor())
    }

    /// The loop thread, after each batch: runs what is queued (and what
    /// those jobs queue, up to a bound so one batch cannot starve the
    /// sockets). Returns the number of jobs run.
    @discardableResult
    package func runJobs() -> Int {
        var ran = 0
        while ran < 4096 {
            if local.isEmpty {
                let taken = remote.withLock { r -> [UnownedJob] in
                    guard !r.jobs.isEmpty else { return [] }
                    defer { r.jobs.removeAll(keepingCapacity: true) }
                    return r.jobs
                }
                if taken.isEmpty { break }
                local.append(contentsOf: taken)
            }
            let batch = local
            local.removeAll(keepingCapacity: true)
            for job in batch {
                job.runSynchronously(on: asUnownedTaskExecutor())
            }
            ran += batch.count
        }
        // Parked handlers take the slots freed in this batch (each launch
        // may answer at once, or queue jobs for the next batch).
        while parkedCount > 0 && tasksInFlight < parkedLimit {
            let launch = parked[parkedHead]
            parkedHead += 1
            if parkedHead == parked.count {
                parked.removeAll(keepingCapacity: true)
                parkedHead = 0
            }
            launch()
            ran += 1
        }
        if ran >= 4096 || (!local.isEmpty) { wakeLoop() }   // more left: the next batch comes at once
        return ran
    }

    /// The loop thread, when the loop ends: what is queued (and whatever is
    /// enqueued later) runs on the global executor instead.
    package func close() {
        handlerParts.retire()   // parked handler tasks end (in the runJobs below)
        _ = runJobs()   // the closes' cancellations run here, where their tasks live
        let left = remote.withLock { r -> [UnownedJob] in
            r.closed = true
            defer { r.jobs = [] }
            return r.jobs
        }
        let mine = local
        local = []
        owner = nil
        pthread_setspecific(currentKey, nil)
        for job in mine + left { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }

}

/// The thread-local slot for `LoopExecutor.current`.
private let currentKey: pthread_key_t = {
    var key = pthread_key_t()
    // Only fails when the process is out of keys: then nothing is bound,
    // `current` stays nil and async handlers run on the global executor.
    if pthread_key_create(&key, nil) != 0 { return pthread_key_t.max }
    return key
}()
