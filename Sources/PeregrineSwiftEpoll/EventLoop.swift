// EventLoop.swift: one loop per thread (the port of csrc/loop.c and
// csrc/loop_epoll.c): accepting, the edge ready list, clocks, the end of
// each batch, and the epoll readiness loop itself.
//
//  level  EPOLLIN registered while the connection may read, EPOLLOUT only
//         while output is pending (one epoll_ctl when that changes). As in
//         edge mode, recvs per wakeup go on while each fills the buffer, at
//         most Tuning.readsPerWakeup; the kernel reports the rest again.
//  edge   EPOLLIN|EPOLLOUT|EPOLLET registered once at accept and never
//         changed. Reads until EAGAIN, but at most Tuning.readsPerWakeup
//         recvs, then the connection goes on a ready list served after the
//         other events (no starvation).

import CSystemEpoll
import Glibc
import Logging
import PeregrineCore
import Synchronization

/// What a loop runs: non-optional handlers (an Optional closure stored in a
/// class costs a reabstraction thunk allocation per call on this toolchain).
/// The unused one of the pair is never called.
final class AppHandlers: Sendable {
    let http: HTTPHandler
    let data: DataHandler
    let isRaw: Bool
    /// `.streaming`: sees the head of each request with a body.
    let streamHead: StreamingHeadHandler
    let streams: Bool
    /// `.offloaded` applications: the workers.
    let pool: OffloadPool?
    /// `configuration.logger`: accept errors, descriptor exhaustion.
    let logger: Logger
    /// `.async`: each loop is its handlers' task executor.
    let isAsync: Bool
    /// Connections, shed accepts, parse errors; nil: no metrics backend,
    /// nothing counted (requests are counted by `Server`'s wrapping).
    let metrics: ServerMetrics?

    init(_ application: Application, offloadThreads: Int = 4, offloadQueue: Int = 256, asyncLimit: Int = 1024,
         logger: Logger = Logger(label: "peregrine"), metrics: ServerMetrics? = nil) {
        self.logger = logger
        self.metrics = metrics
        var dispatcher: AsyncDispatcher? = nil
        if case .async(let handler) = application {
            dispatcher = AsyncDispatcher(handler: handler, limit: asyncLimit, logger: logger)
        }
        if case .streaming(let head, _) = application {
            streamHead = head
            streams = true
        } else if let dispatcher {
            streamHead = dispatcher.handleHead   // bodies stream to the handler
            streams = true
        } else {
            streamHead = { _, _ in nil }
            streams = false
        }
        switch application {
        case .http(let h):
            http = h
            data = { _, _ in 0 }
            isRaw = false
            isAsync = false
        case .raw(let h):
            http = { _, response in response.send(status: 500, body: "raw server") }
            data = h
            isRaw = true
            isAsync = false
        case .offloaded(let handler, let inline):
            let dispatcher = OffloadDispatcher(handler: handler, inline: inline, threads: offloadThreads,
                                               queueLimit: offloadQueue, logger: logger)
            http = dispatcher.handle
            data = { _, _ in 0 }
            isRaw = false
            pool = dispatcher.pool
            isAsync = false
            return
        case .streaming(_, let request):
            http = request
            data = { _, _ in 0 }
            isRaw = false
            isAsync = false
        case .async:
            http = dispatcher!.handle
            data = { _, _ in 0 }
            isRaw = false
            isAsync = true
            pool = nil
            return
        }
        pool = nil
    }
}

/// Graceful shutdown asked (SwiftEpollServer.shutdown): the deadline in
/// CLOCK_MONOTONIC ms, 0 = not asked. One per server, read by every loop and
/// by the response writer (the answer being written is the last one).
final class DrainSignal: Sendable {
    let deadline = Atomic<Int64>(0)
    /// Handed off: idle connections wait for a next request until then
    /// (CLOCK_MONOTONIC milliseconds; 0 = close them at once). Stored
    /// before `deadline`, which the loops read first.
    let idleUntil = Atomic<Int64>(0)

