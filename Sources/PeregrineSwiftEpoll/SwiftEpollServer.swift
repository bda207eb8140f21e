// SwiftEpollServer.swift: listeners and threads (the port of csrc/server.c).
// One loop per thread, each with its own listening socket bound to the same
// port with SO_REUSEPORT (the kernel spreads new connections across them),
// so loops share nothing.

import CSystemEpoll
import Glibc
import PeregrineCore
import Synchronization

/// A system call that failed while starting the Swift engine.
public struct SwiftEngineError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    /// The errno.
    public let code: Int32

    public init(operation: String, code: Int32) {
        self.operation = operation
        self.code = code
    }

    public var description: String {
        let text = strerror(code).map { String(cString: $0) } ?? "unknown"
        return "\(operation) failed: errno \(code) (\(text))"
    }
}

/// An HTTP/1.1 or raw-TCP server on epoll, in Swift only (no C target of
/// ours): the same `Application`, the same behaviour as the C engine.
///
/// ```swift
/// var config = Configuration()   // engine is .swift whatever it says
/// config.port = 0
/// let server = SwiftEpollServer(configuration: config, application: .http { _, response in
///     response.send(body: "Hello, World!")
/// })
/// try server.start()
/// print(server.port)
/// server.stop()
/// ```
public final class SwiftEpollServer: @unchecked Sendable {
    // @unchecked: mutable state is touched only by start/stop, which the
    // owner calls from one thread; each loop's state only by its thread.
    /// As given, with `engine` set to `.swift`.
    public let configuration: Configuration
    private let app: AppHandlers
    private var loops: [SwiftLoop] = []
    private var running = false
    private let drain = DrainSignal()
    /// The loops `interrupt()` may wake from any thread. Emptied with the
    /// lock held before they are destroyed, so it never writes to a closed
    /// wake-up descriptor.
    private let wakeable = Locked<[SwiftLoop]>([])

    /// The bound port (after `start`).
    public private(set) var port = 0
    /// The backlog the kernel really uses: min(requested, somaxconn).
    public private(set) var effectiveBacklog = 0

    public init(configuration: Configuration, application: Application) {
        var configuration = configuration
        configuration.engine = .swift
        self.configuration = configuration
        self.app = AppHandlers(application, offloadThreads: configuration.offloadThreads,
                               offloadQueue: configuration.offloadQueue, asyncLimit: configuration.asyncLimit,
                               logger: configuration.logger, metrics: ServerMetrics(configuration))
    }

    deinit {
        stop()
    }

