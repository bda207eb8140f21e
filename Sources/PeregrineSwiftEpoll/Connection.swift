// Connection.swift: where bytes arrive and leave (the port of csrc/conn.c).
// A connection's receive buffer, its send queue (sendmsg with MSG_NOSIGNAL
// over a list of pooled blocks), the dispatch of parsed requests to the
// handler, backpressure, lingering close and closing.
//
// Connections are C-style records: a `ConnState` in memory this engine
// allocates itself, reached through `ConnPtr`. The record holds no
// references, so touching it costs no retain/release and no exclusivity
// check (class properties would pay swift_beginAccess on every access).
// Records are recycled through the loop's free list and freed only when
// the loop is destroyed, so a pointer stays dereferenceable for the
// current batch even after its connection closed (like prg_conn).

import CSystemEpoll
import Glibc
import PeregrineCore

typealias ConnPtr = UnsafeMutablePointer<ConnState>
typealias LoopPtr = UnsafeMutablePointer<LoopState>
typealias ChunkPtr = UnsafeMutablePointer<OutChunk>

/// The C core's tuning constants (csrc/internal.h), same values.
enum Tuning {
    /// Every hot-path buffer is one pooled block of this size: a receive
    /// buffer while a request is in flight, each link of a send queue.
    static let blockSize = 16384
    /// Blocks kept in a loop's free list; beyond, they go back to malloc.
    static let poolMaxFree = 4096
    /// recv calls per wakeup while each fills the buffer (a bulk body) before
    /// yielding to the others (PRG_READS_PER_WAKEUP).
    static let readsPerWakeup = 4
    /// Lingering close after an error answer: at most this long and this much.
    static let lingerSeconds: UInt32 = 2
    static let lingerMaxBytes = 1 << 20
    /// Accepts per wakeup before the listener yields.
    static let acceptsPerWakeup = 64
    /// Raw mode: receive buffer limit when the application consumes nothing.
    static let rawMaxInput = 1 << 20
    /// epoll_wait batch.
    static let maxEvents: Int32 = 256
    /// iovecs per sendmsg.
    static let maxIov = 64
    /// File links (open descriptors) in one send queue before reading
    /// pauses (PRG_MAX_QUEUED_FILES): bytes alone do not bound them.
    static let maxQueuedFiles = 16
    /// Largest count one sendfile call takes (Linux caps it here anyway).
    static let sendfileMax = 0x7fff_f000
}

/// Connection flags (CONN_* in csrc/internal.h).
enum CF {
    static let closed: UInt32 = 1 << 0        // fd closed, freed at the end of the batch
    static let closeAfter: UInt32 = 1 << 1    // close once the send queue is empty
    static let readEOF: UInt32 = 1 << 2       // peer sent FIN: no more input
    static let paused: UInt32 = 1 << 3        // too much queued output: not reading or parsing
    static let onReadyList: UInt32 = 1 << 4   // edge mode: more to read, served next round
    static let continueSent: UInt32 = 1 << 5  // 100 Continue sent for the current request
    static let inCallback: UInt32 = 1 << 6    // a handler is running for it
    static let peerHUP: UInt32 = 1 << 7       // RDHUP/HUP seen: read until EOF
    static let linger: UInt32 = 1 << 8        // answered and half-closed: discarding input
    static let proxyPending: UInt32 = 1 << 10 // proxyProtocol: its PROXY header has not arrived yet
    // Streamed request bodies (BodyStreaming.swift).
    static let headSeen: UInt32 = 1 << 11     // the head handler ran for the request being parsed
    static let inHead: UInt32 = 1 << 12       // the head handler is running: a stream may begin
    static let streaming: UInt32 = 1 << 13    // the body goes to a BodyConsumer; its end is owed
    static let bodyHeld: UInt32 = 1 << 14     // the consumer paused, or took less: not reading
    static let bodySkipped: UInt32 = 1 << 15  // answered from the head, body never read: linger on close
    static let watched: UInt32 = 1 << 16      // registered with epoll (after the first read, see readOnAccept)
}

/// Why a connection closed (prg_close_reason).
enum CloseReason {
    static let normal: UInt8 = 0
    static let error: UInt8 = 1
    static let badRequest: UInt8 = 2
    static let app: UInt8 = 3
    static let shutdown: UInt8 = 4
}

/// Readiness as the loop reports it (PRG_EV_*).
enum Ev {
    static let read: UInt32 = 1 << 0
    static let write: UInt32 = 1 << 1
    static let hup: UInt32 = 1 << 2
    static let error: UInt32 = 1 << 3
    static let urgent: UInt32 = 1 << 4
}

/// epoll bits, as plain UInt32.
enum EP {
    static let input = EPOLLIN.rawValue
    static let pri = EPOLLPRI.rawValue
    static let output = EPOLLOUT.rawValue
    static let err = EPOLLERR.rawValue
    static let hup = EPOLLHUP.rawValue
    static let rdhup = EPOLLRDHUP.rawValue
    static let et = EPOLLET.rawValue
}

/// Send-queue link header, at the start of its block; data follows it.
///
/// A file link (`isFile`) holds no bytes: its data is a `FileRange`, a
/// range of an open file sent with sendfile(2) in its place in the queue,
/// between the bytes queued before and after it. Its cap and end are 0, so
/// nothing is appended into it. The link owns the descriptor: releasing it
/// (sent, dropped with its connection or with an answer never written)
/// closes it (as `prg_chunk` in csrc/internal.h).
struct OutChunk {
    var next: ChunkPtr?
    var start: UInt32   // first unsent byte
    var end: UInt32     // end of data
    var cap: UInt32     // bytes of data
    var pooled: UInt16  // 1 = back to the pool, 0 = free()
    var isFile: UInt16  // 1 = data is a FileRange
}

