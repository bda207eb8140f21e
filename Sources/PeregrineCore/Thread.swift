// Threads the library starts (event loops, offload workers, the signal
// watcher of Server.run): one way to start a pthread running Swift code.
#if canImport(Glibc)
import Glibc
#endif

/// Starts a pthread that runs `body` once and ends; the caller joins it with
/// `pthread_join(thread, nil)`. Every signal is blocked in the new thread,
/// so SIGINT and SIGTERM reach the application's own threads
/// (`Server.run` waits for them with sigwait).
/// Returns 0 with the thread in `thread`, or the errno of pthread_sigmask or
/// pthread_create (then no thread was started).
package func startThread(_ thread: inout pthread_t, _ body: @escaping @Sendable () -> Void) -> Int32 {
    var all = sigset_t(), previous = sigset_t()
    sigfillset(&all)
    // The new thread inherits the mask in effect at pthread_create.
    let blocked = pthread_sigmask(SIG_BLOCK, &all, &previous)
    if blocked != 0 { return blocked }
    let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    let created = pthread_create(&thread, nil, { arg in
        Unmanaged<ThreadBody>.fromOpaque(arg.unsafelyUnwrapped).takeRetainedValue().body()
        return nil
    }, box)
    if created != 0 { Unmanaged<ThreadBody>.fromOpaque(box).release() }
    let restored = pthread_sigmask(SIG_SETMASK, &previous, nil)
    // SIG_SETMASK with a mask pthread_sigmask itself returned cannot fail
    // (POSIX: EINVAL for a bad `how` only); a libc where it does would leave
    // this thread deaf to signals, so say so rather than go on.
    precondition(restored == 0, "pthread_sigmask could not restore the signal mask: errno \(restored)")
    return created
}

/// The closure a new thread runs, retained until it starts.
private final class ThreadBody: Sendable {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}
