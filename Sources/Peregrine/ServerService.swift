// Server as a swift-service-lifecycle Service: run it in a ServiceGroup,
// which drains it on graceful shutdown (SIGTERM) and stops it on cancellation.
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

extension Server: Service {
    /// Starts (throws what `start()` throws), serves, and returns once the
    /// server is stopped:
    ///   - graceful shutdown of the task (a `ServiceGroup`'s, e.g. on SIGTERM):
    ///     `shutdown(deadline: configuration.shutdownDeadline)`, the drain
    ///     that lets every request in flight be answered;
    ///   - cancellation of the task: `stop()`, at once;
    ///   - `stop()` or `shutdown(deadline:)` called by anyone.
    /// The synchronous `start`/`stop`/`shutdown`/`run(started:)` stay as they are.
    public func run() async throws {
        try start()
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await stopped()
            } onGracefulShutdown: {
                self.onOwnThread { self.shutdown(deadline: self.configuration.shutdownDeadline) }
            }
        } onCancel: {
            self.onOwnThread { self.stop() }
        }
    }

    /// Returns once the server is stopped, without holding a thread of the
    /// concurrency pool (the wait blocks a thread of its own).
    private func stopped() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            onOwnThread {
                self.waitUntilStopped()
                continuation.resume()
            }
        }
    }

    /// shutdown, stop and the wait block: never on the pool's threads. A
    /// detached pthread; if none can be started, on this one (it blocks, but
    /// the server still stops).
    private func onOwnThread(_ body: @escaping @Sendable () -> Void) {
        var thread = pthread_t()
        if startThread(&thread, body) == 0 {
            pthread_detach(thread)
        } else {
            configuration.logger.warning("no thread for the lifecycle wait: blocking the caller's")
            body()
        }
    }
}
