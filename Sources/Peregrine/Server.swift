@_exported import PeregrineCore
// Async handlers speak swift-http-types: `import Peregrine` brings them.
@_exported import HTTPTypes
import CPeregrine
import Logging
import PeregrineSwiftEpoll
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// An HTTP/1.1 or raw-TCP server on any engine (`Configuration.engine`).
///
/// ```swift
/// var config = Configuration()
/// config.port = 0
/// let server = Server(configuration: config, application: .http { request, response in
///     response.send(body: "Hello, World!")
/// })
/// try server.start()
/// print(server.port)
/// server.stop()
/// ```
///
/// Every method may be called from any thread. `start()` once, then `stop()`
/// or `shutdown(deadline:)` (any number of times, from several threads at
/// once: each returns when the server is stopped); then it may start again.
public final class Server: Sendable {
    public let configuration: Configuration
    private let bridge: Bridge
    /// Everything that changes: which engine runs, the bound port.
    private let lifecycle = Locked(Lifecycle())

    private struct Lifecycle {
        var phase = Phase.stopped
        var port = 0
        var effectiveBacklog = 0
        /// Offering the listeners to the next process (`handoffSocket`).
        var handoff: HandoffOffer?
    }

    private enum Phase {
        /// Never started, or stopped: `start()` may run.
        case stopped
        case running(RunningEngine)
        /// `shutdown(deadline:)` is draining: `stop()` ends the drain, the
        /// draining call releases the engine.
        case draining(RunningEngine)
        /// `stop()` is releasing the engine; no one else touches it.
        case stopping
    }

    /// The engine of a started server.
    private enum RunningEngine: @unchecked Sendable {
        // @unchecked: the handle is used under `lifecycle` or by the one
        // thread that moved the phase away from `.running`.
        case c(OpaquePointer)
        case swift(SwiftEpollServer)

        /// Any thread, returns at once: every loop stops now.
        func interrupt() {
            switch self {
            case .c(let handle): prg_server_stop(handle)
            case .swift(let server): server.interrupt()
            }
        }
    }

    public init(configuration: Configuration, application: Application) {
        self.configuration = configuration
        // --log for answers that come later: logged when they are given.
        var application = configuration.logRequests ? application.loggingLateAnswers(configuration.logger) : application
        // Decided once: without a metrics backend nothing is wrapped or hooked.
        let metrics = ServerMetrics(configuration)
        if let metrics { application = application.measured(metrics) }
        self.bridge = Bridge(application: application, logRequests: configuration.logRequests,
                             logger: configuration.logger, metrics: metrics,
                             offloadThreads: configuration.offloadThreads, offloadQueue: configuration.offloadQueue,
                             asyncLimit: configuration.asyncLimit)
    }

    deinit {
        stop()
    }

    /// The bound port (after `start`; it stays readable after a stop).
    public var port: Int { lifecycle.withLock { $0.port } }
    /// The backlog the kernel really uses: min(requested, somaxconn).
    public var effectiveBacklog: Int { lifecycle.withLock { $0.effectiveBacklog } }

    /// Validates the configuration (`ConfigurationError` names a field out of
    /// range), binds the listeners (or takes inherited ones:
    /// `listenDescriptors`, or those of the server offering at
    /// `handoffSocket`) and starts the engine's threads; with
    /// `handoffSocket`, then offers its listeners there to the next process.
    /// Throws `LifecycleError.alreadyStarted` while started (stop it first).
    public func start() throws {
        try lifecycle.withLock { state in
            guard case .stopped = state.phase else { throw LifecycleError.alreadyStarted }
            try configuration.validate()
            var listeners = configuration.listenDescriptors
            var fetched: HandoffFetch? = nil
            if listeners.isEmpty, let name = configuration.handoffSocket {
                fetched = try HandoffFetch(name: name, threads: configuration.threads)
                listeners = fetched?.descriptors ?? []
            }
            defer { fetched?.closeDescriptors() }   // the engine serves its own copies
            let engine: RunningEngine
            do {
                engine = try startEngine(listeners: listeners, &state)
            } catch {
                fetched?.abandon()   // the old server goes on serving, and offering
                throw error
            }
            state.phase = .running(engine)
            fetched?.confirm()   // the old one stops offering: the name is free
            if let name = configuration.handoffSocket {
                // Not offering is no reason to stop serving: the next restart
                // then binds (or fails to) as without a handoff.
                do {
                    state.handoff = try HandoffOffer(name: name, descriptors: Self.listenerDescriptors(engine, threads: configuration.threads))
                } catch {
                    warn("\(error); serving without offering a handoff")
                }
            }
        }
        let (port, backlog) = lifecycle.withLock { ($0.port, $0.effectiveBacklog) }
        configuration.logger.info("listening on \(configuration.host):\(port)", metadata: [
            "engine": "\(configuration.engine.rawValue)", "threads": "\(configuration.threads)",
            "effective_backlog": "\(backlog)",
        ])
    }

