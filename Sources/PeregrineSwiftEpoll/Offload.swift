// Answers that come later, from other threads: the Swift engine's port of
// csrc/offload.c, with the same rules.
//
//  deferAnswer     on the loop thread, inside the handler: the request gets a
//                  DeferredAnswer and a place in the connection's list of
//                  answers owed, in request order.
//  post            any thread: the answer goes to the loop's mailbox (a
//                  mutex-guarded array); the first post into an empty mailbox
//                  writes the loop's eventfd.
//  drainMailbox    the loop thread, when the eventfd fired: each answer whose
//                  connection still lives is written with the engine's writer
//                  into its own chunks; answers at the front of the list that
//                  are ready go to the send queue, so pipelined answers leave
//                  in order. An answer for a closed connection is dropped.
//
// Who completes an answer is decided once, as in C, by the first
// compare-and-swap out of `DeferState.open`: the producer (`complete`: sent),
// the loop when `handlerTimeout` passed (timedOut: 503 written, the late
// answer refused) or when the connection closed first (orphan: refused).
// ARC keeps the object alive for every side that holds it.
#if canImport(Glibc)
import Glibc
#endif
import PeregrineCore
import Synchronization

enum DeferState {
    static let open: UInt8 = 0
    static let sent: UInt8 = 1       // ended: the producer's last operation is posted
    static let timedOut: UInt8 = 2
    static let orphan: UInt8 = 3     // the peer went (or the loop ended)
    static let headed: UInt8 = 4     // a stream's head is posted; writes accepted until the end
}

/// One producer operation on a stream, copied, waiting for the loop.
enum StreamOp {
    /// `length`: the one-shot answer's body length, sent as Content-Length
    /// unless a header gave one (nil for a stream).
    case head(status: Int, headers: [(name: String, value: String)], length: Int?)
    case body([UInt8])
    case end(trailers: [(name: String, value: String)])
    /// Released after the head without an end: close after what was written.
    case abort
}

/// Answers owed per connection before its reading pauses (as in C).
let deferMaxDepth = 64

/// A loop's inbox of answers posted from other threads. Outlives the loop
/// (the answers hold it): after `close` a late answer is dropped. A pthread
/// mutex (not Synchronization's Mutex, whose futex ThreadSanitizer cannot see).
final class Mailbox: @unchecked Sendable {
    // @unchecked: items and closed are guarded by mutex.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var items: [DeferredAnswer] = []
    private var closed = false
    private let wakeFd: Int32

    /// nil when the mutex cannot be initialised.
    static func make(wakeFd: Int32) -> Mailbox? {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        if pthread_mutex_init(m, nil) != 0 {
            m.deallocate()
            return nil
        }
        return Mailbox(wakeFd: wakeFd, mutex: m)
    }

    private init(wakeFd: Int32, mutex: UnsafeMutablePointer<pthread_mutex_t>) {
        self.wakeFd = wakeFd
        self.mutex = mutex
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// `false` when the loop has ended (the answer is dropped).
    func post(_ d: DeferredAnswer) -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return postLocked(d)
    }

    private func postLocked(_ d: DeferredAnswer) -> Bool {
        if closed { return false }
        if d.onMailbox { return true }
        d.onMailbox = true
        let wasEmpty = items.isEmpty
        items.append(d)
        if wasEmpty {
            var one: UInt64 = 1
            // Under the lock: the descriptor outlives it. Fails only for a bad
            // descriptor (the counter is read each wakeup): then nothing drains.
            if write(wakeFd, &one, 8) != 8 && errno != EAGAIN { return false }
        }
        return true
    }

    /// A stream operation: `check` (under the lock, so nothing is queued
    /// after an end) returns 0 to queue `op`, or the refusal. -ECONNRESET
    /// when the loop has ended.
    func submit(_ d: DeferredAnswer, _ check: (DeferredAnswer) -> Int32, _ op: () -> StreamOp) -> Int32 {
        submitAll(d, check, { [op()] })
    }

