// What every server (Server, the Swift engine's SwiftEpollServer) says when
// it is driven out of order.

/// `start()` on a server that is already started.
public enum LifecycleError: Error, CustomStringConvertible, Sendable, Equatable {
    case alreadyStarted

    public var description: String {
        switch self {
        case .alreadyStarted: "start() on a server that is already started: stop() or shutdown() it first"
        }
    }
}