    private func startEngine(listeners: [Int32], _ state: inout Lifecycle) throws -> RunningEngine {
        if configuration.engine == .swift {
            let engine = try startSwiftEngine(application: bridge.application, listeners: listeners)
            state.port = engine.port
            state.effectiveBacklog = engine.effectiveBacklog
            return .swift(engine)
        }
        let handle = try startCEngine(listeners: listeners)
        state.port = Int(prg_server_port(handle))
        state.effectiveBacklog = Int(prg_server_effective_backlog(handle))
        return .c(handle)
    }

    /// The running engine's listening sockets (before any shutdown), each
    /// once: loops that share an inherited socket hold it under different
    /// numbers, and the next process needs a loop per socket, not per number.
    private static func listenerDescriptors(_ engine: RunningEngine, threads: Int) -> [Int32] {
        var fds: [Int32]
        switch engine {
        case .swift(let server):
            fds = server.listenerDescriptors
        case .c(let handle):
            fds = [Int32](repeating: -1, count: threads)
            let n = fds.withUnsafeMutableBufferPointer { prg_server_listeners(handle, $0.baseAddress, Int32($0.count)) }
            fds = n > 0 ? Array(fds.prefix(Int(n))) : []
        }
        var seen: [(UInt64, UInt64)] = []
        return fds.filter { fd in
            var st = stat()
            guard fstat(fd, &st) == 0 else { return false }
            let id = (UInt64(st.st_dev), UInt64(st.st_ino))   // a socket's inode is its identity
            if seen.contains(where: { $0 == id }) { return false }
            seen.append(id)
            return true
        }
    }

    /// The C engines: a validated `configuration` mapped onto `prg_config`
    /// (every value fits: the conversions clamp rather than trap anyway).
    /// `listeners`: inherited listening sockets, served instead of binding.
    private func startCEngine(listeners: [Int32]) throws -> OpaquePointer {
        var cfg = prg_config()
        prg_config_default(&cfg)
        cfg.port = Int32(clamping: configuration.port)
        cfg.threads = Int32(clamping: configuration.threads)
        cfg.backlog = Int32(clamping: configuration.backlog)
        cfg.engine = switch configuration.engine {
        case .epoll, .swift: PRG_ENGINE_EPOLL   // .swift never gets here
        case .libev: PRG_ENGINE_LIBEV
        case .blocking: PRG_ENGINE_BLOCKING
        case .threaded: PRG_ENGINE_THREADED
        }
        cfg.libev_backend = switch configuration.libevBackend {
        case .epoll: PRG_LIBEV_EPOLL
        case .poll: PRG_LIBEV_POLL
        case .select: PRG_LIBEV_SELECT
        }
        cfg.max_threads = Int32(clamping: configuration.maxThreads)
        cfg.trigger = switch configuration.trigger {
        case .level: PRG_TRIGGER_LEVEL
        case .edge: PRG_TRIGGER_EDGE
        case .oneshot: PRG_TRIGGER_ONESHOT
        }
        if case .raw = bridge.application { cfg.mode = PRG_MODE_RAW } else { cfg.mode = PRG_MODE_HTTP }
        cfg.tcp_nodelay = configuration.noDelay ? 1 : 0
        cfg.tcp_cork = configuration.cork ? 1 : 0
        cfg.limits.max_request_line = configuration.limits.maxRequestLine
        cfg.limits.max_header_bytes = configuration.limits.maxHeaderBytes
        cfg.limits.max_headers = configuration.limits.maxHeaders
        cfg.limits.max_body = configuration.limits.maxBody
        cfg.max_streamed_body = UInt64(configuration.maxStreamedBody)
        cfg.max_output = configuration.maxOutputPerConnection
        cfg.header_timeout_s = Int32(clamping: configuration.headerTimeout)
        cfg.idle_timeout_s = Int32(clamping: configuration.idleTimeout)
        cfg.handler_timeout_s = Int32(clamping: configuration.handlerTimeout)
        cfg.proxy_protocol = configuration.proxyProtocol ? 1 : 0

        var callbacks = prg_callbacks()
        callbacks.ctx = Unmanaged.passUnretained(bridge).toOpaque()
        callbacks.on_request = onRequest
        // Answering later: a callback of its own, so plain HTTP pays nothing.
        switch bridge.application {
        case .offloaded, .http, .raw: break
        case .async:
            callbacks.on_tick = onTick
            bridge.executors?.make(count: configuration.threads)
            callbacks.on_head = onHead
            callbacks.on_body = onBody
            callbacks.on_body_end = onBodyEnd
        case .streaming:
            callbacks.on_head = onHead
            callbacks.on_body = onBody
            callbacks.on_body_end = onBodyEnd
        }
        callbacks.on_data = onData
        callbacks.on_log = onLog
        if bridge.metrics != nil {
            // Only with a metrics backend: otherwise the core calls nothing.
            callbacks.on_open = onOpen
            callbacks.on_close = onClose
            callbacks.on_metric = onMetric
        }

        var err: Int32 = 0
        let created = configuration.host.withCString { host in
            configuration.serverName.withCString { name in
                listeners.withUnsafeBufferPointer { fds -> OpaquePointer? in
                    cfg.host = host
                    cfg.server_name = name   // copied into each loop's Server line at create
                    cfg.listen_fds = fds.baseAddress   // dup()ed at create
                    cfg.listen_fd_count = Int32(fds.count)
                    let s = withUnsafePointer(to: &callbacks) { prg_server_create(&cfg, $0, &err) }
                    cfg.host = nil
                    cfg.server_name = nil
                    cfg.listen_fds = nil
                    return s
                }
            }
        }
        guard let created else {
            let what = listeners.isEmpty ? "listen on \(configuration.host):\(configuration.port)"
                                         : "serve inherited listeners \(listeners)"
            throw ServerError(operation: what, code: -err)
        }
        bridge.executors?.server = created
        let rc = prg_server_start(created)
        if rc != 0 {
            prg_server_destroy(created)
            throw ServerError(operation: "start loop threads", code: -rc)
        }
        if let pool = bridge.pool {
            // Every C engine defers offloaded answers to the pool (the
            // blocking ones too: the connection's thread serves the stream).
            let prc = pool.start()
            if prc != 0 {
                prg_server_stop(created)
                prg_server_wait(created)
                pool.shutdown()
                prg_server_destroy(created)
                throw ServerError(operation: "start offload threads", code: prc)
            }
        }
        return created
    }