    /// As `submit`, several operations in one step (the one-shot answer:
    /// head, body and end, so nothing can come between them).
    func submitAll(_ d: DeferredAnswer, _ check: (DeferredAnswer) -> Int32, _ ops: () -> [StreamOp]) -> Int32 {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        if closed { return -ECONNRESET }
        let rc = check(d)
        if rc != 0 { return rc }
        if d.ops.isEmpty { d.ops = ops() } else { d.ops.append(contentsOf: ops()) }   // the first: no copy
        return postLocked(d) ? 0 : -ECONNRESET
    }

    /// The producer-side fields of a stream, under the lock.
    func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// The loop thread: what `drain` renders, kept with its capacity (as
    /// `items` keeps its own) so that a drain allocates no array.
    private var batch: [(DeferredAnswer, [StreamOp])] = []

    /// The loop thread: takes every posted answer with its ops (under the
    /// lock), then hands each to `render` (outside it). Not reentrant: the
    /// loop calls it at its top level only (EventLoop.run), never from a
    /// render, which would otherwise see `batch` still full.
    func drain(_ render: (DeferredAnswer, [StreamOp]) -> Void) {
        pthread_mutex_lock(mutex)
        for d in items {
            d.onMailbox = false
            batch.append((d, d.ops))
            d.ops = []
        }
        items.removeAll(keepingCapacity: true)
        pthread_mutex_unlock(mutex)
        for (d, ops) in batch { render(d, ops) }
        batch.removeAll(keepingCapacity: true)
    }

    /// The loop ended: what is queued and what arrives later is dropped.
    func close() {
        pthread_mutex_lock(mutex)
        closed = true
        let dropped = items
        items = []
        pthread_mutex_unlock(mutex)
        _ = dropped   // released outside the lock
    }
}

/// One answer owed to a connection: a deferred request, or an answer that
/// waits behind one.
final class DeferredAnswer: @unchecked Sendable {
    // @unchecked: the loop-thread fields are touched by the loop thread only;
    // the producer's are guarded by the mailbox lock.
    var conn: ConnPtr?                     // loop thread; nil once the connection closed
    var next: Unmanaged<DeferredAnswer>?   // the connection's list (loop thread)
    var ready = false                      // loop thread: its bytes are in out*
    var closeAfter: UInt32 = 0
    var outHead: ChunkPtr? = nil
    var outTail: ChunkPtr? = nil
    var outBytes = 0
    let reqMinor: UInt8
    var keepAlive: Bool
    let noBody: Bool
    /// Loop thread: deferred while its request body streams (in the head
    /// handler of a stream, or in the consumer's callbacks).
    var forBody = false
    let mailbox: Mailbox?
    let state: Atomic<UInt8>
    // The loop's handler-timeout list (loop thread; unretained: the
    // connection's list holds it while it is on this one).
    var latePrev: Unmanaged<DeferredAnswer>? = nil
    var lateNext: Unmanaged<DeferredAnswer>? = nil
    var lateDeadline: UInt32 = 0
    var onLateList = false
    // Streams. Under the mailbox lock: ops posted and not yet taken, whether
    // it is in the mailbox, and the producer's header, trailer and
    // Content-Length bookkeeping.
    var ops: [StreamOp] = []
    var onMailbox = false
    var pendingHeaders: [(name: String, value: String)] = []
    var trailers: [(name: String, value: String)] = []
    var declaredLeft: Int64 = -1
    // The loop thread: the response writer's state for this stream, put
    // into the connection while its ops are rendered.
    var isStream = false
    var ended = false
    var wState: UInt8 = 0
    var wFlags: UInt8 = 0
    var wStatus: Int32 = 0
    var wLengthLeft: Int64 = 0
    var wKeepAlive = false
    var renderedTotal = 0
    // Watermarks: the level is postedTotal + loopPart (the loop publishes
    // its bytes still queued minus all it has rendered, in one store).
    let postedTotal = Atomic<Int>(0)
    let loopPart = Atomic<Int>(0)
    let wantWritable = Atomic<Bool>(false)
    let lowWater = 64 * 1024
    let highWater = 256 * 1024
    /// A stream producer's callback for room to write, under the mailbox
    /// lock (onWritable, setOnWritable): no lock of its own, which would be
    /// three allocations per answer.
    private var onWritableLocked: (@Sendable () -> Void)? = nil

