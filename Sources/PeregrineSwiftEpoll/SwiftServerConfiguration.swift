// What the pure-Swift engine needs to know. `Peregrine.Configuration` maps
// onto it (this module cannot see that one: it depends on no other engine).
import PeregrineCore

/// Readiness mode of the Swift engine's epoll loop.
public enum SwiftTrigger: String, Sendable, CaseIterable {
    /// Level-triggered: EPOLLOUT only while output is pending.
    case level
    /// Edge-triggered: read until EAGAIN (capped per wakeup, with a ready list).
    case edge
}

public struct SwiftServerConfiguration: Sendable {
    /// Numeric IPv4 or IPv6 address to bind.
    public var host = "0.0.0.0"
    /// 0 picks an ephemeral port; read it back from `SwiftEpollServer.port`.
    public var port = 8080
    /// Event loops, one thread each, each with its own SO_REUSEPORT listener.
    public var threads = 1
    /// listen() backlog; the kernel clamps it to net.core.somaxconn.
    public var backlog = 1024
    public var trigger = SwiftTrigger.level
    /// TCP_NODELAY on accepted sockets.
    public var noDelay = true
    /// TCP_CORK around each batch of responses.
    public var cork = false
    /// Request limits: 414, 431, 413 beyond them (as the C parser).
    public var limits = HTTP1Limits()
    /// Decoded bytes of a streamed request body (`.streaming`): 413 beyond.
    public var maxStreamedBody = defaultMaxStreamedBody
    /// Output queued per connection before the engine stops reading from it.
    public var maxOutputPerConnection = 1 << 20
    /// Seconds for a whole request head to arrive, from its first byte: 408. 0 = off.
    public var headerTimeout = 10
    /// Seconds without progress before a connection is closed (408 for a
    /// stalled body). 0 = off.
    public var idleTimeout = 60
    /// Value of the `Server` header.
    public var serverName = "Peregrine"
    /// `.offloaded` applications: worker threads of the offload pool.
    public var offloadThreads = 4
    /// `.offloaded` applications: requests waiting for a worker at most
    /// (beyond one running on each); beyond, `503` at once.
    public var offloadQueue = 256

    public init() {}
}