    /// A second call may only bring the deadline closer.
    func request(deadline: Int64) {
        var current = self.deadline.load(ordering: .acquiring)
        while current == 0 || deadline < current {
            let (exchanged, original) = self.deadline.compareExchange(expected: current, desired: deadline,
                                                                      ordering: .acquiringAndReleasing)
            if exchanged { break }
            current = original
        }
    }
}

/// epoll tags for the two descriptors that are not connections.
private enum Tag {
    static let wake: UInt64 = 0
    static let listener: UInt64 = 1
}

/// One loop's state (prg_loop): a C-style record, touched only by its thread
/// (and by start/stop before and after that thread runs).
struct LoopState {
    // Configuration (fixed).
    let edge: Bool
    let raw: Bool
    let cork: Bool
    /// TCP_NODELAY per accepted socket: only with an inherited listener (ours
    /// has it set at creation and every accepted socket copies it, as in C).
    let noDelayPerConnection: Bool
    /// Our own listener in HTTP mode has TCP_DEFER_ACCEPT: an accepted
    /// connection's request is usually in already, so it is read at once and
    /// registered with epoll only if it stays open (no epoll_ctl for one that is
    /// answered and closed right away).
    let readOnAccept: Bool
    let proxyProtocol: Bool
    let limits: HTTP1Limits
    /// `.streaming`: the limits before the head handler chose (maxBody covers
    /// both kinds of body), and those of a streamed body.
    let streamHeads: Bool
    let headLimits: HTTP1Limits
    let streamLimits: HTTP1Limits
    let bodyFunctions: BodyStreamFunctions
    let maxOutput: Int
    let inLimit: Int
    let loopCount: UInt64
    /// Kept alive by the server and the loop object; read through
    /// `_withUnsafeGuaranteedRef` so calling a handler retains nothing.
    let app: Unmanaged<AppHandlers>
    /// Kept alive by the server and the loop object, as `app`.
    let drainSignal: Unmanaged<DrainSignal>
    let responseFunctions: ResponseWriterFunctions
    let connectionFunctions: ConnectionFunctions

    // Descriptors.
    var epfd: Int32 = -1
    var listenFd: Int32 = -1
    var wakeFd: Int32 = -1
    /// Answers posted from other threads (Offload.swift); the loop object holds it.
    var mailbox: Unmanaged<Mailbox>? = nil
    /// Owed answers by handler-timeout deadline (Offload.swift); the
    /// connections' lists hold them.
    var lateHead: Unmanaged<DeferredAnswer>? = nil
    var lateTail: Unmanaged<DeferredAnswer>? = nil
    let handlerTimeout: UInt32   // seconds, 0 = off
    var reserveFd: Int32 = -1 // spare descriptor released to shed connections on EMFILE

    // Memory.
    var poolFree: UnsafeMutableRawPointer? = nil
    var poolCount = 0
    var freeConns: ConnPtr? = nil
    var live: ConnPtr? = nil
    var ready: ConnPtr? = nil   // edge mode: input left to read; writes from elsewhere
    var dead: ConnPtr? = nil    // closed during this batch; recycled after it

    var listenerReady = false   // accept queue not known to be drained
    var listenerPaused = false  // accept failed for lack of resources
    var listenerResume: UInt32 = 0
    var emfileLogged = 0
    var listenerLogged = 0      // last time a failed listener (re-)arm was logged
    var nextId: UInt64 = 0
    var draining = false        // graceful shutdown under way: answers close
    var drainDeadline: Int64 = 0 // CLOCK_MONOTONIC milliseconds

    // Scratch memory, allocated once.
    let headers: UnsafeMutableRawPointer          // parser output, maxHeaders records
    let timers: UnsafeMutablePointer<TimerList>   // indexed by TimerKind
    let events: UnsafeMutablePointer<epoll_event>
    let iov: UnsafeMutablePointer<iovec>
    let junk: UnsafeMutableRawPointer             // lingering discards, 4 KiB