    init(conn: ConnPtr, mailbox: Mailbox?, reqMinor: UInt8, keepAlive: Bool, noBody: Bool,
         state: UInt8 = DeferState.open) {
        self.conn = conn
        self.mailbox = mailbox
        self.reqMinor = reqMinor
        self.keepAlive = keepAlive
        self.noBody = noBody
        self.state = Atomic(state)
    }

    /// Any thread: the answer goes to the connection's loop, as a stream's
    /// head (with its Content-Length), one write and an end, posted in one
    /// step (the C core's prg_deferred_send). `false` when it was refused:
    /// already completed or headed, timed out (the client got 503), or the
    /// connection or the loop is gone.
    func complete(_ a: OffloadAnswer) -> Bool {
        guard let mb = mailbox else { return false }
        let rc = mb.submitAll(self, { d in
            d.state.compareExchange(expected: DeferState.open, desired: DeferState.sent,
                                    ordering: .acquiringAndReleasing).exchanged ? 0 : -EALREADY
        }, {
            // One array, sized at once.
            let head = StreamOp.head(status: a.status, headers: a.headers, length: a.body.count)
            return a.body.isEmpty ? [head, .end(trailers: [])] : [head, .body(a.body), .end(trailers: [])]
        })
        if rc == 0 { postedTotal.add(a.body.count, ordering: .sequentiallyConsistent) }   // the level counts it as written
        return rc == 0
    }

    /// The producer's callback for room to write (nil: none), read under the
    /// mailbox lock; the caller runs it after.
    var onWritable: (@Sendable () -> Void)? {
        guard let mb = mailbox else { return nil }   // not a producer's answer: never set
        return mb.locked { onWritableLocked }
    }

    func setOnWritable(_ callback: (@Sendable () -> Void)?) {
        guard let mb = mailbox else { return }
        mb.locked { onWritableLocked = callback }
    }

    /// The loop thread: the loop decides the answer itself (timeout, or the
    /// connection closed). `false` when the producer got there first.
    func claim(_ outcome: UInt8) -> Bool {
        state.compareExchange(expected: DeferState.open, desired: outcome, ordering: .acquiringAndReleasing).exchanged
    }
}

/// The connection's writer state set aside while an owed answer is rendered.
struct SavedWriter {
    var respState: UInt8
    var respFlags: UInt8
    var respStatus: Int32
    var respLengthLeft: Int64
    var reqMinor: UInt8
    var reqKeepAlive: Bool
}

/// The send queue set aside while an answer is captured.
struct SavedOutput {
    var head: ChunkPtr?
    var tail: ChunkPtr?
    var bytes: Int
}

extension UnsafeMutablePointer where Pointee == ConnState {
    @inline(__always) var offloadFull: Bool { pointee.deferCount >= deferMaxDepth }

    private func deferAppend(_ d: DeferredAnswer) {
        let u = Unmanaged.passRetained(d)   // the list's reference
        d.next = nil
        if let t = pointee.deferTail { t.takeUnretainedValue().next = u } else { pointee.deferHead = u }
        pointee.deferTail = u
        pointee.deferCount += 1
    }

    func holdBegin() -> SavedOutput {
        let saved = SavedOutput(head: pointee.outHead, tail: pointee.outTail, bytes: pointee.outBytes)
        pointee.outHead = nil
        pointee.outTail = nil
        pointee.outBytes = 0
        return saved
    }

