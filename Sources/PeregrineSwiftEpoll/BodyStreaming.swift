// BodyStreaming.swift: streamed request bodies (the port of the streaming
// part of csrc/conn.c). The head handler of a `.streaming` application sees
// the head alone and chooses: a BodyConsumer (the body goes to it span by
// span from the receive buffer, with backpressure), an answer (the body is
// never read, the connection closes), or nil (buffered as usual).

import Glibc
import PeregrineCore

/// What the head handler chose.
enum HeadChoice {
    case buffer
    case stream
    case answered
}

/// How much of buf[0..<len] the request head can be: through its first
/// empty line (after any leading empty lines the parser skips), or all of it
/// while that has not arrived.
func headExtent(_ buf: UnsafeRawPointer, _ len: Int) -> Int {
    var start = 0
    while start + 1 < len && buf.load(fromByteOffset: start, as: UInt8.self) == 13
        && buf.load(fromByteOffset: start + 1, as: UInt8.self) == 10 {
        start += 2
    }
    // Each LF that ends CRLFCRLF (memmem is not in Glibc's Swift module).
    var from = start
    while from < len, let lf = memchr(buf + from, 10, len - from) {
        let j = UnsafeRawPointer(lf) - buf
        if j >= start + 3 && buf.load(fromByteOffset: j - 1, as: UInt8.self) == 13
            && buf.load(fromByteOffset: j - 2, as: UInt8.self) == 10 && buf.load(fromByteOffset: j - 3, as: UInt8.self) == 13 {
            return j + 1
        }
        from = j + 1
    }
    return len
}

extension UnsafeMutablePointer where Pointee == ConnState {
    /// Ends the stream and hands the consumer its end, once; its retained
    /// reference ends here.
    func bodyEndNotify(_ how: BodyEnd) {
        guard pointee.flags & CF.streaming != 0, let stream = pointee.bodyStream else { return }
        pointee.flags &= ~(CF.streaming | CF.bodyHeld)
        pointee.bodyStream = nil
        pointee.bodyPending = 0
        if pointee.deferTail != nil { _ = offloadBodyEnd(how, 0) }   // its deferred answer learns it first
        let consumer = Unmanaged<BodyConsumer>.fromOpaque(stream).takeRetainedValue()
        let inCallback = pointee.flags & CF.inCallback
        pointee.flags |= CF.inCallback
        consumer.finish(how)
        pointee.flags = (pointee.flags & ~CF.inCallback) | inCallback
    }

    /// A streamed body failed: the error answer if none was started, close
    /// after, then the consumer's end (prg_body_fail).
    func bodyFail(_ how: BodyEnd, _ status: Int32) {
        if pointee.flags & CF.closed != 0 { return }
        // A deferred answer gets the error in its place, or is cut short.
        if pointee.deferTail != nil && offloadBodyEnd(how, status) {
        } else if pointee.respState == RespState.none {
            sendErrorOrdered(status)
        }
        pointee.closeReason = CloseReason.badRequest
        pointee.flags |= CF.closeAfter
        bodyEndNotify(how)
    }

    /// The request at inBuf[used...] has a complete head and a body, and its
    /// parser `p` is saved: the head handler chooses.
    func headDecide(_ used: Int, _ p: UnsafeMutablePointer<HTTP1Parser>) -> HeadChoice {
        let loop = pointee.loop
        pointee.flags |= CF.headSeen
        let base = pointee.inBuf.unsafelyUnwrapped + used
        var req = ParsedRequest()
        let rc = p.pointee.headView(UnsafeRawBufferPointer(start: base, count: pointee.inLen - used),
                                         limits: loop.pointee.headLimits, headers: loop.pointee.headers, into: &req)
        if rc < 0 { // unreachable: the parser accepted this head
            sendErrorOrdered(Int32(truncatingIfNeeded: -rc))
            pointee.closeReason = CloseReason.badRequest
            pointee.flags |= CF.closeAfter
            return .answered
        }
        if loop.pointee.draining { req.flags.remove(.keepAlive) }
        responseReset(req)
        // An answer from the head closes the connection (the body is never
        // read); restored when the handler streams or leaves it buffered.
        let keepAlive = pointee.reqKeepAlive
        pointee.reqKeepAlive = false
        let hold = pointee.deferHead != nil
        let saved = hold ? holdBegin() : SavedOutput(head: nil, tail: nil, bytes: 0)
        pointee.flags |= CF.inCallback | CF.inHead
        let response = Response(sink: OpaquePointer(self), functions: loop.pointee.responseFunctions)
        let consumer = loop.pointee.app._withUnsafeGuaranteedRef { $0.streamHead(req.request(remoteAddress: pointee.remote), response) }
        pointee.flags &= ~(CF.inCallback | CF.inHead)
        // Deferred in the head handler (ConnPtr.deferAnswer): with a consumer
        // the body streams while the answer is owed; without, it is an
        // answer from the head.
        let deferred = bodyHandle
        deferred?.forBody = false
        if let consumer {
            if pointee.flags & (CF.closed | CF.closeAfter) == 0
                && (pointee.respState == RespState.none || deferred != nil) {
                pointee.flags |= CF.streaming
                pointee.bodyStream = Unmanaged.passRetained(consumer).toOpaque()
                pointee.bodyPending = 0
                pointee.reqKeepAlive = keepAlive
                if let deferred {
                    deferred.forBody = true
                    deferred.keepAlive = keepAlive   // it was deferred while an answer from the head would close
                }
                consumer.attach(OpaquePointer(self), functions: loop.pointee.bodyFunctions,
                                response: loop.pointee.responseFunctions)
                if hold { holdEnd(saved) }
                streamBegin(used, p)
                return .stream
            }
            consumer.finish(.closed) // it answered as well: the answer stands, the body is not read
        }
        if pointee.respState != RespState.none || pointee.flags & (CF.closed | CF.closeAfter) != 0 {
            _ = finishDefault() // ends an answer left open
            if hold { holdEnd(saved) }
            pointee.flags |= CF.closeAfter | CF.bodySkipped
            return .answered
        }
        if hold { holdEnd(saved) }
        pointee.reqKeepAlive = keepAlive
        // Buffered: the limit for buffered bodies applies from here.
        if p.pointee.contentLength > Int64(loop.pointee.limits.maxBody) {
            sendErrorOrdered(413)
            pointee.closeReason = CloseReason.badRequest
            pointee.flags |= CF.closeAfter
            return .answered
        }
        return .buffer
    }