    // Clocks.
    var now: UInt32 = 0        // CLOCK_MONOTONIC_COARSE seconds, refreshed each round
    var swept: UInt32 = 0      // second of the last timeout sweep
    var dateSecond = -1
    var dateLen = 0
    let dateLine: UnsafeMutableRawPointer   // 64 bytes
    let serverLine: UnsafeMutableRawPointer // "Server: <name>\r\n"
    let serverLineLen: Int
    /// "HTTP/1.1 200 OK", Server, Date, "Content-Type: <sendCT>\r\n" and
    /// "Content-Length: " in one piece for `send` (ResponseWriter.swift): the
    /// last Content-Type it sent (already checked), rebuilt when the type or
    /// the Date changes (as conn.c's loop send_head).
    let sendHead: UnsafeMutableRawPointer
    var sendHeadLen = 0
    var sendHeadSecond = -1
    let sendCT: UnsafeMutableRawPointer     // sendCTMax bytes
    var sendCTLen = 0                       // sendHeadLen 0: none kept yet
    /// Where the answer being written by `respMarkConn` began in its send
    /// queue (its RespFlag.marked): nothing is flushed during a handler, so
    /// `replace` can cut the queue back to here. nil chunk: the queue was
    /// empty. In the loop, not each connection: only the connection in a
    /// handler needs it (as the C loop's resp_mark_*).
    var respMarkConn: ConnPtr? = nil
    var respMarkChunk: ChunkPtr? = nil
    var respMarkEnd: UInt32 = 0

    init(configuration c: Configuration, loopCount: Int, index: Int, app: AppHandlers,
         drain: DrainSignal, serverLine: [UInt8], inheritedListener: Bool) {
        drainSignal = Unmanaged.passUnretained(drain)
        edge = c.trigger == .edge
        raw = app.isRaw
        cork = c.cork
        noDelayPerConnection = c.noDelay && inheritedListener
        readOnAccept = !app.isRaw && !inheritedListener
        proxyProtocol = c.proxyProtocol
        limits = c.limits
        streamHeads = app.streams
        var head = c.limits, streamed = c.limits
        if app.streams { head.maxBody = max(c.limits.maxBody, c.maxStreamedBody) }
        streamed.maxBody = c.maxStreamedBody
        headLimits = head
        streamLimits = streamed
        bodyFunctions = SwiftBodyStream.functions()
        maxOutput = c.maxOutputPerConnection
        inLimit = app.isRaw ? Tuning.rawMaxInput
            : 2 * c.limits.maxHeaderBytes + c.limits.maxBody + c.limits.maxRequestLine + Tuning.blockSize
        self.loopCount = UInt64(loopCount)
        self.app = Unmanaged.passUnretained(app)
        responseFunctions = SwiftResponseWriter.functions()
        connectionFunctions = RawConnection.functions()
        nextId = UInt64(index) // loop i hands out i, i+N, i+2N...
        headers = UnsafeMutableRawPointer.allocate(byteCount: max(c.limits.maxHeaders, 1) * Request.headerRecordSize,
                                                   alignment: 8)
        timers = .allocate(capacity: TimerKind.count)
        timers.initialize(repeating: TimerList(), count: TimerKind.count)
        timers[TimerKind.head].timeout = UInt32(clamping: c.headerTimeout)
        timers[TimerKind.idle].timeout = UInt32(clamping: c.idleTimeout)
        timers[TimerKind.linger].timeout = Tuning.lingerSeconds
        handlerTimeout = UInt32(clamping: c.handlerTimeout)
        events = .allocate(capacity: Int(Tuning.maxEvents))
        iov = .allocate(capacity: Tuning.maxIov)
        junk = .allocate(byteCount: 4096, alignment: 8)
        dateLine = .allocate(byteCount: 64, alignment: 8)
        let line = UnsafeMutableRawPointer.allocate(byteCount: serverLine.count, alignment: 8)
        serverLine.withUnsafeBytes { line.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        self.serverLine = line
        serverLineLen = serverLine.count
        sendHead = .allocate(byteCount: 17 + serverLine.count + 64 + 14 + sendCTMax + 2 + 16, alignment: 8)
        sendCT = .allocate(byteCount: sendCTMax, alignment: 8)
    }
}

// MARK: - Memory pool

extension UnsafeMutablePointer where Pointee == LoopState {
    /// A 16 KiB block; nil only when malloc fails.
    @inline(__always)
    func poolGet() -> UnsafeMutableRawPointer? {
        if let b = pointee.poolFree {
            pointee.poolFree = b.load(as: UnsafeMutableRawPointer?.self)
            pointee.poolCount &-= 1
            return b
        }
        return malloc(Tuning.blockSize)
    }