    private func holdTake(_ saved: SavedOutput, into d: DeferredAnswer) {
        d.outHead = pointee.outHead
        d.outTail = pointee.outTail
        d.outBytes = pointee.outBytes
        pointee.outHead = saved.head
        pointee.outTail = saved.tail
        pointee.outBytes = saved.bytes
    }

    /// As holdTake, appending to what `d` already holds (a stream rendered
    /// over several drains).
    func holdAppend(_ saved: SavedOutput, into d: DeferredAnswer) {
        if let h = pointee.outHead {
            if let t = d.outTail { t.pointee.next = h } else { d.outHead = h }
            d.outTail = pointee.outTail
            d.outBytes += pointee.outBytes
        }
        pointee.outHead = saved.head
        pointee.outTail = saved.tail
        pointee.outBytes = saved.bytes
    }

    private func releaseChunks(_ first: ChunkPtr?) {
        var k = first
        while let c = k {
            k = c.pointee.next
            chunkRelease(c)
        }
    }

    /// After a callback that answered while earlier answers are owed: its
    /// bytes wait behind them.
    func holdEnd(_ saved: SavedOutput) {
        if pointee.outBytes == 0 || pointee.flags & CF.closed != 0 {
            let k = pointee.outHead
            pointee.outHead = saved.head
            pointee.outTail = saved.tail
            pointee.outBytes = saved.bytes
            releaseChunks(k)
            return
        }
        let d = DeferredAnswer(conn: self, mailbox: nil, reqMinor: 1, keepAlive: false, noBody: false,
                               state: DeferState.sent)
        holdTake(saved, into: d)
        d.ready = true
        deferAppend(d)
    }

    /// In a handler, before answering: the answer comes later through the
    /// returned object. nil when an answer was already started.
    func deferAnswer() -> DeferredAnswer? {
        guard let mb = pointee.loop.pointee.mailbox, pointee.flags & (CF.inCallback | CF.closed) == CF.inCallback,
              pointee.respState == RespState.none else { return nil }
        let d = DeferredAnswer(conn: self, mailbox: mb.takeUnretainedValue(), reqMinor: pointee.reqMinor,
                               keepAlive: pointee.reqKeepAlive, noBody: pointee.respFlags & RespFlag.noBody != 0)
        // From the head handler of a stream (headDecide begins it) or while
        // the body streams: the body goes on while the answer is owed.
        d.forBody = pointee.flags & (CF.inHead | CF.streaming) != 0
        deferAppend(d)
        pointee.loop.lateAppend(d)
        pointee.respState = RespState.done   // the inline writer refuses from here on
        return d
    }

    /// The streamed request's own deferred answer, while its body streams
    /// (nothing is appended behind it meanwhile).
    var bodyHandle: DeferredAnswer? {
        guard let d = pointee.deferTail?.takeUnretainedValue(), d.forBody else { return nil }
        return d
    }

    /// 100 Continue would not go out ahead of an owed answer: none is owed
    /// but this request's own, and not a byte of it was written.
    var mayContinue: Bool {
        guard let u = pointee.deferHead else { return true }
        let d = u.takeUnretainedValue()
        return d === bodyHandle && !d.ready && !d.isStream && d.outHead == nil
    }

