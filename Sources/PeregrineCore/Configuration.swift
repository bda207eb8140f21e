// The one configuration of every engine (the C engines through `Server`, the
// Swift engine directly). Its rules are in ConfigurationValidation.swift.
import CoreMetrics
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// How the epoll engine is told about readiness.
public enum Trigger: String, CaseIterable, Sendable {
    /// Level-triggered: reported while readable; EPOLLOUT only while output is pending.
    case level
    /// Edge-triggered: read until EAGAIN (capped per wakeup, with a ready list).
    case edge
    /// EPOLLONESHOT: re-armed after every event.
    case oneshot
}

/// Which engine serves the application. Every engine runs the same
/// `Application` unchanged; see the README's engine table.
public enum Engine: String, CaseIterable, Sendable {
    /// The C core on raw epoll: `trigger` level, edge or oneshot.
    case epoll
    /// The C core on libev: `libevBackend` epoll, poll or select.
    case libev
    /// The pure-Swift engine: epoll from Swift, Swift parser; `trigger` level or edge.
    case swift
    /// One client at a time: accept, read one request, answer, close.
    case blocking
    /// A thread per connection with blocking sockets, at most `maxThreads`.
    case threaded
}

/// libev's own readiness mechanisms, for `Engine.libev`.
public enum LibevBackend: String, CaseIterable, Sendable {
    case epoll
    case poll
    case select
}

/// How a server listens and serves. `validate()` says whether it can run
/// (`Server.start()` and the Swift engine call it); the allowed ranges are
/// `Configuration.Bounds`.
public struct Configuration: Sendable {
    /// Numeric IPv4/IPv6 address or host name to bind.
    public var host = "0.0.0.0"
    /// 0 picks an ephemeral port; read it back from `Server.port`.
    public var port = 8080
    /// Event loops, one thread each, each with its own SO_REUSEPORT listener.
    public var threads = 1
    /// listen() backlog; the kernel clamps it to net.core.somaxconn.
    public var backlog = 1024
    public var engine = Engine.epoll
    /// epoll: level, edge or oneshot; swift: level or edge; the other engines: level only.
    public var trigger = Trigger.level
    /// Which of libev's backends the libev engine uses.
    public var libevBackend = LibevBackend.epoll
    /// Threaded engine: connection threads at most; a connection beyond gets
    /// `503 Service Unavailable` and is closed.
    public var maxThreads = 512
    /// TCP_NODELAY on accepted sockets.
    public var noDelay = true
    /// TCP_CORK around each batch of responses (to compare with TCP_NODELAY).
    public var cork = false
    public var limits = Limits()
    /// Decoded bytes of a request body taken as a stream (`Application.streaming`
    /// with a `BodyConsumer`): `413` and close beyond. Default 1 GiB. Buffered
    /// bodies keep `limits.maxBody`.
    public var maxStreamedBody = defaultMaxStreamedBody
    /// Output queued per connection before the engine stops reading from it.
    public var maxOutputPerConnection = 1 << 20
    /// Seconds for a whole request head to arrive, from its first byte
    /// (not reset per byte): 408 and close beyond. 0 turns it off.
    public var headerTimeout = 10
    /// Seconds a connection may go without progress before it is closed: an
    /// idle keep-alive connection (quietly), a request body that stopped
    /// arriving (408), output the client stopped reading. 0 turns it off.
    public var idleTimeout = 60
    /// Value of the `Server` header.
    public var serverName = "Peregrine"
    /// Where the server says what happens (swift-log): the start-up line,
    /// accept errors and descriptor exhaustion (from every engine, the C
    /// core included), handlers that failed, and with `logRequests` the
    /// access log. Default: a `Logger` labelled "peregrine" with the
    /// bootstrapped `LoggingSystem` handler.
    public var logger = Logger(label: "peregrine")
    /// An access log through `logger`: one `info` line per request,
    /// `ADDR METHOD TARGET STATUS BYTES DURATIONms` (ADDR the client's host,
    /// `-` when not IP; BYTES the body an async handler wrote, `-` for the
    /// other kinds), with the fields also as metadata (`event: access`,
    /// `client`, `method`, `target`, `status`, `bytes`, `duration_ms`).
    public var logRequests = false
    /// Where the server's metrics go (`ServerMetrics` names them). nil: the
    /// backend bootstrapped with `MetricsSystem.bootstrap`; when none is,
    /// nothing is counted and requests pay nothing for metrics.
    public var metricsFactory: (any MetricsFactory)? = nil
    /// Every connection starts with a PROXY protocol header (HAProxy's v1
    /// text line or v2 binary header) whose source becomes the client's
    /// address (`Request.remoteAddress`, `Connection.remoteAddress`, the
    /// log). A connection without one, or with a malformed one, is closed
    /// without an answer; the header must arrive within `headerTimeout`.
    /// Only for listeners that just a trusted proxy can reach: the header
    /// says who the client is.
    public var proxyProtocol = false
    /// How long `run()` lets requests in flight finish after SIGINT or
    /// SIGTERM before closing what is left (`Server.shutdown(deadline:)`).
    public var shutdownDeadline: Duration = .seconds(10)
    /// `.offloaded` applications: worker threads of the offload pool.
    public var offloadThreads = 4
    /// `.offloaded` applications: requests waiting for a worker at most
    /// (beyond one running on each); beyond, `503` at once.
    public var offloadQueue = 256
    /// `.offloaded` and `.async` applications (every engine answers them
    /// later): seconds an answer may take. Past it the client gets `503` in
    /// its place and the late answer is dropped (`Responder.send` returns
    /// `false`). 0 turns it off.
    public var handlerTimeout = 60
    /// `.async` applications: handler tasks running at most per event loop.
    /// Beyond it a request waits for a slot (its answer owed, so its
    /// connection reads no further once 64 answers are owed), up to as many
    /// again per loop; beyond that it gets `503` with `Retry-After: 1` at
    /// once. The blocking and threaded engines run the handlers on the
    /// global executor: at most 64 answers owed per connection (and one
    /// connection per thread) bound them instead.
    public var asyncLimit = 1024
    /// Listening sockets inherited instead of binding `host:port` (socket
    /// activation: `SocketActivation.listenDescriptors()`, or any listening
    /// TCP sockets the caller opened). The server serves dup()s of them, so
    /// the caller may close its own after `start()`. Loop i takes
    /// `listenDescriptors[i % count]`: `threads` must be at least their
    /// count. Event engines (epoll, libev, swift) only.
    public var listenDescriptors: [Int32] = []
    /// Restarts that drop nothing (README, "Operations"): the name of a Unix
    /// socket (`@name` abstract, anything else a filesystem path). At start
    /// the server asks whoever offers there for its listening sockets and
    /// serves those instead of binding; then it offers its own there, to
    /// the next process. nil: neither.
    public var handoffSocket: String? = nil
    /// After a handoff, how long the old server's drain keeps an idle
    /// keep-alive connection for its next request (answered with
    /// `Connection: close`) before closing it.
    public var handoffIdleGrace: Duration = .seconds(2)

    public init() {}
}

/// A server error with the errno the C core reported.
public struct ServerError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let code: Int32

    public init(operation: String, code: Int32) {
        self.operation = operation
        self.code = code
    }

    public var description: String { "\(operation) failed: errno \(code) (\(errnoDescription(code)))" }
}

/// strerror's text for an errno.
package func errnoDescription(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "unknown" }
    return String(cString: text)
}
