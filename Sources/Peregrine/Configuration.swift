@_exported import PeregrineCore

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

/// Request limits; each violation is answered with its status and a close.
public struct Limits: Sendable, Equatable {
    /// Request line without CRLF; 414 beyond.
    public var maxRequestLine = 8 * 1024
    /// Whole header section; 431 beyond.
    public var maxHeaderBytes = 16 * 1024
    /// Header fields; 431 beyond.
    public var maxHeaders = 100
    /// Decoded body; 413 beyond, without reading the rest.
    public var maxBody = 1 << 20

    public init() {}
}

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
    /// Print one line per request: method, target, status.
    public var logRequests = false
    /// How long `run()` lets requests in flight finish after SIGINT or
    /// SIGTERM before closing what is left (`Server.shutdown(deadline:)`).
    public var shutdownDeadline: Duration = .seconds(10)
    /// `.offloaded` applications: worker threads of the offload pool.
    public var offloadThreads = 4
    /// `.offloaded` applications: requests waiting for a worker at most
    /// (beyond one running on each); beyond, `503` at once.
    public var offloadQueue = 256

    public init() {}

    /// Why this configuration cannot run, or nil when it can.
    public var problem: String? {
        switch engine {
        case .epoll:
            break
        case .swift:
            if trigger == .oneshot { return "the swift engine has level and edge triggers, not oneshot" }
        case .libev, .blocking, .threaded:
            if trigger != .level { return "--trigger applies to the epoll and swift engines; \(engine.rawValue) is level-triggered or blocking" }
        }
        if (engine == .blocking || engine == .threaded) && threads != 1 {
            return "the \(engine.rawValue) engine runs one accepting thread: --threads must be 1"
        }
        if threads < 1 || threads > 1024 { return "threads must be 1...1024" }
        if maxThreads < 1 { return "maxThreads must be at least 1" }
        if shutdownDeadline < .zero { return "shutdownDeadline must not be negative" }
        if offloadThreads < 1 || offloadThreads > 1024 { return "offloadThreads must be 1...1024" }
        if offloadQueue < 0 { return "offloadQueue must be at least 0" }
        if maxStreamedBody < 0 { return "maxStreamedBody must be at least 0" }
        return nil
    }
}

/// A configuration that no engine can run.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// A server error with the errno the C core reported.
public struct ServerError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let code: Int32
    public var description: String { "\(operation) failed: errno \(code) (\(describeErrno(code)))" }
}