    /// A streamed body ended while its answer is deferred (before the
    /// consumer hears it; offload.c's prg_offload_body_end). Complete:
    /// nothing changes. Failed: the answer is taken from the producer (its
    /// later operations are refused: timedOut after a body timeout, else
    /// orphan) and the error answer goes in its place, or, once its head was
    /// written, the connection closes after what was written. true: the
    /// request's answer is settled here (no error answer of the caller's).
    func offloadBodyEnd(_ how: BodyEnd, _ status: Int32) -> Bool {
        guard let d = bodyHandle else { return false }
        d.forBody = false
        if how == .complete { return false }
        if d.ready { return true }   // whole: it goes out, then the close
        let to = how == .timedOut ? DeferState.timedOut : DeferState.orphan
        guard d.claim(to) || d.state.compareExchange(expected: DeferState.headed, desired: to,
                                                     ordering: .acquiringAndReleasing).exchanged else {
            return true   // ended by the producer: it goes out
        }
        // What it posted and the loop has not rendered is dropped (ended).
        pointee.loop.lateRemove(d)
        d.runWritable()
        if status > 0 && !d.isStream && d.outHead == nil {
            let saved = holdBegin()
            let writer = saveWriter()
            let closeAfter = pointee.flags & CF.closeAfter
            _ = sendError(status)   // in its place
            d.closeAfter |= pointee.flags & CF.closeAfter
            pointee.flags = (pointee.flags & ~CF.closeAfter) | closeAfter
            restoreWriter(writer, for: d)
            holdAppend(saved, into: d)
        } else {
            d.closeAfter |= CF.closeAfter   // cut short: the close tells the client
        }
        d.ended = true
        d.ready = true
        if pointee.deferHead?.takeUnretainedValue() === d { releaseReady() }
        return true
    }

    /// The connection's own writer state (the request being streamed in or
    /// parsed), kept apart while an owed answer is rendered.
    func saveWriter() -> SavedWriter {
        SavedWriter(respState: pointee.respState, respFlags: pointee.respFlags, respStatus: pointee.respStatus,
                    respLengthLeft: pointee.respLengthLeft, reqMinor: pointee.reqMinor, reqKeepAlive: pointee.reqKeepAlive)
    }

    /// Puts it back. The answer to a body still streaming may decide to
    /// close: the writer then cleared reqKeepAlive (ResponseWriter), and the
    /// connection closes once the body was read to its end.
    func restoreWriter(_ w: SavedWriter, for d: DeferredAnswer) {
        let keepAlive = d.forBody && pointee.flags & CF.streaming != 0 ? w.reqKeepAlive && pointee.reqKeepAlive : w.reqKeepAlive
        pointee.respState = w.respState
        pointee.respFlags = w.respFlags
        pointee.respStatus = w.respStatus
        pointee.respLengthLeft = w.respLengthLeft
        pointee.reqMinor = w.reqMinor
        pointee.reqKeepAlive = keepAlive
    }

    /// Answers at the front of the list that are ready go to the send queue.
    func releaseReady() {
        while let u = pointee.deferHead {
            let d = u.takeUnretainedValue()
            if !d.ready {
                // A stream at the front: its bytes go out as they come.
                if d.isStream, let h = d.outHead {
                    if let t = pointee.outTail { t.pointee.next = h } else { pointee.outHead = h }
                    pointee.outTail = d.outTail
                    pointee.outBytes += d.outBytes
                    d.outHead = nil
                    d.outTail = nil
                    d.outBytes = 0
                }
                return
            }
            pointee.deferHead = d.next
            if pointee.deferHead == nil { pointee.deferTail = nil }
            pointee.deferCount -= 1
            if let h = d.outHead {
                if let t = pointee.outTail { t.pointee.next = h } else { pointee.outHead = h }
                pointee.outTail = d.outTail
                pointee.outBytes += d.outBytes
                d.outHead = nil
                d.outTail = nil
            }
            pointee.flags |= d.closeAfter
            d.next = nil
            u.release()
        }
    }

    /// The connection closed: what it was owed is dropped.
    /// The peer sent its FIN while answers are owed: each unfinished
    /// stream's producer hears it once (the answer may still go out).
    func offloadPeerFinished() {
        var u = pointee.deferHead
        while let cur = u {
            let d = cur.takeUnretainedValue()
            u = d.next
            if !d.ready { d.runPeerGone() }
        }
    }