    /// Stops every loop, closes every connection and waits for the threads.
    /// From another thread while `shutdown(deadline:)` is draining: ends the
    /// drain at once. Returns when the server is stopped (also when another
    /// thread is the one stopping it); a no-op on a stopped server.
    public func stop() {
        enum Next { case done, waitForStopped, release(RunningEngine) }
        var offer: HandoffOffer? = nil
        let next = lifecycle.withLock { state -> Next in
            switch state.phase {
            case .stopped:
                return .done
            case .draining(let engine):
                engine.interrupt()   // under the lock: the drainer releases it only with the lock held
                return .waitForStopped
            case .stopping:
                return .waitForStopped
            case .running(let engine):
                state.phase = .stopping
                offer = state.handoff
                state.handoff = nil
                return .release(engine)
            }
        }
        _ = offer?.close()   // before the listeners close: its copies would keep them open
        switch next {
        case .done:
            return
        case .waitForStopped:
            waitUntilStopped()
        case .release(.swift(let server)):
            server.stop()
            lifecycle.withLock { $0.phase = .stopped }
        case .release(.c(let handle)):
            prg_server_stop(handle)
            prg_server_wait(handle)
            bridge.pool?.shutdown()   // late answers meet a stopped loop: dropped
            prg_server_destroy(handle)
            lifecycle.withLock { $0.phase = .stopped }
        }
    }

