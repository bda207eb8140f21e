import CPeregrine
import PeregrineSwiftEpoll
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

func describeErrno(_ code: Int32) -> String {
    guard let s = strerror(code) else { return "unknown" }
    return String(cString: s)
}

/// An HTTP/1.1 or raw-TCP server on the C core.
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
public final class Server: @unchecked Sendable {
    // @unchecked: mutable state is touched only by start/stop, which the
    // owner calls from one thread; the loops read `bridge` only.
    public let configuration: Configuration
    private let bridge: Bridge
    private var handle: OpaquePointer?
    private var started = false
    /// The pure-Swift engine, when `configuration.engine == .swift`.
    private var swiftServer: SwiftEpollServer?
    /// Guards `handle` and `swiftServer` while a shutdown drains, so that a
    /// `stop()` from another thread never reaches a released server.
    private let lifecycle = Mutex<Void>(())
    private var shuttingDown = false

    public init(configuration: Configuration, application: Application) {
        self.configuration = configuration
        // --log for answers that come later: logged when they are given.
        let application = configuration.logRequests ? application.loggingLateAnswers() : application
        self.bridge = Bridge(application: application, logRequests: configuration.logRequests,
                             offloadThreads: configuration.offloadThreads, offloadQueue: configuration.offloadQueue)
    }

    deinit {
        stop()
    }

    /// The bound port (after `start`).
    public private(set) var port = 0
    /// The backlog the kernel really uses: min(requested, somaxconn).
    public private(set) var effectiveBacklog = 0

    /// Binds the listeners and starts one loop thread per `threads`.
    public func start() throws {
        precondition(!started, "server already started")
        if let problem = configuration.problem { throw ConfigurationError(description: problem) }
        if configuration.engine == .swift {
            let engine = try startSwiftEngine(application: bridge.application)
            swiftServer = engine
            port = engine.port
            effectiveBacklog = engine.effectiveBacklog
            started = true
            return
        }
        var cfg = prg_config()
        prg_config_default(&cfg)
        cfg.port = Int32(configuration.port)
        cfg.threads = Int32(configuration.threads)
        cfg.backlog = Int32(configuration.backlog)
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

        var callbacks = prg_callbacks()
        callbacks.ctx = Unmanaged.passUnretained(bridge).toOpaque()
        callbacks.on_request = onRequest
        // Answering later: a callback of its own, so plain HTTP pays nothing.
        switch bridge.application {
        case .offloaded, .async: callbacks.on_request = onOffloadedRequest
        case .http, .raw: break
        case .streaming:
            callbacks.on_head = onHead
            callbacks.on_body = onBody
            callbacks.on_body_end = onBodyEnd
        }
        callbacks.on_data = onData

        var err: Int32 = 0
        let created = configuration.host.withCString { host in
            configuration.serverName.withCString { name -> OpaquePointer? in
                cfg.host = host
                cfg.server_name = name   // copied into each loop's Server line at create
                let s = withUnsafePointer(to: &callbacks) { prg_server_create(&cfg, $0, &err) }
                cfg.host = nil
                cfg.server_name = nil
                return s
            }
        }
        guard let created else { throw ServerError(operation: "listen on \(configuration.host):\(configuration.port)", code: -err) }
        let rc = prg_server_start(created)
        if rc != 0 {
            prg_server_destroy(created)
            throw ServerError(operation: "start loop threads", code: -rc)
        }
        if let pool = bridge.pool, configuration.engine == .epoll || configuration.engine == .libev {
            // The blocking and threaded engines run offloaded handlers inline.
            let prc = pool.start()
            if prc != 0 {
                prg_server_stop(created)
                prg_server_wait(created)
                pool.shutdown()
                prg_server_destroy(created)
                throw ServerError(operation: "start offload threads", code: prc)
            }
        }
        handle = created
        port = Int(prg_server_port(created))
        effectiveBacklog = Int(prg_server_effective_backlog(created))
        started = true
    }