/// The data of a file link (prg_file_range).
struct FileRange {
    var fd: Int32       // owned by the link
    var offset: Int64   // next byte of the file to send
    var left: Int64     // bytes still to send (> 0 while queued)
}

enum ChunkLayout {
    static let header = MemoryLayout<OutChunk>.stride
    static let pooledCap = Tuning.blockSize - MemoryLayout<OutChunk>.stride
}

extension UnsafeMutablePointer where Pointee == OutChunk {
    @inline(__always) var data: UnsafeMutableRawPointer { UnsafeMutableRawPointer(self) + ChunkLayout.header }
    /// A file link's range (only when `isFile`).
    @inline(__always) var fileRange: UnsafeMutablePointer<FileRange> { data.assumingMemoryBound(to: FileRange.self) }
}

/// One connection (prg_conn). Trivial: no references, copied and
/// initialised as plain memory. Every idle connection holds one (and no
/// buffer), so its stride is the engine's memory per idle connection:
/// fields are ordered so that no padding is left (Swift packs a field into
/// the tail of the one before it), narrow ones are stored narrow behind
/// computed properties, and what only a busy connection uses is in `busy`.
/// 232 bytes is one 240-byte malloc chunk, as the C engine's prg_conn
/// (ConnLayoutTests pins it).
struct ConnState {
    var fd: Int32 = -1
    var flags: UInt32 = 0
    var loop: LoopPtr
    var id: UInt64 = 0
    var prev: ConnPtr? = nil           // the loop's list of live connections
    var next: ConnPtr? = nil
    var readyNext: ConnPtr? = nil      // edge ready list, the dead list, the free list

    // Receive buffer: [0, inLen) holds bytes; the current request starts at 0
    // (32-bit, as in C: the buffer limits keep it so).
    var inBuf: UnsafeMutableRawPointer? = nil
    var inLen32: UInt32 = 0
    var inCap32: UInt32 = 0
    @inline(__always) var inLen: Int {
        get { Int(inLen32) }
        set { inLen32 = UInt32(truncatingIfNeeded: newValue) }
    }
    @inline(__always) var inCap: Int {
        get { Int(inCap32) }
        set { inCap32 = UInt32(truncatingIfNeeded: newValue) }
    }

    // Send queue. outBytes counts what is still to send, file ranges
    // included (a queued file pauses reading like queued bytes do).
    var outHead: ChunkPtr? = nil
    var outTail: ChunkPtr? = nil
    var outBytes = 0

    var registered: UInt32 = 0         // epoll events registered (level mode)
    var closeReason: UInt8 = CloseReason.normal
    var reqMinor: UInt8 = 1            // HTTP minor version of the request being answered
    var respState: UInt8 = RespState.none
    var respFlags: UInt8 = 0
    var deadline: UInt32 = 0           // timeouts: see timerList
    var lingered32: UInt32 = 0         // bytes discarded while lingering (< lingerMaxBytes)
    var respLengthLeft: Int64 = 0      // declared Content-Length minus body written

    // Timeouts: on at most one of the loop's FIFO lists.
    var timerPrev: ConnPtr? = nil
    var timerNext: ConnPtr? = nil

    /// The client: accept's peer, or the PROXY header's source.
    var remote: SocketAddress? = nil
    @inline(__always) var respStatus: Int32 {
        get { Int32(respStatus16) }
        set { respStatus16 = UInt16(truncatingIfNeeded: newValue) }
    }
    @inline(__always) var lingered: Int {
        get { Int(lingered32) }
        set { lingered32 = UInt32(truncatingIfNeeded: newValue) }
    }

    var reqKeepAlive = false
    var timerList8: UInt8 = 0
    var respStatus16: UInt16 = 0       // three digits: the writer checked it
    @inline(__always) var timerList: Int {
        get { Int(timerList8) }
        set { timerList8 = UInt8(truncatingIfNeeded: newValue) }
    }

    /// A streamed body, answers owed: allocated on first use, freed once
    /// nothing in it is in use (idle again) and with the connection.
    var busy: UnsafeMutablePointer<ConnBusy>? = nil

    /// Streaming a body: inBuf[0..<bodyPending] is decoded body the consumer
    /// has not taken, the rest raw input; bodyStream is the retained consumer.
    @inline(__always) var bodyStream: UnsafeMutableRawPointer? {
        get { busy?.pointee.bodyStream }
        set {
            if newValue == nil && busy == nil { return }
            busyRecord().pointee.bodyStream = newValue
            busyTrim()
        }
    }
    @inline(__always) var bodyPending: Int {
        get { busy?.pointee.bodyPending ?? 0 }
        set {
            if newValue == 0 && busy == nil { return }
            busyRecord().pointee.bodyPending = newValue
            busyTrim()
        }
    }
    // Answers still owed, in request order (Offload.swift); each holds a
    // reference. Empty (no record) on the hot path.
    @inline(__always) var deferHead: Unmanaged<DeferredAnswer>? {
        get { busy?.pointee.deferHead }
        set {
            if newValue == nil && busy == nil { return }
            busyRecord().pointee.deferHead = newValue
            busyTrim()
        }
    }
    @inline(__always) var deferTail: Unmanaged<DeferredAnswer>? {
        get { busy?.pointee.deferTail }
        set {
            if newValue == nil && busy == nil { return }
            busyRecord().pointee.deferTail = newValue
            busyTrim()
        }
    }
    @inline(__always) var deferCount: Int {
        get { busy?.pointee.deferCount ?? 0 }
        set {
            if newValue == 0 && busy == nil { return }
            busyRecord().pointee.deferCount = newValue
            busyTrim()
        }
    }

    init(loop: LoopPtr) { self.loop = loop }

    private mutating func busyRecord() -> UnsafeMutablePointer<ConnBusy> {
        if let b = busy { return b }
        let b = UnsafeMutablePointer<ConnBusy>.allocate(capacity: 1)
        b.initialize(to: ConnBusy())
        busy = b
        return b
    }

