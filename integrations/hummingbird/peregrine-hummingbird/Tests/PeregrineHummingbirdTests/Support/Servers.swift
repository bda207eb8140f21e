// Serving a router on each engine under test, and a gate a handler waits at.
import Dispatch
import Foundation
import Hummingbird
import Logging
import PeregrineHummingbird
import Synchronization

/// An engine mode: `epoll/level`, `swift/edge`, `libev`...
struct EngineMode: CustomStringConvertible, Sendable {
    var engine: Engine
    var trigger: Trigger = .level

    var description: String { engine == .epoll || engine == .swift ? "\(engine.rawValue)/\(trigger.rawValue)" : engine.rawValue }

    init?(_ text: String) {
        let parts = text.split(separator: "/").map(String.init)
        guard let engine = parts.first.flatMap(Engine.init(rawValue:)) else { return nil }
        self.engine = engine
        if parts.count > 1 {
            guard let trigger = Trigger(rawValue: parts[1]) else { return nil }
            self.trigger = trigger
        }
    }

    /// PEREGRINE_TEST_ENGINES (comma-separated, e.g. `epoll/edge,threaded`),
    /// or the three event engines: the C engine on epoll and on libev, the
    /// pure-Swift engine.
    static var underTest: [EngineMode] {
        let text = ProcessInfo.processInfo.environment["PEREGRINE_TEST_ENGINES"] ?? "epoll/level,libev,swift/level"
        return text.split(separator: ",").map { part in
            guard let mode = EngineMode(String(part)) else { fatalError("PEREGRINE_TEST_ENGINES: unknown mode \(part)") }
            return mode
        }
    }

    func configuration() -> Configuration {
        var c = Configuration()
        c.host = "127.0.0.1"
        c.port = 0
        c.engine = engine
        c.trigger = trigger
        c.logger = quietLogger
        return c
    }
}

/// Warnings and worse only: the servers' start-up lines stay out of the test log.
let quietLogger: Logger = {
    var l = Logger(label: "peregrine-hummingbird-tests")
    l.logLevel = .warning
    return l
}()

/// Serves `router` on `mode` for the length of `body` (its argument: the port);
/// stops the server after it, whatever `body` threw.
func withServer<Context: RequestContext>(_ mode: EngineMode, _ router: Router<Context>, logger: Logger = quietLogger,
                                         _ body: (Int) async throws -> Void) async throws
where Context.Source == PeregrineRequestContextSource {
    let hummingbird = HummingbirdServer(router: router, configuration: mode.configuration(), logger: logger)
    let server = hummingbird.server
    try await blocking { try server.start() }
    do {
        try await body(server.port)
    } catch {
        try await blocking { server.stop() }
        throw error
    }
    try await blocking { server.stop() }
}

/// A gate handlers wait at until the test opens it; counts who arrived.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, arrived: Int, waiters: [CheckedContinuation<Void, Never>])>((false, 0, []))
    private let arrivals = DispatchSemaphore(value: 0)

    /// A handler: arrive, then wait until the gate opens.
    func pass() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { s -> Bool in
                s.arrived += 1
                if s.open { return true }
                s.waiters.append(c)
                return false
            }
            arrivals.signal()
            if resumeNow { c.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    /// Blocks (call it through `blocking`) until a handler arrived, at most `seconds`.
    func waitForArrival(seconds: Double = 10) -> Bool {
        arrivals.wait(timeout: .now() + seconds) == .success
    }

    var arrived: Int { state.withLock { $0.arrived } }
}