    func offloadClosed() {
        var u = pointee.deferHead
        pointee.deferHead = nil
        pointee.deferTail = nil
        pointee.deferCount = 0
        while let cur = u {
            let d = cur.takeUnretainedValue()
            u = d.next
            d.next = nil
            pointee.loop.lateRemove(d)
            _ = d.claim(DeferState.orphan)   // a late answer is refused
            // A stream's peer went: its next write is refused; a waiting
            // producer learns it now.
            _ = d.state.compareExchange(expected: DeferState.headed, desired: DeferState.orphan,
                                        ordering: .acquiringAndReleasing)
            if !d.ready { d.runPeerGone() }
            if d.ready {
                releaseChunks(d.outHead)
                d.outHead = nil
                d.outTail = nil
            }
            d.conn = nil   // a late answer finds no connection: a no-op
            cur.release()
        }
    }

    /// The loop's 503 in place of an answer that did not come in time.
    func renderTimeout(_ d: DeferredAnswer) {
        let saved = holdBegin()
        let writer = saveWriter()
        let closeAfter = pointee.flags & CF.closeAfter   // a later request's, not this one's
        pointee.flags &= ~CF.closeAfter
        pointee.respState = RespState.none
        pointee.respStatus = 0
        pointee.respLengthLeft = 0
        pointee.reqMinor = d.reqMinor
        pointee.reqKeepAlive = d.keepAlive
        pointee.respFlags = d.noBody ? RespFlag.noBody : 0
        let response = Response(sink: OpaquePointer(self), functions: pointee.loop.pointee.responseFunctions)
        response.send(status: 503, body: "Service Unavailable: handler timed out\n")
        _ = finishDefault()
        d.closeAfter = pointee.flags & CF.closeAfter
        pointee.flags = (pointee.flags & ~CF.closeAfter) | closeAfter
        restoreWriter(writer, for: d)
        holdTake(saved, into: d)
        d.ready = true
        d.ended = true
    }
}

extension UnsafeMutablePointer where Pointee == LoopState {
    /// The loop thread, after its eventfd fired.
    func drainMailbox() {
        guard let mb = pointee.mailbox else { return }
        mb.takeUnretainedValue().drain { d, ops in
            guard let c = d.conn else { return }   // its connection closed meanwhile
            if !ops.isEmpty { c.renderOps(d, ops) }   // a stream's ops (the one-shot answer is one too)
            c.rendered(d)
        }
    }

    /// The handler-timeout list: answers owed, in deadline order (each waits
    /// the same time, so a FIFO).
    func lateAppend(_ d: DeferredAnswer) {
        if pointee.handlerTimeout == 0 { return }
        d.lateDeadline = pointee.now &+ pointee.handlerTimeout &+ 1   // never early
        let u = Unmanaged.passUnretained(d)
        d.latePrev = pointee.lateTail
        d.lateNext = nil
        if let t = pointee.lateTail { t.takeUnretainedValue().lateNext = u } else { pointee.lateHead = u }
        pointee.lateTail = u
        d.onLateList = true
    }

    func lateRemove(_ d: DeferredAnswer) {
        if !d.onLateList { return }
        if let p = d.latePrev { p.takeUnretainedValue().lateNext = d.lateNext } else { pointee.lateHead = d.lateNext }
        if let n = d.lateNext { n.takeUnretainedValue().latePrev = d.latePrev } else { pointee.lateTail = d.latePrev }
        d.latePrev = nil
        d.lateNext = nil
        d.onLateList = false
    }

    /// Owed answers past the handler timeout: 503 in their place, unless
    /// the answer was sent meanwhile (it is on its way: not late).
    func sweepLateAnswers() {
        while let u = pointee.lateHead, u.takeUnretainedValue().lateDeadline <= pointee.now {
            let d = u.takeUnretainedValue()
            lateRemove(d)
            guard d.claim(DeferState.timedOut), let c = d.conn else { continue }
            c.renderTimeout(d)
            c.rendered(d)
        }
    }
}

extension UnsafeMutablePointer where Pointee == ConnState {
    /// A rendered answer at the front goes out with those ready behind it.
    func rendered(_ d: DeferredAnswer) {
        guard pointee.deferHead?.takeUnretainedValue() === d else { return }
        releaseReady()
        finishIO()   // send, resume paused input, close if done
    }
}