    @inline(__always)
    func poolPut(_ b: UnsafeMutableRawPointer) {
        if pointee.poolCount >= Tuning.poolMaxFree {
            free(b)
            return
        }
        b.storeBytes(of: pointee.poolFree, as: UnsafeMutableRawPointer?.self)
        pointee.poolFree = b
        pointee.poolCount &+= 1
    }

    func poolDrain() {
        while let b = pointee.poolFree {
            pointee.poolFree = b.load(as: UnsafeMutableRawPointer?.self)
            free(b)
        }
        pointee.poolCount = 0
    }
}

// MARK: - Clocks

extension UnsafeMutablePointer where Pointee == LoopState {
    /// Both clocks come through the vDSO: no syscall.
    @inline(__always)
    func refreshClocks() {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &ts)
        if ts.tv_sec != pointee.dateSecond {
            pointee.dateLen = formatDateLine(pointee.dateLine, ts.tv_sec)
            pointee.dateSecond = ts.tv_sec
        }
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
        pointee.now = UInt32(truncatingIfNeeded: ts.tv_sec)
    }
}

// MARK: - Accepting

extension UnsafeMutablePointer where Pointee == LoopState {
    @inline(__always)
    func listenerEvents() -> UInt32 {
        // The listener follows the loop's mode only for edge: with level a
        // pending accept simply shows up again next round.
        EP.input | (pointee.edge ? EP.et : 0)
    }

    /// Off removes the listener from the set (as loop_epoll.c): a socket
    /// shared with another process would stay in it after close(). 0 or an
    /// errno; already in the state asked for (EEXIST, ENOENT) counts as done.
    func setListener(_ on: Bool) -> Int32 {
        var ev = epoll_event(events: listenerEvents(), data: epoll_data_t(u64: Tag.listener))
        if epoll_ctl(pointee.epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, pointee.listenFd, &ev) == 0 { return 0 }
        let err = errno
        return err == (on ? EEXIST : ENOENT) ? 0 : err
    }

    func logListenerError(_ what: String, _ err: Int32) {
        let now = time(nil)
        if now == pointee.listenerLogged { return } // at most once a second
        pointee.listenerLogged = now
        pointee.app._withUnsafeGuaranteedRef { $0.logger }.error("\(what) the listener: \(String(cString: strerror(err)))")
    }

    /// Out of a resource the next accept will lack too: stop watching the
    /// listener for a second instead of waking up for it in a loop.
    func pauseListener() {
        pointee.listenerPaused = true
        pointee.listenerReady = false
        pointee.listenerResume = pointee.now &+ 1
        // Still armed if this fails: the loop wakes for the listener until
        // the resume but accepts nothing (paused), and says so.
        let err = setListener(false)
        if err != 0 { logListenerError("pausing", err) }
    }

    /// Re-arms the listener; if that fails it stays paused and tries again a
    /// second later (otherwise accepting would never resume).
    func resumeListener() {
        let err = setListener(true)
        if err != 0 {
            logListenerError("re-arming", err)
            pointee.listenerResume = pointee.now &+ 1
            return
        }
        pointee.listenerPaused = false
        pointee.listenerReady = true // the backlog may be full already: no new edge
    }

