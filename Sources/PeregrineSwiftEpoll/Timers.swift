// Timers.swift: timeouts without a timer per request (the port of
// csrc/timer.c). Each timeout kind is a FIFO list of connections (every
// entry waits the same time, so arrival order is deadline order); the loop
// sweeps the expired heads once per second.
//
//  head    a request head has started arriving: the whole head must be in
//          within headerTimeout of its first byte (not reset by each byte,
//          so a slowloris client cannot stretch it): 408. A PROXY listener's
//          header waiting from the accept on: closed without an answer.
//  idle    everything else that waits on the client: an idle keep-alive
//          connection, a body arriving, output the client does not read.
//          Restarted by each event, so it measures time without progress.
//          Expiry: 408 when a request body stalled, otherwise a quiet close.
//  linger  lingering close: Tuning.lingerSeconds, then close.

import Glibc

enum TimerKind {
    static let none = 0
    static let head = 1
    static let idle = 2
    static let linger = 3
    static let count = 4
}

/// One FIFO of connections sharing a timeout.
struct TimerList {
    var head: ConnPtr? = nil
    var tail: ConnPtr? = nil
    var timeout: UInt32 = 0 // seconds; 0 = this timeout is off
}

extension UnsafeMutablePointer where Pointee == ConnState {
    @inline(__always)
    func timerRemove() {
        let which = pointee.timerList
        if which == TimerKind.none { return }
        let l = pointee.loop.pointee.timers + which
        if let p = pointee.timerPrev { p.pointee.timerNext = pointee.timerNext } else { l.pointee.head = pointee.timerNext }
        if let n = pointee.timerNext { n.pointee.timerPrev = pointee.timerPrev } else { l.pointee.tail = pointee.timerPrev }
        pointee.timerPrev = nil
        pointee.timerNext = nil
        pointee.timerList = TimerKind.none
    }

    func timerAppend(_ which: Int) {
        let loop = pointee.loop
        let l = loop.pointee.timers + which
        pointee.deadline = loop.deadline(which)
        pointee.timerList = which
        pointee.timerPrev = l.pointee.tail
        pointee.timerNext = nil
        if let t = l.pointee.tail { t.pointee.timerNext = self } else { l.pointee.head = self }
        l.pointee.tail = self
    }

    @inline(__always)
    var timerWanted: Int {
        let f = pointee.flags
        if f & CF.closed != 0 { return TimerKind.none }
        if f & CF.linger != 0 { return TimerKind.linger }
        // A PROXY header is part of the head: timed from the connection's start
        // (with the header timeout off, a silent client is idle as without one).
        if f & CF.proxyPending != 0 && pointee.loop.pointee.timers[TimerKind.head].timeout != 0 { return TimerKind.head }
        // Answers owed by the server: no timeout while nothing waits on the
        // client, the idle timer while output waits on its reading. Never the
        // head timer: its 408 would overtake the owed answers (timer.c).
        // A streamed body being read waits on the client, whatever is owed
        // (its own answer may be deferred): a stalled body gets its 408.
        if f & (CF.streaming | CF.bodyHeld | CF.closeAfter) == CF.streaming { return TimerKind.idle }
        if pointee.deferHead != nil { return pointee.outBytes != 0 ? TimerKind.idle : TimerKind.none }
        // Paused connections hold complete requests the parser has not looked
        // at yet: waiting on the client's reading, not on its head.
        if f & (CF.closeAfter | CF.paused) != 0 { return TimerKind.idle }
        // A streamed body the consumer holds back: it is the one late.
        if f & CF.bodyHeld != 0 { return pointee.outBytes != 0 ? TimerKind.idle : TimerKind.none }
        let raw = pointee.loop.pointee.raw
        // No saved parser: no head was begun before this read.
        if !raw && pointee.inLen > 0 && pointee.savedParser?.pointee.headComplete != true { return TimerKind.head }
        // Raw mode: an idle raw connection is the application's business;
        // only output the client does not read is timed.
        if raw && pointee.outBytes == 0 { return TimerKind.none }
        return TimerKind.idle
    }

    /// Puts it on the list its state calls for.
    @inline(__always)
    func updateTimer() {
        let loop = pointee.loop
        var want = timerWanted
        if want != TimerKind.none && loop.pointee.timers[want].timeout == 0 { want = TimerKind.none }
        if want == pointee.timerList {
            // A head keeps the deadline of its first byte, lingering its
            // start. Idle restarts, but moving to the tail is needed at most
            // once per clock second.
            if want != TimerKind.idle || pointee.deadline == loop.deadline(TimerKind.idle) { return }
        }
        timerRemove()
        if want != TimerKind.none { timerAppend(want) }
    }

    func answer408() {
        _ = sendError(408)
        pointee.closeReason = CloseReason.badRequest
        pointee.flags |= CF.closeAfter
        finishIO()
    }
}

extension UnsafeMutablePointer where Pointee == LoopState {
    /// Never early: an entry added just before the clock ticks still gets its
    /// full timeout (and at most one second more).
    @inline(__always)
    func deadline(_ which: Int) -> UInt32 {
        pointee.now &+ pointee.timers[which].timeout &+ 1
    }

    @inline(__always)
    func expiredHead(_ which: Int) -> ConnPtr? {
        guard let h = pointee.timers[which].head, h.pointee.deadline <= pointee.now else { return nil }
        return h
    }

    /// Once per clock second: resume a paused listener, 408 late heads,
    /// close idle connections, end lingering ones.
    func sweepTimers() {
        if pointee.now == pointee.swept { return }
        pointee.swept = pointee.now
        if pointee.listenerPaused && pointee.now >= pointee.listenerResume { resumeListener() }
        while let c = expiredHead(TimerKind.head) {
            c.timerRemove()
            if c.pointee.flags & CF.proxyPending != 0 {
                c.closeNow(CloseReason.badRequest)   // no answer: not HTTP yet
            } else {
                c.answer408()
            }
        }
        let raw = pointee.raw
        while let c = expiredHead(TimerKind.idle) {
            c.timerRemove()
            if c.pointee.flags & CF.streaming != 0 && c.pointee.outBytes == 0
                && c.pointee.flags & (CF.closeAfter | CF.paused) == 0 {
                c.bodyFail(.timedOut, 408) // a streamed body stalled
                c.finishIO()
                continue
            }
            let bodyStalled = !raw && c.pointee.inLen > 0 && c.pointee.outBytes == 0
                && c.pointee.flags & (CF.closeAfter | CF.paused) == 0
            if bodyStalled {
                c.answer408()
            } else {
                c.closeNow(c.pointee.outBytes != 0 ? CloseReason.error : CloseReason.normal)
            }
        }
        sweepLateAnswers()   // owed answers past handlerTimeout: 503
        while let c = expiredHead(TimerKind.linger) {
            c.timerRemove()
            c.closeNow(c.pointee.closeReason)
        }
    }

    var timersPending: Bool {
        for i in 1..<TimerKind.count where pointee.timers[i].head != nil { return true }
        return pointee.listenerPaused || pointee.lateHead != nil
    }
}