    /// Frees the record once every field is back at rest.
    private mutating func busyTrim() {
        guard let b = busy, b.pointee.isEmpty else { return }
        busy = nil
        b.deallocate()
    }

    /// With the connection: what the record held has let go of it by now.
    mutating func busyFree() {
        busy?.deallocate()
        busy = nil
    }

    /// The parser of the request in progress when it spans reads, or
    /// callbacks that may resume it (the head handler, a streamed body);
    /// nil otherwise: a request that arrives whole is parsed on the stack
    /// (processHTTP), so neither an idle connection nor the usual request
    /// carries one.
    @inline(__always) var savedParser: UnsafeMutablePointer<HTTP1Parser>? {
        guard let b = busy, b.pointee.parserSaved else { return nil }
        return b.pointer(to: \ConnBusy.parser)
    }

    /// Saves `p` as the request's parser (see savedParser) and returns the
    /// saved one. (Swift's allocation does not fail: where C answers 503
    /// for want of the record, this one has it.)
    mutating func parserSave(_ p: UnsafeMutablePointer<HTTP1Parser>) -> UnsafeMutablePointer<HTTP1Parser> {
        if let saved = savedParser { return saved } // p is it
        let b = busyRecord()
        b.pointee.parser = p.pointee
        b.pointee.parserSaved = true
        return b.pointer(to: \ConnBusy.parser).unsafelyUnwrapped
    }

    /// The saved parser's request ended: the next starts on the stack.
    mutating func parserForget() {
        guard let b = busy, b.pointee.parserSaved else { return }
        b.pointee.parserSaved = false
        busyTrim()
    }
}

/// A connection's busy-only state (prg_conn_busy in C). Trivial.
struct ConnBusy {
    var bodyStream: UnsafeMutableRawPointer? = nil
    var bodyPending = 0
    var deferHead: Unmanaged<DeferredAnswer>? = nil
    var deferTail: Unmanaged<DeferredAnswer>? = nil
    var deferCount = 0
    /// `parser` holds the request in progress (ConnState.savedParser).
    var parserSaved = false
    var parser = HTTP1Parser()

    var isEmpty: Bool {
        bodyStream == nil && bodyPending == 0 && deferHead == nil && deferTail == nil && deferCount == 0 && !parserSaved
    }
}

// MARK: - Receive buffer

extension UnsafeMutablePointer where Pointee == ConnState {
    @inline(__always)
    func inRelease() {
        guard let b = pointee.inBuf else { return }
        if pointee.inCap == Tuning.blockSize { pointee.loop.poolPut(b) } else { free(b) }
        pointee.inBuf = nil
        pointee.inLen = 0
        pointee.inCap = 0
    }

    /// Room for at least `want` more bytes; false when the buffer may not
    /// grow (limit) or memory ran out.
    func inReserve(_ want: Int, _ limit: Int) -> Bool {
        if pointee.inBuf == nil {
            guard let b = pointee.loop.poolGet() else { return false }
            pointee.inBuf = b
            pointee.inCap = Tuning.blockSize
            pointee.inLen = 0
        }
        if pointee.inCap - pointee.inLen >= want { return true }
        let need = pointee.inLen + want
        if need > limit { return false }
        var cap = pointee.inCap
        while cap < need { cap *= 2 }
        if cap > limit { cap = limit }
        guard let bigger = malloc(cap) else { return false }
        let old = pointee.inBuf.unsafelyUnwrapped
        memcpy(bigger, old, pointee.inLen)
        if pointee.inCap == Tuning.blockSize { pointee.loop.poolPut(old) } else { free(old) }
        pointee.inBuf = bigger
        pointee.inCap = cap
        return true
    }

    /// Largest receive buffer this connection may need (in_limit): a head,
    /// a decoded body, a chunk-size line, trailers, one read of slack.
    @inline(__always)
    var inLimit: Int {
        // A streamed body never grows the buffer: what the consumer has not
        // taken stops the reading instead.
        if pointee.flags & CF.streaming != 0 { return max(pointee.inCap, Tuning.blockSize) }
        return pointee.loop.pointee.inLimit
    }

    /// Drops `n` consumed bytes from the front of the receive buffer.
    @inline(__always)
    func inConsume(_ n: Int) {
        if n >= pointee.inLen {
            inRelease()
            return
        }
        let b = pointee.inBuf.unsafelyUnwrapped
        memmove(b, b + n, pointee.inLen - n)
        pointee.inLen -= n
    }
}

// MARK: - Send queue

extension UnsafeMutablePointer where Pointee == ConnState {
    func chunkNew(_ minCap: Int) -> ChunkPtr? {
        let k: ChunkPtr
        if minCap <= ChunkLayout.pooledCap {
            guard let b = pointee.loop.poolGet() else { return nil }
            k = b.bindMemory(to: OutChunk.self, capacity: 1)
            k.initialize(to: OutChunk(next: nil, start: 0, end: 0, cap: UInt32(ChunkLayout.pooledCap), pooled: 1, isFile: 0))
        } else {
            if minCap > Int(UInt32.max) - ChunkLayout.header { return nil }
            guard let b = malloc(ChunkLayout.header + minCap) else { return nil }
            k = b.bindMemory(to: OutChunk.self, capacity: 1)
            k.initialize(to: OutChunk(next: nil, start: 0, end: 0, cap: UInt32(minCap), pooled: 0, isFile: 0))
        }
        if let t = pointee.outTail { t.pointee.next = k } else { pointee.outHead = k }
        pointee.outTail = k
        return k
    }

    /// The one place a link is let go: a file link closes its descriptor.
    @inline(__always)
    func chunkRelease(_ k: ChunkPtr) {
        if k.pointee.isFile != 0 { _ = close(k.fileRange.pointee.fd) } // nothing to retry on error
        if k.pointee.pooled != 0 { pointee.loop.poolPut(UnsafeMutableRawPointer(k)) } else { free(k) }
    }