    /// Graceful shutdown: stops accepting (new connections are refused),
    /// closes idle keep-alive connections, lets every request in flight
    /// finish — it is answered with `Connection: close`, its output is
    /// flushed, then the connection is closed — and closes whatever is left
    /// once `deadline` has passed. Blocks until the last connection is gone
    /// (or the deadline), then releases everything as `stop()` does.
    /// `stop()` from another thread meanwhile ends the drain at once. Returns
    /// when the server is stopped (also when another thread is the one
    /// stopping it); a no-op on a stopped server.
    ///
    /// After a handoff (`handoffSocket`: a new process serves the same
    /// listening sockets), idle keep-alive connections are not closed at once
    /// but kept `handoffIdleGrace` for their next request, answered with
    /// `Connection: close`: the client moves to the new process without
    /// seeing a connection closed under a request it was sending.
    public func shutdown(deadline: Duration = .seconds(10)) {
        let ms = Self.milliseconds(deadline)
        var offer: HandoffOffer? = nil
        let engine = lifecycle.withLock { state -> RunningEngine? in
            guard case .running(let engine) = state.phase else { return nil }
            state.phase = .draining(engine)
            offer = state.handoff
            state.handoff = nil
            return engine
        }
        guard let engine else { return waitUntilStopped() }
        configuration.logger.info("shutting down: draining connections", metadata: ["deadline": "\(deadline)"])
        // Stop offering before the listeners close: its copies would keep an
        // untaken socket listening with nobody accepting.
        let handedOff = offer?.close() ?? false
        let grace = handedOff ? Self.milliseconds(configuration.handoffIdleGrace) : 0
        switch engine {
        case .swift(let server):
            server.shutdown(deadlineMilliseconds: ms, idleGraceMilliseconds: grace)
            lifecycle.withLock { $0.phase = .stopped }
        case .c(let handle):
            _ = handedOff ? prg_server_shutdown_handed_off(handle, Int32(clamping: ms), Int32(clamping: grace))
                          : prg_server_shutdown(handle, Int32(clamping: ms))
            prg_server_wait(handle)
            bridge.pool?.shutdown()   // late answers meet a stopped loop: dropped
            lifecycle.withLock { state in
                // With the lock: a stop() that saw .draining has finished with the handle.
                prg_server_destroy(handle)
                state.phase = .stopped
            }
        }
    }

    func waitUntilStopped() {
        lifecycle.wait { state in
            if case .stopped = state.phase { return true }
            return false
        }
    }

    static func milliseconds(_ d: Duration) -> Int {
        let (seconds, attoseconds) = d.components
        if seconds < 0 { return 0 }
        if seconds > Int64(Int32.max / 1000) { return Int(Int32.max) }
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }

    /// Starts, calls `started` (to log the bound port), then blocks until
    /// SIGINT or SIGTERM, then shuts down gracefully within
    /// `configuration.shutdownDeadline`; a second SIGINT or SIGTERM during
    /// that drain stops at once. SIGINT and SIGTERM are blocked in the
    /// calling thread meanwhile (so only this call sees them); its signal
    /// mask is as before when `run` returns or throws.
    public func run(started: (Server) -> Void = { _ in }) throws {
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        var previous = sigset_t()
        // Blocked before the loop threads exist, so only sigwait sees them.
        let blocked = pthread_sigmask(SIG_BLOCK, &signals, &previous)
        if blocked != 0 { throw ServerError(operation: "block SIGINT and SIGTERM (pthread_sigmask)", code: blocked) }
        let served = Result { try serveUntilSignal(signals, started: started) }
        let restored = pthread_sigmask(SIG_SETMASK, &previous, nil)
        try served.get()
        if restored != 0 { throw ServerError(operation: "restore the signal mask (pthread_sigmask)", code: restored) }
    }

    /// `run` with SIGINT and SIGTERM blocked.
    private func serveUntilSignal(_ signals: sigset_t, started: (Server) -> Void) throws {
        try start()
        started(self)
        var set = signals
        var received: Int32 = 0
        let waited = sigwait(&set, &received)
        // A watcher thread takes a second signal while this one drains.
        let watcher = SignalWatcher(server: self, signals: signals)
        var thread = pthread_t()
        let watching = startThread(&thread) { watcher.watch() }
        shutdown(deadline: configuration.shutdownDeadline)
        watcher.done.store(true, ordering: .releasing)
        if watching == 0 { pthread_join(thread, nil) }
        if waited != 0 { throw ServerError(operation: "sigwait", code: waited) }
    }
}

/// During a graceful shutdown, waits for a second SIGINT/SIGTERM (polling a
/// flag every 100 ms to end with the drain) and then stops at once.
private final class SignalWatcher: @unchecked Sendable {
    // @unchecked: `signals` is never written after init.
    let server: Server
    let signals: sigset_t
    let done = Atomic<Bool>(false)

    init(server: Server, signals: sigset_t) {
        self.server = server
        self.signals = signals
    }

    func watch() {
        var set = signals
        var timeout = timespec(tv_sec: 0, tv_nsec: 100_000_000)
        while !done.load(ordering: .acquiring) {
            if sigtimedwait(&set, nil, &timeout) > 0 {
                server.stop()
                return
            }
        }
    }
}