    func logAcceptError(_ err: Int32) {
        let now = time(nil)
        if now == pointee.emfileLogged { return } // at most once a second
        pointee.emfileLogged = now
        let text = String(cString: strerror(err))
        pointee.app._withUnsafeGuaranteedRef { $0.logger }.warning("accept: \(text); shedding new connections")
    }

    /// Out of descriptors: give back the reserved descriptor, accept the
    /// pending connection and close it at once (the client sees a clean
    /// close instead of hanging in the backlog), then take the reserve again.
    func shedConnection() -> Bool {
        if pointee.reserveFd < 0 { pointee.reserveFd = open("/dev/null", O_RDONLY | O_CLOEXEC) }
        if pointee.reserveFd < 0 { return false }
        close(pointee.reserveFd)
        let fd = accept4(pointee.listenFd, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
        if fd >= 0 {
            close(fd)
            pointee.app._withUnsafeGuaranteedRef { $0.metrics }?.acceptShed()
        }
        pointee.reserveFd = open("/dev/null", O_RDONLY | O_CLOEXEC)
        return fd >= 0
    }

    func openConnection(_ fd: Int32) -> ConnPtr {
        let c: ConnPtr
        if let f = pointee.freeConns {
            pointee.freeConns = f.pointee.readyNext
            c = f
            c.pointee = ConnState(loop: self)
        } else {
            c = .allocate(capacity: 1)
            c.initialize(to: ConnState(loop: self))
        }
        c.pointee.fd = fd
        pointee.app._withUnsafeGuaranteedRef { $0.metrics }?.connectionOpened()
        if pointee.proxyProtocol { c.pointee.flags |= CF.proxyPending }
        c.pointee.id = pointee.nextId
        pointee.nextId &+= pointee.loopCount
        c.pointee.next = pointee.live
        if let l = pointee.live { l.pointee.prev = c }
        pointee.live = c
        return c
    }

    /// Accepts what the backlog holds (non-blocking listener).
    func acceptReady() {
        pointee.listenerReady = false
        if pointee.listenerPaused { return }
        // A graceful shutdown was asked: nothing new is accepted, even in the
        // batch before this loop's drain begins (it closes the listener).
        if pointee.drainSignal.takeUnretainedValue().deadline.load(ordering: .acquiring) != 0 { return }
        var i = 0
        while i < Tuning.acceptsPerWakeup {
            i += 1
            var peer = sockaddr_storage()
            var peerLen = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = withUnsafeMutableBytes(of: &peer) {
                accept4(pointee.listenFd, $0.baseAddress?.assumingMemoryBound(to: sockaddr.self), &peerLen,
                        Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue))
            }
            if fd < 0 {
                let err = errno
                if err == EAGAIN || err == EWOULDBLOCK { return } // drained
                if err == EINTR || err == ECONNABORTED || err == EPROTO { continue }
                logAcceptError(err)
                if (err == EMFILE || err == ENFILE) && shedConnection() { continue }
                pauseListener() // ENOBUFS, ENOMEM, or shedding impossible
                return
            }
            if pointee.noDelayPerConnection {
                var one: Int32 = 1
                // Cannot fail on an accepted TCP socket; if it did, only latency
                // would change (Nagle), not what is sent (as in C).
                _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            }
            let c = openConnection(fd)
            c.pointee.remote = withUnsafeBytes(of: &peer) { SocketAddress(sockaddr: $0.baseAddress!) }
            if pointee.readOnAccept {
                // TCP_DEFER_ACCEPT: the request is usually here already; finishIO
                // registers the connection if it stays open (updateInterest).
                c.onReadable()
                c.finishIO()
                continue
            }
            if !c.watch() { continue }
            c.updateTimer() // a client that never sends is idle from the start
        }
        // Cap reached: more may wait, and in edge mode no new edge will say so.
        pointee.listenerReady = true
    }
}