    /// The head goes; what follows it is raw body input (the parser saw the
    /// head alone).
    func streamBegin(_ used: Int, _ p: UnsafeMutablePointer<HTTP1Parser>) {
        inConsume(used + p.pointee.headLength)
        pointee.bodyPending = 0
    }

    /// Holding back is for the event engines; this one always can.
    /// Delivers the body: pending bytes to the consumer, then the next
    /// decoded span, until it holds back, the input runs out or the body
    /// ends. 1: ended complete (the buffer starts with the next request),
    /// 0: waiting, -1: closing.
    func streamBody() -> Int {
        let loop = pointee.loop
        let parser = pointee.savedParser.unsafelyUnwrapped // saved before the head handler ran; kept while streaming
        while true {
            if pointee.flags & (CF.closed | CF.closeAfter) != 0 { return -1 }
            if pointee.flags & CF.bodyHeld != 0 { return 0 }
            if pointee.bodyPending > 0 {
                let consumer = Unmanaged<BodyConsumer>.fromOpaque(pointee.bodyStream.unsafelyUnwrapped).takeUnretainedValue()
                // Answers owed before this request's: what it writes waits behind them.
                let hold = pointee.deferHead != nil
                let saved = hold ? holdBegin() : SavedOutput(head: nil, tail: nil, bytes: 0)
                pointee.flags |= CF.inCallback
                let took = consumer.deliver(UnsafeRawBufferPointer(start: pointee.inBuf, count: pointee.bodyPending))
                pointee.flags &= ~CF.inCallback
                if hold { holdEnd(saved) }
                if pointee.flags & CF.streaming == 0 { return -1 } // closed meanwhile
                if took > 0 {
                    let b = pointee.inBuf.unsafelyUnwrapped
                    memmove(b, b + took, pointee.inLen - took)
                    pointee.inLen -= took
                    pointee.bodyPending -= took
                    if pointee.inLen == 0 { inRelease() }
                }
                if pointee.bodyPending > 0 { pointee.flags |= CF.bodyHeld } // took less: hold the rest
                continue
            }
            var decoded = 0
            var done = false
            let used = parser.pointee.bodyNext(UnsafeMutableRawBufferPointer(start: pointee.inBuf, count: pointee.inLen),
                                               limits: loop.pointee.streamLimits, decoded: &decoded, done: &done)
            if used < 0 {
                bodyFail(used == -413 ? .tooLarge : .badFraming, Int32(truncatingIfNeeded: -used))
                return -1
            }
            if used > decoded { // close the gap the framing left
                let b = pointee.inBuf.unsafelyUnwrapped
                memmove(b + decoded, b + used, pointee.inLen - used)
                pointee.inLen -= used - decoded
                if pointee.inLen == 0 { inRelease() }
            }
            pointee.bodyPending = decoded
            if decoded > 0 { continue }
            if done { break }
            // Waiting for body bytes: now is when the client is asked for them.
            if parser.pointee.expectContinue && pointee.flags & CF.continueSent == 0 && mayContinue {
                _ = sendContinue()
                pointee.flags |= CF.continueSent
            }
            return 0
        }
        // Complete: the consumer's last word (it may defer it now), then the
        // next request.
        let hold = pointee.deferHead != nil
        let saved = hold ? holdBegin() : SavedOutput(head: nil, tail: nil, bytes: 0)
        bodyEndNotify(.complete)
        _ = finishDefault()   // nothing for a deferred answer
        if hold { holdEnd(saved) }
        if !pointee.reqKeepAlive { pointee.flags |= CF.closeAfter }
        pointee.parserForget() // the next request starts on the stack
        timerRemove()
        pointee.flags &= ~(CF.continueSent | CF.headSeen)
        return 1
    }
}

/// The BodyStreamFunctions of this engine (prg_body_stream and friends).
/// `begin` is not used here (the engine begins streams itself) and refuses.
enum SwiftBodyStream {
    static func functions() -> BodyStreamFunctions {
        BodyStreamFunctions(
            begin: { _, _ in -1 },
            pause: { handle in
                let c = ConnPtr(handle.unsafelyUnwrapped)
                if c.pointee.flags & CF.streaming == 0 { return -1 }
                c.pointee.flags |= CF.bodyHeld
                return 0
            },
            resume: { handle in
                let c = ConnPtr(handle.unsafelyUnwrapped)
                if c.pointee.flags & CF.streaming == 0 { return -1 }
                if c.pointee.flags & CF.bodyHeld == 0 { return 0 }
                c.pointee.flags &= ~CF.bodyHeld
                // Inside its own callback the delivery loop goes on; otherwise
                // serve it after this batch: what is held, then the socket.
                if c.pointee.flags & CF.inCallback == 0 { c.markReady() }
                return 0
            },
            receiveCapacity: { handle in
                let c = ConnPtr(handle.unsafelyUnwrapped)
                return c.pointee.inBuf == nil ? 0 : c.pointee.inCap
            })
    }
}