    /// Queues `length` bytes of `fd` from `offset` (prg_out_append_file).
    /// The queue takes `fd` in every case: false (fd closed) for a bad
    /// range or no memory.
    func outAppendFile(_ fd: Int32, _ offset: Int64, _ length: Int64) -> Bool {
        if fd < 0 || offset < 0 || length <= 0 || UInt64(length) > UInt64(Int.max - pointee.outBytes) {
            if fd >= 0 { _ = close(fd) }
            return false
        }
        guard let b = malloc(ChunkLayout.header + MemoryLayout<FileRange>.stride) else {
            _ = close(fd)
            return false
        }
        let k = b.bindMemory(to: OutChunk.self, capacity: 1)
        // No room: later bytes get a link of their own.
        k.initialize(to: OutChunk(next: nil, start: 0, end: 0, cap: 0, pooled: 0, isFile: 1))
        (b + ChunkLayout.header).bindMemory(to: FileRange.self, capacity: 1)
            .initialize(to: FileRange(fd: fd, offset: offset, left: length))
        if let t = pointee.outTail { t.pointee.next = k } else { pointee.outHead = k }
        pointee.outTail = k
        pointee.outBytes += Int(length)
        return true
    }

    func outReleaseAll() {
        var k = pointee.outHead
        while let kk = k {
            k = kk.pointee.next
            chunkRelease(kk)
        }
        pointee.outHead = nil
        pointee.outTail = nil
        pointee.outBytes = 0
    }

    /// Contiguous room for `n` bytes at the end of the queue, or nil.
    @inline(__always)
    func outReserve(_ n: Int) -> UnsafeMutableRawPointer? {
        if let t = pointee.outTail, Int(t.pointee.cap &- t.pointee.end) >= n {
            return t.data + Int(t.pointee.end)
        }
        return chunkNew(n)?.data
    }

    @inline(__always)
    func outCommit(_ n: Int) {
        let t = pointee.outTail.unsafelyUnwrapped
        t.pointee.end &+= UInt32(truncatingIfNeeded: n)
        pointee.outBytes &+= n
    }

    /// Appends bytes (copied); false when memory ran out.
    func outAppend(_ src: UnsafeRawPointer?, _ count: Int) -> Bool {
        var n = count
        guard var p = src else { return n == 0 }
        while n > 0 {
            var t: ChunkPtr
            if let tail = pointee.outTail, tail.pointee.end != tail.pointee.cap {
                t = tail
            } else {
                guard let fresh = chunkNew(1) else { return false }
                t = fresh
            }
            let room = Int(t.pointee.cap - t.pointee.end)
            let take = n < room ? n : room
            memcpy(t.data + Int(t.pointee.end), p, take)
            t.pointee.end += UInt32(take)
            pointee.outBytes += take
            p += take
            n -= take
        }
        return true
    }