// MARK: - Batches

extension UnsafeMutablePointer where Pointee == LoopState {
    func serveReadyList() {
        var c = pointee.ready
        pointee.ready = nil // connections re-marked while serving go on a new list
        while let cc = c {
            c = cc.pointee.readyNext
            cc.pointee.flags &= ~CF.onReadyList
            if cc.pointee.flags & CF.closed != 0 {
                cc.pointee.readyNext = pointee.dead
                pointee.dead = cc
            } else {
                cc.onReadable()
                cc.finishIO()
            }
        }
    }

    @inline(__always)
    func freeDead() {
        while let c = pointee.dead {
            pointee.dead = c.pointee.readyNext
            c.release()
        }
    }

    /// How long epoll_wait may block: 0, 1000 (timers tick) or -1.
    @inline(__always)
    func waitMilliseconds() -> Int32 {
        if pointee.ready != nil || pointee.listenerReady { return 0 }
        var ms: Int32 = timersPending ? 1000 : -1
        if pointee.draining {
            // Wake at the shutdown deadline at the latest, and when idle
            // connections kept after a handoff are due to close.
            let now = monotonicMilliseconds()
            var left = Int32(clamping: Swift.max(0, pointee.drainDeadline - now))
            let grace = Int32(clamping: Swift.max(0, pointee.drainSignal.takeUnretainedValue().idleUntil.load(ordering: .relaxed) - now))
            if grace > 0 && grace < left { left = grace }
            if ms < 0 || left < ms { ms = left }
        }
        return ms
    }

    /// After each batch of events: accepts, ready list, timers, recycling.
    @inline(__always)
    func endBatch() {
        if pointee.listenerReady { acceptReady() }
        if pointee.ready != nil { serveReadyList() }
        if pointee.now != pointee.swept { sweepTimers() }
        if pointee.dead != nil { freeDead() }
    }

    /// Maps epoll bits to Ev bits.
    @inline(__always)
    static func events(_ ev: UInt32) -> UInt32 {
        var out: UInt32 = 0
        if ev & EP.input != 0 { out |= Ev.read }
        if ev & EP.output != 0 { out |= Ev.write }
        if ev & (EP.rdhup | EP.hup) != 0 { out |= Ev.hup }
        if ev & EP.err != 0 { out |= Ev.error }
        if ev & EP.pri != 0 { out |= Ev.urgent }
        return out
    }
}

/// CLOCK_MONOTONIC in milliseconds.
func monotonicMilliseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

// MARK: - Graceful shutdown (loop.c's prg_loop_drain)

extension UnsafeMutablePointer where Pointee == ConnState {
    /// Nothing in flight: no request partly received (raw: unconsumed input
    /// does not count), no output pending, no handler running, not lingering.
    var drainIdle: Bool {
        if pointee.flags & (CF.closed | CF.inCallback | CF.linger) != 0 { return false }
        if pointee.outBytes != 0 || pointee.deferHead != nil { return false }   // output pending, or answers owed
        if pointee.flags & CF.streaming != 0 { return false }                  // a body on its way
        return pointee.inLen == 0 || pointee.loop.pointee.raw
    }
}

extension UnsafeMutablePointer where Pointee == LoopState {
    /// Stop accepting: closing the listener makes the kernel refuse new
    /// connections and reset those still in its accept queue. A listener
    /// handed to another process (or inherited from systemd) stays open
    /// there: that process accepts what is queued.
    func beginDrain(deadline: Int64) {
        pointee.draining = true
        pointee.drainDeadline = deadline
        if pointee.listenFd >= 0 {
            // Out of the set first: a socket another process shares would stay
            // in it after close() (the set holds the open file, not the number).
            // Closed either way; a failure is logged.
            let err = setListener(false)
            if err != 0 { logListenerError("removing", err) }
            close(pointee.listenFd)
            pointee.listenFd = -1
        }
        pointee.listenerReady = false
        pointee.listenerPaused = false
        // Output pending and no request buffered: the answer is the last one.
        var c = pointee.live
        while let cc = c {
            c = cc.pointee.next
            if cc.pointee.flags & (CF.closed | CF.linger | CF.closeAfter | CF.streaming) != 0 || cc.pointee.outBytes == 0
                || cc.pointee.inLen != 0 { continue }
            cc.pointee.flags |= CF.closeAfter
            cc.pointee.closeReason = CloseReason.shutdown
            cc.updateInterest()
        }
    }