    /// Stops every loop, closes every connection and waits for the threads.
    /// From another thread while `shutdown(deadline:)` is draining: ends the
    /// drain at once (that call then returns and releases everything).
    public func stop() {
        let interrupted = lifecycle.withLock { _ -> Bool in
            guard shuttingDown else { return false }
            if let swiftServer { swiftServer.interrupt() } else if let handle { prg_server_stop(handle) }
            return true
        }
        if interrupted { return }
        if let swiftServer {
            swiftServer.stop()
            lifecycle.withLock { _ in self.swiftServer = nil }
            started = false
            return
        }
        guard started, let handle else { return }
        prg_server_stop(handle)
        prg_server_wait(handle)
        bridge.pool?.shutdown()   // late answers meet a stopped loop: dropped
        lifecycle.withLock { _ in
            prg_server_destroy(handle)
            self.handle = nil
        }
        started = false
    }

    /// Graceful shutdown: stops accepting (new connections are refused),
    /// closes idle keep-alive connections, lets every request in flight
    /// finish — it is answered with `Connection: close`, its output is
    /// flushed, then the connection is closed — and closes whatever is left
    /// once `deadline` has passed. Blocks until the last connection is gone
    /// (or the deadline), then releases everything as `stop()` does.
    /// `stop()` from another thread meanwhile ends the drain at once.
    public func shutdown(deadline: Duration = .seconds(10)) {
        let ms = Self.milliseconds(deadline)
        let engine: (swift: SwiftEpollServer?, c: OpaquePointer?)? = lifecycle.withLock { _ in
            guard started, !shuttingDown else { return nil }
            shuttingDown = true
            return (swiftServer, handle)
        }
        guard let engine else { return }
        if let swift = engine.swift {
            swift.shutdown(deadlineMilliseconds: ms)
            lifecycle.withLock { _ in
                shuttingDown = false
                swiftServer = nil
            }
        } else if let handle = engine.c {
            _ = prg_server_shutdown(handle, Int32(clamping: ms))
            prg_server_wait(handle)
            bridge.pool?.shutdown()   // late answers meet a stopped loop: dropped
            lifecycle.withLock { _ in
                shuttingDown = false
                prg_server_destroy(handle)
                self.handle = nil
            }
        }
        started = false
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
    /// that drain stops at once.
    public func run(started: (Server) -> Void = { _ in }) throws {
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        // Blocked before the loop threads exist, so only sigwait sees them.
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        try start()
        started(self)
        var received: Int32 = 0
        sigwait(&signals, &received)
        // A watcher thread takes a second signal while this one drains.
        let watcher = SignalWatcher(server: self, signals: signals)
        let tid = watcher.start()
        shutdown(deadline: configuration.shutdownDeadline)
        watcher.done.store(true, ordering: .releasing)
        if let tid { pthread_join(tid, nil) }
    }
}

/// During a graceful shutdown, waits for a second SIGINT/SIGTERM (polling a
/// flag every 100 ms to end with the drain) and then stops at once.
private final class SignalWatcher: @unchecked Sendable {
    let server: Server
    let signals: sigset_t
    let done = Atomic<Bool>(false)

    init(server: Server, signals: sigset_t) {
        self.server = server
        self.signals = signals
    }

    func start() -> pthread_t? {
        var tid = pthread_t()
        let arg = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&tid, nil, { arg in
            let watcher = Unmanaged<SignalWatcher>.fromOpaque(arg.unsafelyUnwrapped).takeRetainedValue()
            watcher.watch()
            return nil
        }, arg)
        if rc != 0 {
            Unmanaged<SignalWatcher>.fromOpaque(arg).release()
            return nil
        }
        return tid
    }