/// What the C callbacks reach through `ctx`: the application and the
/// function tables handed to each request.
final class Bridge: Sendable {
    let application: Application
    // Non-optional on purpose: an Optional closure is stored at maximal
    // abstraction, and calling it allocates a reabstraction thunk context
    // on every request. The unused one of the pair is never called (the C
    // core calls on_request in HTTP mode only, on_data in raw mode only).
    let httpHandler: HTTPHandler
    let dataHandler: DataHandler
    let logRequests: Bool
    /// `configuration.logger`: the access log, the C core's messages.
    let logger: Logger
    /// nil: no metrics backend (`ServerMetrics`), nothing counted.
    let metrics: ServerMetrics?
    /// Handler failures answered by the bridge (503 queue full, 500 declined route).
    let failures: FailureLog
    /// `.offloaded` applications: the workers.
    let pool: OffloadPool?
    /// `.async` applications: a task executor per loop (made at each start).
    let executors: LoopExecutors?
    let responseFunctions = ResponseWriterFunctions(
        respond: prg_respond, writeHeader: prg_write_header, writeBody: prg_write_body,
        end: prg_end, send: prg_send, status: prg_response_status, writeFile: prg_write_file,
        replace: prg_response_replace,
        deferAnswer: { conn, out in
            guard let out, let d = prg_defer(conn) else { return false }
            out.assumingMemoryBound(to: (any DeferredAnswerEngine)?.self).pointee = DeferredHandle(pointer: d)
            return true
        })
    let connectionFunctions = ConnectionFunctions(
        write: prg_conn_write, close: prg_conn_close, id: prg_conn_id, pendingOutput: prg_conn_pending_output,
        remoteAddress: lookupRemoteAddress)
    let bodyFunctions = BodyStreamFunctions(
        begin: prg_body_stream, pause: prg_body_pause, resume: prg_body_resume, receiveCapacity: prg_conn_receive_capacity)
    /// `.streaming`: decides from the head (the C engines call it only then).
    let streamHead: StreamingHeadHandler

    init(application: Application, logRequests: Bool, logger: Logger, metrics: ServerMetrics?,
         offloadThreads: Int = 4, offloadQueue: Int = 256, asyncLimit: Int = 1024) {
        self.application = application
        // Offloaded and async answers are logged when given (loggingLateAnswers), not here.
        switch application {
        case .offloaded, .async: self.logRequests = false
        case .http, .raw, .streaming: self.logRequests = logRequests
        }
        self.logger = logger
        self.metrics = metrics
        self.failures = FailureLog(logger: logger)
        if case .async = application { executors = LoopExecutors() } else { executors = nil }
        var head: StreamingHeadHandler = { _, _ in nil }
        switch application {
        case .http(let h): httpHandler = h; dataHandler = { _, _ in 0 }; pool = nil
        case .raw(let h): httpHandler = { _, response in response.send(status: 500, body: "raw server") }; dataHandler = h; pool = nil
        case .offloaded(let handler, let inline):
            let dispatcher = OffloadDispatcher(handler: handler, inline: inline, threads: offloadThreads,
                                               queueLimit: offloadQueue, logger: logger)
            httpHandler = dispatcher.handle; dataHandler = { _, _ in 0 }
            pool = dispatcher.pool
        case .async(let handler):
            // Bodies stream to the handler (on_head); requests without one come whole.
            let dispatcher = AsyncDispatcher(handler: handler, limit: asyncLimit, logger: logger)
            httpHandler = dispatcher.handle; dataHandler = { _, _ in 0 }; pool = nil
            head = dispatcher.handleHead
        case .streaming(let streaming, let request):
            httpHandler = request; dataHandler = { _, _ in 0 }; pool = nil
            head = streaming
        }
        streamHead = head
    }
}

/// The C engine's loops as task executors (`.async` applications), made
/// before each start; `on_tick` reaches them by loop index.
final class LoopExecutors: @unchecked Sendable {
    // @unchecked: `list` is replaced only while no loop thread runs (before
    // prg_server_start); the loops only read it.
    var list: [LoopExecutor] = []
    /// The running server, for the executors' wake-ups.
    var server: OpaquePointer? = nil

    func make(count: Int) {
        list = (0..<count).map { index in
            LoopExecutor(wake: { [weak self] in if let server = self?.server { _ = prg_server_wake(server, Int32(index)) } })
        }
    }
}

/// A `prg_deferred` handed to another thread. The C core refuses a second
/// or late completion by its return value; this object gives the handle
/// back (`prg_deferred_release`) when the last reference goes, so the
/// pointer is never used after that.
final class DeferredHandle: DeferredAnswerEngine {
    nonisolated(unsafe) let pointer: OpaquePointer   // the C core makes its calls thread-safe
    /// The on_writable callback's context: registered with the core once,
    /// lives as long as the handle (the release waits for a run in progress).
    private let writable = WritableCallback()