    /// After each batch while draining: close what is idle (everything at the
    /// deadline). Returns true when the last connection is gone.
    func drain() -> Bool {
        let now = monotonicMilliseconds()
        let expired = now >= pointee.drainDeadline
        // After a handoff, idle connections are kept a while for their next
        // request (answered with Connection: close).
        let closeIdle = now >= pointee.drainSignal.takeUnretainedValue().idleUntil.load(ordering: .relaxed)
        var c = pointee.live
        while let cc = c {
            c = cc.pointee.next // closeNow unlinks it
            if expired || (closeIdle && cc.drainIdle) { cc.closeNow(CloseReason.shutdown) }
        }
        if pointee.dead != nil { freeDead() }
        return pointee.live == nil
    }
}

/// A loop and its thread.
final class SwiftLoop: @unchecked Sendable {
    let state: LoopPtr
    let stopFlag = Atomic<Bool>(false)
    let drain: DrainSignal
    let app: AppHandlers
    var thread: pthread_t? = nil
    /// Answers from other threads; outlives the loop while answers hold it.
    var mailbox: Mailbox? = nil
    /// `.async`: the task executor of this loop's handlers.
    let executor: LoopExecutor?

    init(configuration: Configuration, loopCount: Int, index: Int, app: AppHandlers, drain: DrainSignal,
         serverLine: [UInt8], inheritedListener: Bool) {
        self.app = app
        self.drain = drain
        let state = LoopPtr.allocate(capacity: 1)
        self.state = state
        // A wake-up never comes after close() (the executor's lock), so
        // the state it reads is still there.
        nonisolated(unsafe) let target = state
        executor = app.isAsync ? LoopExecutor(wake: { SwiftLoop.poke(target) }) : nil
        state.initialize(to: LoopState(configuration: configuration, loopCount: loopCount, index: index, app: app,
                                       drain: drain, serverLine: serverLine, inheritedListener: inheritedListener))
        state.refreshClocks()
    }

    /// epoll set, eventfd, the listener. 0 or an errno.
    func open(listenFd: Int32) -> Int32 {
        state.pointee.listenFd = listenFd
        state.pointee.reserveFd = Glibc.open("/dev/null", O_RDONLY | O_CLOEXEC)
        state.pointee.epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        if state.pointee.epfd < 0 { return errno }
        state.pointee.wakeFd = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        if state.pointee.wakeFd < 0 { return errno }
        var ev = epoll_event(events: EP.input, data: epoll_data_t(u64: Tag.wake))
        if epoll_ctl(state.pointee.epfd, EPOLL_CTL_ADD, state.pointee.wakeFd, &ev) != 0 { return errno }
        guard let mb = Mailbox.make(wakeFd: state.pointee.wakeFd) else { return ENOMEM }
        mailbox = mb
        state.pointee.mailbox = Unmanaged.passUnretained(mb)
        ev = epoll_event(events: state.listenerEvents(), data: epoll_data_t(u64: Tag.listener))
        if epoll_ctl(state.pointee.epfd, EPOLL_CTL_ADD, listenFd, &ev) != 0 { return errno }
        return 0
    }

    /// Any thread: make run() see the stop flag soon.
    func wake() {
        stopFlag.store(true, ordering: .releasing)
        poke()
    }

    /// Any thread: make run() see a graceful shutdown (DrainSignal) soon.
    func poke() { Self.poke(state) }

