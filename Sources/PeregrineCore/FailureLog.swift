// Handler failures the engines answer for (an offload queue full: 503; a
// route that began an answer and then declined: 500), into the logger.
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// At most one line a second per server (an overloaded server would write
/// one per request otherwise); the next line says how many were left out.
package final class FailureLog: Sendable {
    package let logger: Logger
    private let window = Mutex<(second: Int, suppressed: Int)>((second: -1, suppressed: 0))

    package init(logger: Logger) { self.logger = logger }

    package func warning(_ message: @autoclosure () -> String) {
        let now = Int(time(nil))
        let suppressed: Int? = window.withLock { w in
            if w.second == now {
                w.suppressed += 1
                return nil
            }
            let left = w.suppressed
            w = (second: now, suppressed: 0)
            return left
        }
        guard let suppressed else { return }
        let text = message()
        if suppressed > 0 {
            logger.warning("\(text) (and \(suppressed) more handler failures in the last second)")
        } else {
            logger.warning("\(text)")
        }
    }
}