    /// Binds the listeners and starts one loop thread per `threads`
    /// (signals blocked in them, so SIGINT/SIGTERM stay with the caller).
    public func start() throws {
        if running { throw LifecycleError.alreadyStarted }
        let c = configuration
        try c.validate()   // the rules every engine shares (ConfigurationValidation.swift)
        let serverLine = Array("Server: \(c.serverName)\r\n".utf8)

        let somaxconn = Self.readSomaxconn()
        let backlog = c.backlog > 0 ? c.backlog : 1024
        let effective = min(backlog, somaxconn)

        let inherited = c.listenDescriptors
        if inherited.count > c.threads {
            throw SwiftEngineError(operation: "configure (\(inherited.count) inherited listeners for \(c.threads) loops)", code: EINVAL)
        }
        var addr = sockaddr_storage()
        var addrLen = socklen_t(0)
        if inherited.isEmpty { try Self.resolve(c.host, c.port, &addr, &addrLen) }

        var made: [SwiftLoop] = []
        var boundPort = 0
        do {
            for i in 0..<c.threads {
                let fd = inherited.isEmpty
                    ? try Self.openListener(&addr, addrLen, reusePort: c.threads > 1, noDelay: c.noDelay,
                                           deferAccept: !app.isRaw, backlog: effective)
                    : try Self.adoptListener(inherited[i % inherited.count])
                if i == 0 {
                    // Port 0: the others bind the port the kernel picked.
                    var bound = sockaddr_storage()
                    var blen = socklen_t(MemoryLayout<sockaddr_storage>.size)
                    let rc = withUnsafeMutablePointer(to: &bound) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &blen) }
                    }
                    if rc != 0 {
                        let e = errno
                        close(fd)
                        throw SwiftEngineError(operation: "getsockname", code: e)
                    }
                    boundPort = Self.port(of: &bound)
                    if inherited.isEmpty { Self.setPort(&addr, boundPort) }
                }
                let loop = SwiftLoop(configuration: c, loopCount: c.threads, index: i, app: app, drain: drain,
                                     serverLine: serverLine, inheritedListener: !inherited.isEmpty)
                made.append(loop)
                let rc = loop.open(listenFd: fd)
                if rc != 0 { throw SwiftEngineError(operation: "epoll setup", code: rc) }
            }
        } catch {
            for loop in made { loop.destroy() }
            throw error
        }

        // Loop threads and workers take no signals (startThread blocks them):
        // SIGINT and SIGTERM stay with the application's main thread, which
        // calls stop().
        var failure: Int32 = 0
        for loop in made {
            var tid = pthread_t()
            let rc = startThread(&tid) { loop.run() }
            if rc != 0 {
                failure = rc
                break
            }
            loop.thread = tid
        }
        if failure == 0, let pool = app.pool {
            let rc = pool.start()
            if rc != 0 { failure = rc }
        }
        loops = made
        wakeable.withLock { $0 = made }
        running = true
        if failure != 0 {
            stop()
            throw SwiftEngineError(operation: "start threads", code: failure)
        }
        port = boundPort
        effectiveBacklog = effective
    }

    /// Stops every loop, closes every connection and waits for the threads.
    /// Idempotent.
    public func stop() {
        guard running else { return }
        interrupt()
        join()
    }

    /// Graceful shutdown: every loop stops accepting (its listener is
    /// closed: the kernel refuses new connections), closes idle connections,
    /// lets each request in flight finish (answered with `Connection: close`,
    /// output flushed, then closed), and closes what is left once
    /// `deadlineMilliseconds` have passed. Blocks until every loop ended,
    /// then releases everything as `stop()` does. `interrupt()` from another
    /// thread during the drain ends it at once.
    ///
    /// `idleGraceMilliseconds` > 0 is for a server whose listeners another
    /// process serves now (a handoff): idle keep-alive connections are kept
    /// that long for their next request, answered with `Connection: close`
    /// (closing them at once races a request the client is sending).
    public func shutdown(deadlineMilliseconds: Int, idleGraceMilliseconds: Int = 0) {
        guard running else { return }
        if idleGraceMilliseconds > 0 {
            drain.idleUntil.store(monotonicMilliseconds() + Int64(idleGraceMilliseconds), ordering: .releasing)
        }
        drain.request(deadline: monotonicMilliseconds() + Int64(max(0, deadlineMilliseconds)))
        for loop in loops { loop.poke() }
        join()
    }

    /// Any thread, returns at once: every loop stops now (the threads are
    /// joined by `stop()` or a `shutdown` in progress). A no-op once they
    /// were released.
    package func interrupt() {
        wakeable.withLock { loops in
            for loop in loops { loop.wake() }
        }
    }

    /// The loops' listening sockets (one per loop; loops sharing an inherited
    /// socket list it under different numbers). Valid while running and
    /// before a shutdown.
    package var listenerDescriptors: [Int32] {
        loops.map { $0.state.pointee.listenFd }
    }

    /// Waits for the loop threads, then releases everything.
    private func join() {
        running = false
        for loop in loops {
            if let t = loop.thread {
                pthread_join(t, nil)
                loop.thread = nil
            }
        }
        app.pool?.shutdown()   // late answers meet stopped loops: dropped
        wakeable.withLock { $0 = [] }
        for loop in loops { loop.destroy() }
        loops = []
    }

    // MARK: - Sockets

    /// The kernel silently caps listen()'s backlog at net.core.somaxconn.
    static func readSomaxconn() -> Int {
        let fd = open("/proc/sys/net/core/somaxconn", O_RDONLY | O_CLOEXEC)
        if fd < 0 { return 4096 }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 32)
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { return 4096 }
        var v = 0, digits = 0
        for b in buf[0..<n] {
            if b >= 48 && b <= 57 {
                v = v * 10 + Int(b - 48)
                digits += 1
            } else if digits > 0 || (b != 32 && b != 9) {
                break
            }
        }
        return digits > 0 ? v : 4096
    }

    static func resolve(_ host: String, _ port: Int, _ addr: inout sockaddr_storage, _ len: inout socklen_t) throws {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var res: UnsafeMutablePointer<addrinfo>? = nil
        let rc = getaddrinfo(host.isEmpty ? "0.0.0.0" : host, String(port), &hints, &res)
        guard rc == 0, let r = res else { throw SwiftEngineError(operation: "resolve \(host)", code: EINVAL) }
        defer { freeaddrinfo(r) }
        withUnsafeMutableBytes(of: &addr) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: r.pointee.ai_addr, count: Int(r.pointee.ai_addrlen)))
        }
        len = r.pointee.ai_addrlen
    }

    static func openListener(_ addr: inout sockaddr_storage, _ len: socklen_t, reusePort: Bool, noDelay: Bool,
                             deferAccept: Bool, backlog: Int) throws -> Int32 {
        let fd = socket(Int32(addr.ss_family), Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SwiftEngineError(operation: "socket", code: errno) }
        var one: Int32 = 1
        let size = socklen_t(MemoryLayout<Int32>.size)
        func fail(_ what: String) -> SwiftEngineError {
            let e = errno
            close(fd)
            return SwiftEngineError(operation: what, code: e)
        }
        if setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, size) != 0 { throw fail("setsockopt SO_REUSEADDR") }
        if reusePort && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, size) != 0 { throw fail("setsockopt SO_REUSEPORT") }
        // Copied to every accepted socket (Linux): connections cost no setsockopt for it.
        if noDelay && setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, size) != 0 { throw fail("setsockopt TCP_NODELAY") }
        // HTTP clients speak first: the kernel hands over a connection once its
        // first bytes are in (or after a second without any), so the loop reads
        // the request right after accept (LoopState.readOnAccept), as in C.
        if deferAccept && setsockopt(fd, Int32(IPPROTO_TCP), TCP_DEFER_ACCEPT, &one, size) != 0 {
            throw fail("setsockopt TCP_DEFER_ACCEPT")
        }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        if rc != 0 { throw fail("bind") }
        if listen(fd, Int32(clamping: backlog)) != 0 { throw fail("listen") }
        return fd
    }

    /// An inherited descriptor (socket activation, handoff): a listening TCP
    /// socket, made non-blocking. Returns a dup the server owns.
    static func adoptListener(_ fd: Int32) throws -> Int32 {
        var type: Int32 = 0, listening: Int32 = 0
        var l1 = socklen_t(MemoryLayout<Int32>.size), l2 = l1
        var addr = sockaddr_storage()
        var alen = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &alen) }
        }
        guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l1) == 0,
              getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l2) == 0, named == 0,
              type == Int32(SOCK_STREAM.rawValue), listening != 0,
              Int32(addr.ss_family) == AF_INET || Int32(addr.ss_family) == AF_INET6
        else { throw SwiftEngineError(operation: "inherit descriptor \(fd) (not a listening TCP socket)", code: errno == EBADF ? EBADF : ENOTSOCK) }
        let own = fcntl(fd, F_DUPFD_CLOEXEC, 3)
        if own < 0 { throw SwiftEngineError(operation: "dup descriptor \(fd)", code: errno) }
        let fl = fcntl(own, F_GETFL)
        if fl < 0 || fcntl(own, F_SETFL, fl | O_NONBLOCK) != 0 {
            let e = errno
            close(own)
            throw SwiftEngineError(operation: "make descriptor \(fd) non-blocking", code: e)
        }
        return own
    }

    static func port(of addr: inout sockaddr_storage) -> Int {
        if Int32(addr.ss_family) == AF_INET6 {
            return withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            }
        }
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
    }

    static func setPort(_ addr: inout sockaddr_storage, _ port: Int) {
        let p = UInt16(truncatingIfNeeded: port).bigEndian
        if Int32(addr.ss_family) == AF_INET6 {
            withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_port = p } }
        } else {
            withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_port = p } }
        }
    }
}