    init(pointer: OpaquePointer) { self.pointer = pointer }

    deinit { prg_deferred_release(pointer) }

    private func header(_ name: String, _ value: String) -> Int32 {
        var name = name, value = value
        return name.withUTF8 { n in
            value.withUTF8 { v in
                prg_deferred_header(pointer, UnsafeRawPointer(n.baseAddress)?.assumingMemoryBound(to: CChar.self), n.count,
                                    UnsafeRawPointer(v.baseAddress)?.assumingMemoryBound(to: CChar.self), v.count)
            }
        }
    }

    func streamHeader(name: String, value: String) -> Int32 { header(name, value) }
    func streamHead(status: Int) -> Int32 { prg_stream_head(pointer, Int32(clamping: status)) }
    func streamWrite(_ bytes: UnsafeRawBufferPointer) -> Int32 { prg_stream_write(pointer, bytes.baseAddress, bytes.count) }
    func streamEnd() -> Int32 { prg_stream_end(pointer) }

    func streamTrailer(name: String, value: String) -> Int32 {
        var name = name, value = value
        return name.withUTF8 { n in
            value.withUTF8 { v in
                prg_stream_trailer(pointer, UnsafeRawPointer(n.baseAddress)?.assumingMemoryBound(to: CChar.self), n.count,
                                   UnsafeRawPointer(v.baseAddress)?.assumingMemoryBound(to: CChar.self), v.count)
            }
        }
    }

    func streamOnWritable(_ callback: (@Sendable () -> Void)?) {
        writable.set(callback)
        if callback == nil {
            prg_stream_on_writable(pointer, nil, nil)
        } else {
            prg_stream_on_writable(pointer, runWritable, Unmanaged.passUnretained(writable).toOpaque())
        }
    }

    /// `true` when the answer was posted to the connection's loop.
    func complete(_ answer: OffloadAnswer) -> Bool {
        for (name, value) in answer.headers { _ = header(name, value) }
        return answer.body.withUnsafeBytes { prg_deferred_send(pointer, Int32(clamping: answer.status), $0.baseAddress, $0.count) } == 0
    }
}

/// A stream's on_writable closure, replaced under a lock (the loop runs it
/// while the producer may set another).
final class WritableCallback: Sendable {
    private let lock = Locked<(@Sendable () -> Void)?>(nil)
    func set(_ callback: (@Sendable () -> Void)?) { lock.withLock { $0 = callback } }
    func run() { lock.withLock { $0 }?() }
}

private let runWritable: @convention(c) (UnsafeMutableRawPointer?) -> Void = { ctx in
    guard let ctx else { return }
    Unmanaged<WritableCallback>.fromOpaque(ctx).takeUnretainedValue().run()
}

/// The C core's record of the client (prg_conn_remote_address): 20 bytes
/// copied, nothing allocated.
@inline(__always)
private func remoteAddress(_ conn: OpaquePointer?) -> SocketAddress? {
    var a = prg_address()
    guard prg_conn_remote_address(conn, &a) == 0 else { return nil }
    let family: SocketAddress.Family = a.family == UInt8(PRG_ADDR_IPV4) ? .ipv4 : .ipv6
    return withUnsafeBytes(of: &a.bytes) {
        SocketAddress(family: family, bytes: UnsafeRawBufferPointer(rebasing: $0[..<(family == .ipv4 ? 4 : 16)]), port: a.port)
    }
}

/// `ConnectionFunctions.remoteAddress` for the C core's connections.
private let lookupRemoteAddress: ConnectionFunctions.RemoteAddress = { conn, out in
    guard let address = remoteAddress(conn), let out else { return -1 }
    out.initializeMemory(as: SocketAddress.self, to: address)
    return 0
}

/// The zero-copy Swift view of the C parser's request (valid during the
/// callback). The client's address is looked up only when asked.
@inline(__always)
private func requestView(_ conn: OpaquePointer?, _ r: UnsafePointer<prg_request>) -> Request {
    Request(
        method: UnsafeRawBufferPointer(start: r.pointee.method.ptr, count: r.pointee.method.len),
        target: UnsafeRawBufferPointer(start: r.pointee.target.ptr, count: r.pointee.target.len),
        versionMinor: Int(r.pointee.version_minor),
        keepAlive: r.pointee.flags & UInt32(PRG_REQ_KEEP_ALIVE) != 0,
        headerTable: UnsafeRawPointer(r.pointee.headers),
        headerCount: r.pointee.header_count,
        body: UnsafeRawBufferPointer(start: r.pointee.body.ptr, count: r.pointee.body.len),
        connection: conn.unsafelyUnwrapped, remoteLookup: lookupRemoteAddress)
}

