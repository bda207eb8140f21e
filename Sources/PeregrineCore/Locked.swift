// State shared between threads behind a pthread mutex, with a condition to
// wait for it to change (lifecycle state: not for the hot path).
#if canImport(Glibc)
import Glibc
#endif

/// `State` behind a pthread mutex. Not `Synchronization.Mutex`: on Linux that
/// one waits on a raw futex, which ThreadSanitizer cannot see, so every
/// access it protects would be reported as a race.
package final class Locked<State>: @unchecked Sendable {
    // @unchecked: `state` is touched only with `mutex` held.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let changed = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var state: State

    package init(_ state: State) {
        self.state = state
        // With default attributes glibc's init cannot fail; a libc where it
        // does leaves no lock to use.
        precondition(pthread_mutex_init(mutex, nil) == 0, "pthread_mutex_init failed")
        precondition(pthread_cond_init(changed, nil) == 0, "pthread_cond_init failed")
    }

    deinit {
        pthread_cond_destroy(changed)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        changed.deallocate()
    }

    /// Runs `body` with the lock held; then wakes every `wait(until:)`.
    package func withLock<R>(_ body: (inout State) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer {
            pthread_cond_broadcast(changed)
            pthread_mutex_unlock(mutex)
        }
        return try body(&state)
    }

    /// Blocks until `ready` holds (checked with the lock held, again after
    /// each `withLock`).
    package func wait(until ready: (State) -> Bool) {
        pthread_mutex_lock(mutex)
        while !ready(state) { pthread_cond_wait(changed, mutex) }
        pthread_mutex_unlock(mutex)
    }
}