    private func watch() {
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
    /// `.offloaded`, `.async` on an engine that cannot defer: run inline, wait.
    let inlineFallback: HTTPHandler
    /// `.offloaded` applications: the workers.
    let pool: OffloadPool?
    let responseFunctions = ResponseWriterFunctions(
        respond: prg_respond, writeHeader: prg_write_header, writeBody: prg_write_body,
        end: prg_end, send: prg_send, status: prg_response_status)
    let connectionFunctions = ConnectionFunctions(
        write: prg_conn_write, close: prg_conn_close, id: prg_conn_id, pendingOutput: prg_conn_pending_output)
    let bodyFunctions = BodyStreamFunctions(
        begin: prg_body_stream, pause: prg_body_pause, resume: prg_body_resume, receiveCapacity: prg_conn_receive_capacity)
    /// `.streaming`: decides from the head (the C engines call it only then).
    let streamHead: StreamingHeadHandler

    init(application: Application, logRequests: Bool, offloadThreads: Int = 4, offloadQueue: Int = 256) {
        self.application = application
        self.logRequests = logRequests
        inlineFallback = application.waitingHandler(routeFirst: false) ?? { _, response in response.send(status: 500, body: "not offloaded") }
        if case .streaming(let head, _) = application { streamHead = head } else { streamHead = { _, _ in nil } }
        switch application {
        case .http(let h): httpHandler = h; dataHandler = { _, _ in 0 }; pool = nil
        case .raw(let h): httpHandler = { _, response in response.send(status: 500, body: "raw server") }; dataHandler = h; pool = nil
        case .offloaded:
            // Inline, for engines that cannot defer (blocking, threaded).
            httpHandler = application.inlineHandler!; dataHandler = { _, _ in 0 }
            pool = OffloadPool(threads: offloadThreads, queueLimit: offloadQueue)
        case .async:
            httpHandler = application.inlineHandler!; dataHandler = { _, _ in 0 }; pool = nil
        case .streaming(_, let request):
            httpHandler = request; dataHandler = { _, _ in 0 }; pool = nil
        }
    }

    /// A deferred request (C engines): copy it, hand it to the pool or a
    /// task; the answer is posted back to the connection's loop.
    func dispatchLater(_ conn: OpaquePointer, _ request: Request, _ response: Response) {
        if case .offloaded(_, let inline?) = application, inline(request, response) { return }
        guard let deferred = prg_defer(conn) else {
            inlineFallback(request, response)   // this engine cannot defer: inline
            return
        }
        let handle = DeferredHandle(pointer: deferred)
        let responder = Responder { handle.complete($0) }
        let owned = OwnedRequest(request)
        switch application {
        case .offloaded(let handler, _):
            if !pool!.submit({ handler(owned, responder) }) {
                responder.send(status: 503, headers: [("Retry-After", "1")], body: "Service Unavailable\n")
            }
        case .async(let handler):
            Task { responder.send(await handler(owned)) }
        case .http, .raw, .streaming:
            break
        }
    }
}

/// A `prg_deferred` handed to another thread: completed once, by the
/// responder, from any thread (the C side allows it).
struct DeferredHandle: @unchecked Sendable {
    let pointer: OpaquePointer