private let onRequest: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<prg_request>?) -> Void = { ctx, conn, req in
    // The server holds the bridge for as long as its loops run: borrowed here,
    // no retain and release per request.
    Unmanaged<Bridge>.fromOpaque(ctx.unsafelyUnwrapped)._withUnsafeGuaranteedRef { bridge in
        let request = requestView(conn, req.unsafelyUnwrapped)
        let response = Response(sink: conn.unsafelyUnwrapped, functions: bridge.responseFunctions)
        if bridge.logRequests {
            logAnswer(bridge.logger, request, response, bridge.httpHandler)
        } else {
            bridge.httpHandler(request, response)
        }
    }
}

/// The C core's messages (accept errors, descriptor exhaustion) into the logger.
private let onLog: @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafePointer<CChar>?) -> Void = { ctx, level, message in
    let bridge = Unmanaged<Bridge>.fromOpaque(ctx!).takeUnretainedValue()
    let text = message.map { String(cString: $0) } ?? ""
    switch level {
    case Int32(PRG_LOG_ERROR.rawValue): bridge.logger.error("\(text)")
    case Int32(PRG_LOG_WARNING.rawValue): bridge.logger.warning("\(text)")
    default: bridge.logger.info("\(text)")
    }
}

// Set only when metrics are on (bridge.metrics is then non-nil).
private let onOpen: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?) -> Void = { ctx, _ in
    Unmanaged<Bridge>.fromOpaque(ctx!).takeUnretainedValue().metrics?.connectionOpened()
}

private let onClose: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, Int32) -> Void = { ctx, _, _ in
    Unmanaged<Bridge>.fromOpaque(ctx!).takeUnretainedValue().metrics?.connectionClosed()
}

private let onMetric: @convention(c) (UnsafeMutableRawPointer?, Int32, Int32) -> Void = { ctx, event, value in
    guard let metrics = Unmanaged<Bridge>.fromOpaque(ctx!).takeUnretainedValue().metrics else { return }
    switch event {
    case Int32(PRG_METRIC_SHED_ACCEPT.rawValue): metrics.acceptShed()
    case Int32(PRG_METRIC_PARSE_ERROR.rawValue): metrics.parseError(status: Int(value))
    default: break
    }
}

/// `.async`: the loop's executor (LoopExecutor.swift) at each phase of the loop.
private let onTick: @convention(c) (UnsafeMutableRawPointer?, Int32, Int32) -> Int32 = { ctx, index, phase in
    let bridge = Unmanaged<Bridge>.fromOpaque(ctx!).takeUnretainedValue()
    guard let executor = bridge.executors?.list[Int(index)] else { return 0 }
    switch phase {
    case Int32(PRG_TICK_START.rawValue): executor.bind(); return 0
    case Int32(PRG_TICK_STOP.rawValue): executor.close(); return 0
    default: return Int32(clamping: executor.runJobs())
    }
}

/// `.streaming`: the head of a request with a body. A consumer returned
/// becomes the stream's context (retained until on_body_end).
private let onHead: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<prg_request>?) -> Void = { ctx, conn, req in
    let bridge = Unmanaged<Bridge>.fromOpaque(ctx!).takeUnretainedValue()
    let conn = conn.unsafelyUnwrapped
    let request = requestView(conn, req.unsafelyUnwrapped)
    let response = Response(sink: conn, functions: bridge.responseFunctions)
    guard let consumer = bridge.streamHead(request, response) else { return }
    let context = Unmanaged.passRetained(consumer)
    if prg_body_stream(conn, context.toOpaque()) != 0 {
        // It answered as well: the answer stands, the body is not read.
        context.release()
        consumer.finish(.closed)
        return
    }
    consumer.attach(conn, functions: bridge.bodyFunctions, response: bridge.responseFunctions)
}

private let onBody: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int) -> Int = { _, _, stream, bytes, count in
    let consumer = Unmanaged<BodyConsumer>.fromOpaque(stream!).takeUnretainedValue()
    return consumer.deliver(UnsafeRawBufferPointer(start: bytes, count: count))
}

private let onBodyEnd: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafeMutableRawPointer?, Int32) -> Void = { _, _, stream, end in
    let consumer = Unmanaged<BodyConsumer>.fromOpaque(stream!).takeRetainedValue()   // the stream's reference ends here
    consumer.finish(BodyEnd(rawValue: end) ?? .closed)
}