    @inline(__always)
    func setCork(_ on: Int32) {
        var v = on
        _ = setsockopt(pointee.fd, Int32(IPPROTO_TCP), TCP_CORK, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Sends from the file link at the head of the queue: 0 = progress,
    /// 1 = would block, -1 = closed (socket error, or the file ended before
    /// the promised length, so the answer can never be whole).
    func flushFile(_ k: ChunkPtr, _ guardian: inout SigpipeGuard) -> Int {
        let f = k.fileRange
        if !guardian.block() {
            closeNow(CloseReason.error)
            return -1
        }
        let want = f.pointee.left > Int64(Tuning.sendfileMax) ? Tuning.sendfileMax : Int(f.pointee.left)
        var off = off_t(f.pointee.offset)
        let sent = sendfile(pointee.fd, f.pointee.fd, &off, want)
        if sent < 0 {
            let e = errno
            if e == EINTR { return 0 }
            if e == EAGAIN || e == EWOULDBLOCK { return 1 }
            if e == EPIPE { guardian.takePending() }
            closeNow(CloseReason.error) // the peer is gone, or the file failed to read
            return -1
        }
        if sent == 0 {
            // End of file before the promised length (truncated meanwhile).
            closeNow(CloseReason.error)
            return -1
        }
        f.pointee.offset += Int64(sent)
        f.pointee.left -= Int64(sent)
        pointee.outBytes -= sent
        if f.pointee.left == 0 {
            pointee.outHead = k.pointee.next
            if pointee.outHead == nil { pointee.outTail = nil }
            chunkRelease(k)
        }
        return 0
    }

    /// Sends what is queued: 0 = all sent, 1 = would block, -1 = closed.
    /// Byte links go out with sendmsg, file links with sendfile, in order.
    func flush() -> Int {
        if pointee.flags & CF.closed != 0 { return -1 }
        if pointee.outBytes == 0 { return 0 }
        let loop = pointee.loop
        let cork = loop.pointee.cork
        if cork { setCork(1) }
        let iov = loop.pointee.iov
        var result = 0
        var guardian = SigpipeGuard()
        defer { guardian.restore() }
        while pointee.outBytes > 0 {
            // Empty byte links at the front (a reservation never committed).
            var head = pointee.outHead
            while let h = head, h.pointee.isFile == 0, h.pointee.end == h.pointee.start {
                pointee.outHead = h.pointee.next
                if pointee.outHead == nil { pointee.outTail = nil }
                chunkRelease(h)
                head = pointee.outHead
            }
            guard let first = head else { break }
            if first.pointee.isFile != 0 {
                let r = flushFile(first, &guardian)
                if r < 0 { return -1 }
                if r > 0 {
                    result = 1
                    break
                }
                continue
            }
            // The byte links up to the next file link, in one sendmsg.
            var n = 0
            var fileNext = false
            var k: ChunkPtr? = first
            while let kk = k, n < Tuning.maxIov {
                if kk.pointee.isFile != 0 {
                    fileNext = true
                    break
                }
                let s = kk.pointee.start, e = kk.pointee.end
                if e != s {
                    iov[n] = iovec(iov_base: kk.data + Int(s), iov_len: Int(e &- s))
                    n += 1
                }
                k = kk.pointee.next
            }
            var msg = msghdr()
            msg.msg_iov = iov
            msg.msg_iovlen = n
            // MSG_MORE before a file range: the head and the file's first
            // bytes share a segment instead of the head leaving alone.
            let sent = sendmsg(pointee.fd, &msg, Int32(MSG_NOSIGNAL) | (fileNext ? Int32(MSG_MORE) : 0))
            if sent < 0 {
                let e = errno
                if e == EINTR { continue }
                if e == EAGAIN || e == EWOULDBLOCK {
                    result = 1
                    break
                }
                closeNow(CloseReason.error) // EPIPE, ECONNRESET: the peer is gone
                return -1
            }
            var left = sent
            pointee.outBytes -= left
            while left > 0, let kk = pointee.outHead {
                let avail = Int(kk.pointee.end &- kk.pointee.start)
                if left < avail {
                    kk.pointee.start &+= UInt32(truncatingIfNeeded: left)
                    break
                }
                left -= avail
                pointee.outHead = kk.pointee.next
                if pointee.outHead == nil { pointee.outTail = nil }
                chunkRelease(kk)
            }
        }
        if cork { setCork(0) }
        // Keep no empty links around: an idle connection holds no block.
        if pointee.outBytes == 0 { outReleaseAll() }
        return result
    }
}

/// sendfile(2) has no MSG_NOSIGNAL: writing to a peer that reset raises
/// SIGPIPE, whose default action ends the process. While a flush sends file
/// ranges its thread blocks SIGPIPE, takes back a SIGPIPE the send raised,
/// and restores the mask when the flush ends (as conn.c's sigpipe_guard).
/// The process's signal dispositions are left alone.
struct SigpipeGuard {
    var old = sigset_t()
    var blocked = false   // the mask was changed: restore it
    var owned = false     // SIGPIPE was not blocked before: a pending one is ours

    /// false when the mask could not be changed (then no sendfile may run).
    mutating func block() -> Bool {
        if blocked { return true }
        var pipeOnly = sigset_t()
        if sigemptyset(&pipeOnly) != 0 || sigaddset(&pipeOnly, SIGPIPE) != 0 { return false }
        if pthread_sigmask(SIG_BLOCK, &pipeOnly, &old) != 0 { return false }
        blocked = true
        owned = sigismember(&old, SIGPIPE) == 0
        return true
    }

    /// After EPIPE: the SIGPIPE it raised is pending on this thread; take it.
    func takePending() {
        if !owned { return } // the application blocks SIGPIPE itself: its own to handle
        var pipeOnly = sigset_t()
        if sigemptyset(&pipeOnly) != 0 || sigaddset(&pipeOnly, SIGPIPE) != 0 { return }
        var zero = timespec(tv_sec: 0, tv_nsec: 0)
        while sigtimedwait(&pipeOnly, nil, &zero) == SIGPIPE {}
    }

    mutating func restore() {
        if blocked { _ = pthread_sigmask(SIG_SETMASK, &old, nil) } // fails only for a bad `how`
        blocked = false
    }
}

// MARK: - Lifecycle

extension UnsafeMutablePointer where Pointee == ConnState {
    /// Closes the socket at once; the record stays valid until the end of
    /// the loop's batch (events for it may still be in the array being
    /// processed, and a handler may be on the stack).
    func closeNow(_ reason: UInt8) {
        if pointee.flags & CF.closed != 0 { return }
        pointee.flags |= CF.closed
        pointee.closeReason = reason
        timerRemove()
        let loop = pointee.loop
        close(pointee.fd)
        pointee.fd = -1
        loop.pointee.app._withUnsafeGuaranteedRef { $0.metrics }?.connectionClosed()
        if let p = pointee.prev { p.pointee.next = pointee.next } else { loop.pointee.live = pointee.next }
        if let n = pointee.next { n.pointee.prev = pointee.prev }
        pointee.prev = nil
        pointee.next = nil
        if pointee.deferHead != nil { offloadClosed() }   // late answers become no-ops
        if pointee.flags & CF.streaming != 0 {
            // The body will never end: the consumer learns why.
            // (A client's FIN was reported when it was read: here it is an
            // error or reset, or the server's own decision.)
            bodyEndNotify(reason == CloseReason.error ? .clientGone : .closed)
        }
        // The ready list may hold it: it is skipped there (closed) and goes
        // on the dead list when that list is rebuilt.
        if pointee.flags & CF.onReadyList == 0 {
            pointee.readyNext = loop.pointee.dead
            loop.pointee.dead = self
        }
    }

    /// After the batch: buffers back to the pool, record to the free list.
    func release() {
        let loop = pointee.loop
        inRelease()
        outReleaseAll()
        pointee.busyFree()
        pointee.readyNext = loop.pointee.freeConns
        loop.pointee.freeConns = self
    }

    /// EPOLLPRI: read and drop out-of-band data so level mode does not repeat it.
    func discardUrgent() {
        var junk: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        while withUnsafeMutableBytes(of: &junk, { recv(pointee.fd, $0.baseAddress, $0.count, Int32(MSG_OOB) | Int32(MSG_DONTWAIT)) }) > 0 {}
    }

    @inline(__always)
    var overOutputLimit: Bool { pointee.outBytes > pointee.loop.pointee.maxOutput }

    /// The send queue holds `Tuning.maxQueuedFiles` file links (a walk of a
    /// queue the client has not taken; a byte link holds up to 16 KiB of
    /// answers, so it stops early).
    var tooManyFiles: Bool {
        if pointee.outBytes == 0 { return false }
        var files = 0
        var k = pointee.outHead
        while let kk = k {
            if kk.pointee.isFile != 0 {
                files += 1
                if files >= Tuning.maxQueuedFiles { return true }
            }
            k = kk.pointee.next
        }
        return false
    }

    /// Puts it on the loop's ready list (edge input left, writes from elsewhere).
    @inline(__always)
    func markReady() {
        if pointee.flags & (CF.onReadyList | CF.closed) != 0 { return }
        pointee.flags |= CF.onReadyList
        let loop = pointee.loop
        pointee.readyNext = loop.pointee.ready
        loop.pointee.ready = self
    }

    @inline(__always)
    func updateInterest() {
        if pointee.flags & CF.closed != 0 { return }
        if pointee.flags & CF.watched == 0 && !watch() { return }
        if !pointee.loop.pointee.edge { updateLevelInterest() }
    }

    /// Registers the connection with epoll (edge: everything, once; level:
    /// input, then updateLevelInterest adds output when pending). False when
    /// that failed: the connection is closed.
    func watch() -> Bool {
        let loop = pointee.loop
        pointee.registered = loop.pointee.edge ? (EP.input | EP.output | EP.rdhup | EP.pri | EP.et)
            : (EP.input | EP.rdhup | EP.pri)
        var ev = epoll_event(events: pointee.registered, data: epoll_data_t(ptr: UnsafeMutableRawPointer(self)))
        if epoll_ctl(loop.pointee.epfd, EPOLL_CTL_ADD, pointee.fd, &ev) != 0 {
            closeNow(CloseReason.error)
            return false
        }
        pointee.flags |= CF.watched
        return true
    }

    /// Level mode: EPOLLIN while it may read, EPOLLOUT only while output is
    /// pending; one epoll_ctl when that changes, none in steady state.
    func updateLevelInterest() {
        var want = EP.pri
        if pointee.flags & CF.linger != 0 || pointee.flags & (CF.paused | CF.readEOF | CF.closeAfter | CF.bodyHeld) == 0 {
            want |= EP.input | EP.rdhup
        }
        if pointee.outBytes != 0 { want |= EP.output }
        if want == pointee.registered { return }
        var ev = epoll_event(events: want, data: epoll_data_t(ptr: UnsafeMutableRawPointer(self)))
        if epoll_ctl(pointee.loop.pointee.epfd, EPOLL_CTL_MOD, pointee.fd, &ev) != 0 {
            closeNow(CloseReason.error)
            return
        }
        pointee.registered = want
    }
}

// MARK: - Dispatch

extension UnsafeMutablePointer where Pointee == ConnState {
    /// Parses and answers every complete request in the buffer (HTTP mode).
    /// A request that arrives whole (the usual case) is parsed here, on the
    /// stack: the connection carries a parser only while one spans reads.
    func processHTTP() {
        // Uninitialized: initialized just before each request is parsed (one
        // initialization per request). HTTP1Parser is trivial: nothing to
        // deinitialize.
        withUnsafeTemporaryAllocation(of: HTTP1Parser.self, capacity: 1) { processHTTP(local: $0.baseAddress.unsafelyUnwrapped) }
    }

    private func processHTTP(local: UnsafeMutablePointer<HTTP1Parser>) {
        let loop = pointee.loop
        var used = 0
        // nil: the next request starts afresh on the stack.
        var p = pointee.savedParser
        while pointee.flags & (CF.closed | CF.closeAfter) == 0 {
            if pointee.flags & CF.streaming != 0 { // used is 0: streamBegin dropped what came before
                if overOutputLimit || offloadFull || tooManyFiles {
                    pointee.flags |= CF.paused
                    break
                }
                if streamBody() <= 0 { break }
                p = nil // the body ended: the next request starts afresh
                continue
            }
            if used >= pointee.inLen { break }
            if overOutputLimit || offloadFull || tooManyFiles {
                pointee.flags |= CF.paused // resumed when the queue drains (or answers owed are written)
                break
            }
            let base = pointee.inBuf.unsafelyUnwrapped + used
            var avail = pointee.inLen - used
            var limits = loop.pointee.limits
            let deciding = loop.pointee.streamHeads && pointee.flags & CF.headSeen == 0
            if deciding {
                // Until the head handler chose: the head alone, under the larger body limit.
                limits = loop.pointee.headLimits
                avail = headExtent(UnsafeRawPointer(base), avail)
            }
            var req = ParsedRequest()
            let parser: UnsafeMutablePointer<HTTP1Parser>
            if let p { parser = p } else {
                local.initialize(to: HTTP1Parser())
                parser = local
            }
            let r = parser.pointee.parse(UnsafeMutableRawBufferPointer(start: base, count: avail),
                                         limits: limits, headers: loop.pointee.headers, into: &req)
            if deciding && r == 0 && parser.pointee.headComplete {
                // The head is complete and a body follows: the head handler
                // may stream it, and the stream goes on after this call.
                let saved = pointee.parserSave(parser)
                p = saved
                switch headDecide(used, saved) {
                case .stream: used = 0
                case .answered: used = pointee.inLen // the body and anything after it are not read
                case .buffer: break                  // parse on, body included, under the buffered limit
                }
                continue
            }
            if r == 0 {
                // The rest comes in later reads.
                let saved = pointee.parserSave(parser)
                pointee.inLen -= saved.pointee.compact(UnsafeMutableRawBufferPointer(start: base, count: avail))
                // Not while answers are owed: it would be taken for theirs.
                if saved.pointee.headComplete && saved.pointee.expectContinue
                    && pointee.flags & CF.continueSent == 0 && pointee.deferHead == nil {
                    _ = sendContinue()
                    pointee.flags |= CF.continueSent
                }
                break
            }
            if r < 0 {
                sendErrorOrdered(Int32(truncatingIfNeeded: -r))
                pointee.closeReason = CloseReason.badRequest
                pointee.flags |= CF.closeAfter
                used = pointee.inLen // nothing after a malformed request can be trusted
                break
            }
            used += r
            pointee.flags &= ~CF.headSeen
            // A draining server answers the request in flight and closes.
            if loop.pointee.draining { req.flags.remove(.keepAlive) }
            if parser != local { pointee.parserForget() } // it spanned reads: the next starts on the stack
            p = nil
            // The next request's head gets its own deadline. An idle timer
            // stays: finishIO keeps it (moved only when the second changed).
            if pointee.timerList == TimerKind.head { timerRemove() }
            pointee.flags &= ~CF.continueSent
            responseReset(req)
            // Earlier answers still owed (Offload.swift): this one waits behind them.
            let hold = pointee.deferHead != nil
            let saved = hold ? holdBegin() : SavedOutput(head: nil, tail: nil, bytes: 0)
            pointee.flags |= CF.inCallback
            let response = Response(sink: OpaquePointer(self), functions: loop.pointee.responseFunctions)
            let request = req.request(remoteAddress: pointee.remote)
            loop.pointee.app._withUnsafeGuaranteedRef { $0.http(request, response) }
            pointee.flags &= ~CF.inCallback
            _ = finishDefault()
            if !pointee.reqKeepAlive { pointee.flags |= CF.closeAfter }
            if hold { holdEnd(saved) }
        }
        inConsume(used)
    }

    /// An error answer: queued behind answers still owed, if any.
    func sendErrorOrdered(_ status: Int32) {
        pointee.loop.pointee.app._withUnsafeGuaranteedRef { $0.metrics }?.parseError(status: Int(status))
        if pointee.deferHead == nil {
            _ = sendError(status)
            return
        }
        let saved = holdBegin()
        _ = sendError(status)
        holdEnd(saved)
    }

    /// Hands the buffered bytes to the application (raw mode).
    func processRaw() {
        if pointee.inLen == 0 || pointee.flags & (CF.closed | CF.closeAfter) != 0 { return }
        if overOutputLimit {
            pointee.flags |= CF.paused
            return
        }
        let loop = pointee.loop
        pointee.flags |= CF.inCallback
        let connection = Connection(handle: OpaquePointer(self), functions: loop.pointee.connectionFunctions)
        let bytes = UnsafeRawBufferPointer(start: pointee.inBuf, count: pointee.inLen)
        var used = loop.pointee.app._withUnsafeGuaranteedRef { $0.data(connection, bytes) }
        pointee.flags &= ~CF.inCallback
        // The C core takes the count as size_t: a negative one consumes everything.
        if used < 0 || used > pointee.inLen { used = pointee.inLen }
        inConsume(used)
        if overOutputLimit { pointee.flags |= CF.paused }
    }

    @inline(__always)
    func processInput() {
        if pointee.loop.pointee.raw { processRaw() } else { processHTTP() }
    }

    /// proxyProtocol: the PROXY header comes before anything else
    /// (ProxyProtocol.swift). True once it is consumed; false while it is
    /// incomplete (the header timer runs) or after a malformed one closed
    /// the connection, unanswered.
    func takeProxyHeader() -> Bool {
        let (used, source) = ProxyHeader.parse(UnsafeRawBufferPointer(start: pointee.inBuf, count: pointee.inLen))
        if used == 0 { return false }
        if used < 0 {
            closeNow(CloseReason.badRequest)
            return false
        }
        pointee.flags &= ~CF.proxyPending
        if let source { pointee.remote = source }
        inConsume(used)
        return true
    }

    /// One recv into the receive buffer: bytes read (and the room offered),
    /// 0 at EOF, -1 when it would block or reading must stop, -2 when the
    /// connection was closed.
    @inline(__always)
    func readOnce(_ offered: inout Int) -> Int {
        let limit = inLimit
        var want = Tuning.blockSize / 2
        if pointee.inBuf != nil && pointee.inCap - pointee.inLen >= 512 { want = pointee.inCap - pointee.inLen }
        if !inReserve(want, limit) && !inReserve(1, limit) {
            // At the limit, and the parser (or the raw application) made no
            // progress: give up on this client.
            if !pointee.loop.pointee.raw {
                sendErrorOrdered(pointee.savedParser?.pointee.headComplete == true ? 413 : 431)
                pointee.flags |= CF.closeAfter
                pointee.closeReason = CloseReason.badRequest
                return -1
            }
            closeNow(CloseReason.error)
            return -2
        }
        offered = pointee.inCap - pointee.inLen
        while true {
            let n = recv(pointee.fd, pointee.inBuf.unsafelyUnwrapped + pointee.inLen, offered, 0)
            if n > 0 {
                pointee.inLen += n
                return n
            }
            if n == 0 {
                if pointee.inLen == 0 { inRelease() }
                return 0
            }
            let e = errno
            if e == EINTR { continue }
            if pointee.inLen == 0 { inRelease() }
            if e == EAGAIN || e == EWOULDBLOCK { return -1 }
            closeNow(CloseReason.error)
            return -2
        }
    }

    /// Lingering: read and drop until EOF, an error, or the byte cap.
    func lingerRead() {
        let loop = pointee.loop
        let junk = loop.pointee.junk
        var i = 0
        while i < 16 {
            i += 1
            let n = recv(pointee.fd, junk, 4096, 0)
            if n > 0 {
                pointee.lingered += n
                if pointee.lingered < Tuning.lingerMaxBytes { continue }
            } else if n < 0 {
                let e = errno
                if e == EINTR { continue }
                if e == EAGAIN || e == EWOULDBLOCK { return }
            }
            closeNow(pointee.closeReason) // EOF, error or cap: done
            return
        }
        if loop.pointee.edge { markReady() }
    }

    /// Shut the write side, discard input until EOF (at most 2 s / 1 MiB).
    func linger() {
        if shutdown(pointee.fd, Int32(SHUT_WR)) != 0 {
            closeNow(pointee.closeReason)
            return
        }
        pointee.flags |= CF.linger
        inRelease()
        updateTimer() // moves it to the lingering list
        updateInterest()
        // Input may already be waiting, and in edge mode no new edge will say so.
        if pointee.loop.pointee.edge { markReady() }
    }

    /// After an error answer the client is often still sending; unread input
    /// makes close() send a reset that can destroy the answer in flight.
    @inline(__always)
    var shouldLinger: Bool {
        if pointee.flags & CF.readEOF != 0 { return false } // the client finished sending
        return pointee.closeReason == CloseReason.badRequest || pointee.inLen > 0 || pointee.flags & CF.bodySkipped != 0
    }

    /// Reads what the trigger mode allows, then answers.
    func onReadable() {
        if pointee.flags & CF.linger != 0 {
            if pointee.flags & CF.closed == 0 { lingerRead() }
            return
        }
        // A stream resumed: deliver what the buffer holds before reading more.
        if pointee.flags & (CF.streaming | CF.bodyHeld | CF.paused) == CF.streaming { processInput() }
        var i = 0
        while i < Tuning.readsPerWakeup {
            i += 1
            if pointee.flags & (CF.closed | CF.paused | CF.readEOF | CF.closeAfter | CF.bodyHeld) != 0 { return }
            var offered = 0
            let n = readOnce(&offered)
            if n == -2 { return }
            if n == 0 {
                // Half-close: answer what was asked, then close. A body still
                // streaming will never end.
                pointee.flags |= CF.readEOF
                if pointee.flags & CF.streaming != 0 {
                    bodyEndNotify(.clientGone)
                    pointee.flags |= CF.closeAfter
                }
                if pointee.deferHead != nil { offloadPeerFinished() }   // its producers may stop working
                return
            }
            if n < 0 { return } // drained (EAGAIN)
            if pointee.flags & CF.proxyPending == 0 || takeProxyHeader() { processInput() }
            // A short read means the socket is drained: stop without the recv
            // that would say EAGAIN (a request that fits one read costs one
            // recv in either mode); not after a hang-up was signalled (the FIN
            // must still be read, and no new edge comes).
            if n < offered && pointee.flags & CF.peerHUP == 0 { return }
            // Flush between reads so a big pipelined burst does not pile up.
            if pointee.outBytes != 0 && flush() < 0 { return }
        }
        // At the cap more may wait. Level mode is told again by the kernel; in
        // edge mode no new edge will say so: serve the others first, then
        // come back.
        if pointee.loop.pointee.edge { markReady() }
    }

    /// Flush, resume a drained paused connection, close when done, update
    /// the timer and the epoll interest.
    func finishIO() {
        if pointee.flags & CF.closed != 0 { return }
        while true {
            if pointee.outBytes != 0 && flush() < 0 { return }
            if pointee.outBytes != 0 || pointee.flags & CF.paused == 0 || offloadFull { break }
            // Output drained while paused: answer what is buffered. That may
            // pause again and the flush may drain it all at once, so go round
            // until output is pending or the buffered input is used up.
            pointee.flags &= ~CF.paused
            processInput()
            if pointee.flags & CF.closed != 0 { return }
            if pointee.flags & CF.paused == 0 && pointee.loop.pointee.edge {
                markReady() // the edge for unread input was consumed while paused
            }
        }
        if pointee.outBytes == 0 && pointee.flags & CF.linger == 0 && pointee.deferHead == nil {
            if pointee.flags & CF.closeAfter != 0 {
                if shouldLinger { linger() } else { closeNow(pointee.closeReason) }
                return
            }
            if pointee.flags & CF.readEOF != 0 {
                // The peer half-closed and every answer is out.
                closeNow(CloseReason.normal)
                return
            }
        }
        if pointee.deferHead != nil { publishWritability() }   // a stream at the front
        updateTimer()
        updateInterest()
    }

    /// Readiness from epoll (Ev bits).
    @inline(__always)
    func handleEvent(_ ev: UInt32) {
        if pointee.flags & CF.closed != 0 { return } // closed earlier in this batch
        if ev & Ev.error != 0 {
            closeNow(CloseReason.error)
            return
        }
        if ev & Ev.urgent != 0 { discardUrgent() }
        if ev & Ev.hup != 0 { pointee.flags |= CF.peerHUP }
        if ev & Ev.write != 0 && pointee.outBytes != 0 && flush() < 0 { return }
        if ev & (Ev.read | Ev.hup) != 0 { onReadable() }
        finishIO()
    }
}

// MARK: - Raw-mode connection functions (prg_conn_write and friends)

enum RawConnection {
    static func functions() -> ConnectionFunctions {
        ConnectionFunctions(
            write: { handle, bytes, count in
                let c = ConnPtr(handle.unsafelyUnwrapped)
                if c.pointee.flags & (CF.closed | CF.closeAfter) != 0 || count < 0 { return -1 }
                if !c.outAppend(bytes, count) { return -1 }
                // Written from another connection's handler: flush after the
                // batch, never now (that could run this connection's handler
                // inside the other's).
                if c.pointee.flags & CF.inCallback == 0 { c.markReady() }
                return 0
            },
            close: { handle in
                let c = ConnPtr(handle.unsafelyUnwrapped)
                if c.pointee.flags & (CF.closed | CF.closeAfter) != 0 { return }
                c.pointee.closeReason = CloseReason.app
                c.pointee.flags |= CF.closeAfter
                if c.pointee.flags & CF.inCallback == 0 { c.markReady() }
            },
            id: { handle in ConnPtr(handle.unsafelyUnwrapped).pointee.id },
            pendingOutput: { handle in ConnPtr(handle.unsafelyUnwrapped).pointee.outBytes },
            remoteAddress: { handle, out in
                guard let address = ConnPtr(handle.unsafelyUnwrapped).pointee.remote, let out else { return -1 }
                out.initializeMemory(as: SocketAddress.self, to: address)
                return 0
            })
    }
}