    static func poke(_ state: LoopPtr) {
        let fd = state.pointee.wakeFd
        if fd >= 0 {
            var one: UInt64 = 1
            _ = write(fd, &one, 8)
        }
    }

    /// The thread body: serve until stopped, then close everything.
    func run() {
        let loop = state
        let events = loop.pointee.events
        let epfd = loop.pointee.epfd
        let executor = self.executor
        executor?.bind()
        while !stopFlag.load(ordering: .acquiring) {
            let n = epoll_wait(epfd, events, Tuning.maxEvents, loop.waitMilliseconds())
            if n < 0 {
                if errno == EINTR { continue }
                let text = String(cString: strerror(errno))
                var line = Array("peregrine: epoll_wait: \(text)\n".utf8)
                _ = line.withUnsafeMutableBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
                break
            }
            loop.refreshClocks()
            var i = 0
            while i < Int(n) {
                let ev = events[i]
                i &+= 1
                let tag = ev.data.u64
                if tag > Tag.listener {
                    ConnPtr(bitPattern: UInt(tag)).unsafelyUnwrapped.handleEvent(LoopPtr.events(ev.events))
                } else if tag == Tag.listener {
                    loop.acceptReady()
                } else {
                    var v: UInt64 = 0
                    // EAGAIN: already drained (spurious). The mailbox is drained
                    // and stop checked regardless: the result changes nothing.
                    _ = read(loop.pointee.wakeFd, &v, 8)
                    loop.drainMailbox()   // answers posted from other threads
                }
            }
            loop.endBatch()
            if let executor {
                // What the handlers' tasks answered goes out in this batch;
                // the work may resume body streams (the ready list), whose
                // bytes give it more: round until neither has any (bounded).
                var rounds = 0
                while true {
                    let work = executor.runJobs()
                    if work > 0 { loop.drainMailbox() }
                    if loop.pointee.ready != nil { loop.serveReadyList() } else if work == 0 { break }
                    rounds += 1
                    if rounds == 64 { poke(); break }
                }
            }
            let deadline = drain.deadline.load(ordering: .acquiring)
            if deadline != 0 {
                if !loop.pointee.draining || deadline < loop.pointee.drainDeadline { loop.beginDrain(deadline: deadline) }
                if loop.drain() { break } // the last connection is gone
            }
        }
        // Stopping: every connection is closed and recycled.
        while let c = loop.pointee.live { c.closeNow(CloseReason.shutdown) }
        if loop.pointee.ready != nil { loop.serveReadyList() }
        loop.freeDead()
        executor?.close()   // the tasks hear of the closes; what is left runs elsewhere
    }

    /// After the thread ended (or never ran): descriptors and memory.
    func destroy() {
        let s = state
        // A loop that never ran holds no connections (none are accepted before start).
        while let c = s.pointee.live { c.closeNow(CloseReason.shutdown) }
        s.freeDead()
        mailbox?.close()   // before the eventfd closes: late answers are dropped
        s.pointee.mailbox = nil
        for fd in [s.pointee.epfd, s.pointee.wakeFd, s.pointee.listenFd, s.pointee.reserveFd] where fd >= 0 { close(fd) }
        s.pointee.epfd = -1
        s.pointee.wakeFd = -1
        s.pointee.listenFd = -1
        s.pointee.reserveFd = -1
        while let c = s.pointee.freeConns {
            s.pointee.freeConns = c.pointee.readyNext
            c.deinitialize(count: 1)
            c.deallocate()
        }
        s.poolDrain()
        s.pointee.headers.deallocate()
        s.pointee.timers.deinitialize(count: TimerKind.count)
        s.pointee.timers.deallocate()
        s.pointee.events.deallocate()
        s.pointee.iov.deallocate()
        s.pointee.junk.deallocate()
        s.pointee.dateLine.deallocate()
        s.pointee.serverLine.deallocate()
        s.pointee.sendHead.deallocate()
        s.pointee.sendCT.deallocate()
        s.deinitialize(count: 1)
        s.deallocate()
    }
}