private let onData: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<UInt8>?, Int) -> Int = { ctx, conn, bytes, count in
    let bridge = Unmanaged<Bridge>.fromOpaque(ctx!).takeUnretainedValue()
    let connection = Connection(handle: conn.unsafelyUnwrapped, functions: bridge.connectionFunctions)
    return bridge.dataHandler(connection, UnsafeRawBufferPointer(start: bytes, count: count))
}

extension Application {
    /// `.offloaded` and `.async` with `--log`: a line per answer, when it is
    /// given (inline routes are logged as they answer). Other cases unchanged.
    func loggingLateAnswers(_ logger: Logger) -> Application {
        switch self {
        case .http, .raw:
            return self
        case .streaming(let head, let request):
            // Answered from the head: logged then. Streamed: logged at the
            // end, with the status it got. Buffered: as `.http` (the engines).
            return .streaming(head: { req, response in
                let started = monotonicNanoseconds()
                guard let consumer = head(req, response) else {
                    if response.status != 0 { logRequest(logger, req, response, startedAt: started) }
                    return nil
                }
                let client = req.remoteAddress, method = req.methodString, target = req.targetString
                consumer.onEnd { how, body in
                    // 0: nothing was answered (the client left, the server stopped).
                    let status = body.response?.status ?? 0
                    logLine(logger, client, method, target, how == .complete && status == 0 ? 500 : status, startedAt: started)
                }
                return consumer
            }, request: request)
        case .offloaded(let handler, let inline):
            var loggedInline: InlineRoute? = nil
            if let route = inline {
                loggedInline = { request, response in
                    let started = monotonicNanoseconds()
                    let answered = route(request, response)
                    if answered { logRequest(logger, request, response, startedAt: started) }
                    return answered
                }
            }
            return .offloaded({ request, responder in
                let started = monotonicNanoseconds()
                handler(request, responder.reporting { status, bytes in
                    logLine(logger, request.remoteAddress, request.method, request.target, status, bytes: bytes, startedAt: started)
                })
            }, inline: loggedInline)
        case .async(let handler):
            return .async { request, body, writer in
                let started = monotonicNanoseconds()
                defer {
                    logLine(logger, writer.remoteAddress, request.method.rawValue, request.path ?? "", writer.status ?? 500,
                            bytes: writer.bytesWritten, startedAt: started)
                }
                try await handler(request, body, writer)
            }
        }
    }
}

/// `--log`: the access log through `logger` (see `Configuration.logRequests`).
/// Off the hot path unless asked for.
func logLine(_ logger: Logger, _ client: SocketAddress?, _ method: String, _ target: String, _ status: Int,
             bytes: Int? = nil, startedAt: UInt64) {
    let micros = (monotonicNanoseconds() &- startedAt) / 1000
    let ms = "\(micros / 1000).\(String(micros % 1000 + 1000).dropFirst())"   // 3 decimals
    let host = client?.host ?? "-"
    let size = bytes.map { String($0) } ?? "-"
    logger.info("\(host) \(method) \(target) \(status) \(size) \(ms)ms", metadata: [
        "event": "access", "client": "\(host)", "method": "\(method)", "target": "\(target)",
        "status": "\(status)", "bytes": "\(size)", "duration_ms": "\(ms)",
    ])
}

/// `--log` for an `.http` handler (and `.streaming`'s buffered requests):
/// one line after the handler, or when the answer it deferred is complete
/// (`AnswerWatch`: the stream app).
func logAnswer(_ logger: Logger, _ request: Request, _ response: Response, _ handler: HTTPHandler) {
    let started = monotonicNanoseconds()
    let deferred = AnswerWatch.watching(AccessLine(logger: logger, request: request, started: started)) {
        handler(request, response)
    }
    if !deferred { logRequest(logger, request, response, startedAt: started) }
}

/// A deferred `.http` answer's access line, written when it is complete.
private struct AccessLine: AnswerWatcher {
    let logger: Logger, request: Request, started: UInt64
    func report() -> AnswerReport {
        let client = request.remoteAddress, method = request.methodString, target = request.targetString
        return { [logger, started] status, bytes in logLine(logger, client, method, target, status, bytes: bytes, startedAt: started) }
    }
}

/// `--log`: one line per request.
func logRequest(_ logger: Logger, _ request: Request, _ response: Response, startedAt: UInt64) {
    // A handler that returned without answering is answered 500 by the core after this.
    logLine(logger, request.remoteAddress, request.methodString, request.targetString,
            response.status == 0 ? 500 : response.status, startedAt: startedAt)
}