    func complete(_ answer: OffloadAnswer) {
        for (name, value) in answer.headers {
            var name = name, value = value
            _ = name.withUTF8 { n in
                value.withUTF8 { v in
                    prg_deferred_header(pointer, UnsafeRawPointer(n.baseAddress)?.assumingMemoryBound(to: CChar.self), n.count,
                                        UnsafeRawPointer(v.baseAddress)?.assumingMemoryBound(to: CChar.self), v.count)
                }
            }
        }
        _ = answer.body.withUnsafeBytes { prg_deferred_send(pointer, Int32(clamping: answer.status), $0.baseAddress, $0.count) }
    }
}

/// The zero-copy Swift view of the C parser's request (valid during the callback).
@inline(__always)
private func requestView(_ r: UnsafePointer<prg_request>) -> Request {
    Request(
        method: UnsafeRawBufferPointer(start: r.pointee.method.ptr, count: r.pointee.method.len),
        target: UnsafeRawBufferPointer(start: r.pointee.target.ptr, count: r.pointee.target.len),
        versionMinor: Int(r.pointee.version_minor),
        keepAlive: r.pointee.flags & UInt32(PRG_REQ_KEEP_ALIVE) != 0,
        headerTable: UnsafeRawPointer(r.pointee.headers),
        headerCount: r.pointee.header_count,
        body: UnsafeRawBufferPointer(start: r.pointee.body.ptr, count: r.pointee.body.len))
}

private let onRequest: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<prg_request>?) -> Void = { ctx, conn, req in
    let bridge = Unmanaged<Bridge>.fromOpaque(ctx!).takeUnretainedValue()
    let request = requestView(req.unsafelyUnwrapped)
    let response = Response(sink: conn.unsafelyUnwrapped, functions: bridge.responseFunctions)
    bridge.httpHandler(request, response)
    if bridge.logRequests { logRequest(request, response) }
}

private let onOffloadedRequest: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<prg_request>?) -> Void = { ctx, conn, req in
    let bridge = Unmanaged<Bridge>.fromOpaque(ctx!).takeUnretainedValue()
    let request = requestView(req.unsafelyUnwrapped)
    let response = Response(sink: conn.unsafelyUnwrapped, functions: bridge.responseFunctions)
    bridge.dispatchLater(conn.unsafelyUnwrapped, request, response)
}

/// `.streaming`: the head of a request with a body. A consumer returned
/// becomes the stream's context (retained until on_body_end).
private let onHead: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<prg_request>?) -> Void = { ctx, conn, req in
    let bridge = Unmanaged<Bridge>.fromOpaque(ctx!).takeUnretainedValue()
    let conn = conn.unsafelyUnwrapped
    let request = requestView(req.unsafelyUnwrapped)
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
    func loggingLateAnswers() -> Application {
        switch self {
        case .http, .raw:
            return self
        case .streaming(let head, let request):
            // Answered from the head: logged then. Streamed: logged at the
            // end, with the status it got. Buffered: as `.http` (the engines).
            return .streaming(head: { req, response in
                guard let consumer = head(req, response) else {
                    if response.status != 0 { logRequest(req, response) }
                    return nil
                }
                let method = req.methodString, target = req.targetString
                consumer.onEnd { how, body in
                    // 0: nothing was answered (the client left, the server stopped).
                    let status = body.response?.status ?? 0
                    logLine(method, target, how == .complete && status == 0 ? 500 : status)
                }
                return consumer
            }, request: request)
        case .offloaded(let handler, let inline):
            var loggedInline: InlineRoute? = nil
            if let route = inline {
                loggedInline = { request, response in
                    let answered = route(request, response)
                    if answered { logRequest(request, response) }
                    return answered
                }
            }
            return .offloaded({ request, responder in
                handler(request, Responder { answer in
                    logLine(request.method, request.target, answer.status)
                    responder.send(answer)
                })
            }, inline: loggedInline)
        case .async(let handler):
            return .async { request in
                let answer = await handler(request)
                logLine(request.method, request.target, answer.status)
                return answer
            }
        }
    }
}

func logLine(_ method: String, _ target: String, _ status: Int) {
    var bytes = Array("\(method) \(target) \(status)\n".utf8)
    _ = bytes.withUnsafeMutableBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
}

/// `--log`: one line per request. Off the hot path unless asked for.
func logRequest(_ request: Request, _ response: Response) {
    // A handler that returned without answering is answered 500 by the core after this.
    let status = response.status == 0 ? 500 : response.status
    let line = "\(request.methodString) \(request.targetString) \(status)\n"
    var bytes = Array(line.utf8)
    _ = bytes.withUnsafeMutableBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
}
