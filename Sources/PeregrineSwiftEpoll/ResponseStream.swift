// Response streams in the Swift engine: the port of csrc/offload.c's stream
// model (prg_stream_*), with the same states, refusals, watermarks and order.
//
//  producer (any thread)  SwiftResponseStream: each operation is checked
//                         against DeferredAnswer.state and appended to its
//                         ops under the mailbox lock (check and append are
//                         one step), then the answer is posted to the loop.
//  loop thread            drainMailbox -> renderOps: the ops are rendered
//                         with the ordinary response writer, whose state for
//                         this stream is kept in the DeferredAnswer between
//                         drains. releaseReady hands a stream's bytes at the
//                         front of the connection's list to the socket as
//                         they come; answers behind it wait for its end.
//  writability            level = bytes posted - bytes rendered + bytes of
//                         the stream still queued; a write above the high
//                         mark answers 1 (wait), and publishWritability runs
//                         onWritable once the level is back at the low mark
//                         (or when the peer went: offloadClosed).
#if canImport(Glibc)
import Glibc
#endif
import PeregrineCore
import Synchronization

/// The producer's handle (ResponseStreamEngine): released without an end,
/// the client gets 500 before the head, a truncated body after it.
final class SwiftResponseStream: DeferredAnswerEngine {
    private let d: DeferredAnswer
    /// A writability callback was registered (cleared at the end).
    private let watchedWritable = Atomic<Bool>(false)

    init(_ d: DeferredAnswer) { self.d = d }

    func complete(_ answer: OffloadAnswer) -> Bool { d.complete(answer) }

    deinit {
        if watchedWritable.load(ordering: .acquiring) { d.setOnWritable(nil) }
        // The usual end, an answer already sent (or refused: timed out, the
        // peer gone), needs nothing: the state says so before any answer is
        // built or the mailbox locked.
        switch d.state.load(ordering: .acquiring) {
        case DeferState.open:
            _ = d.complete(OffloadAnswer(status: 500, body: "handler did not respond\n"))   // released before its head
        case DeferState.headed:
            guard let mb = d.mailbox else { return }
            _ = mb.submit(d, { d in   // released after its head, without an end: cut short
                d.state.compareExchange(expected: DeferState.headed, desired: DeferState.sent,
                                        ordering: .acquiringAndReleasing).exchanged ? 0 : -EALREADY
            }, { .abort })
        default:
            break
        }
    }

    /// The refusal for a state other than the one an operation needs.
    private static func refusal(_ state: UInt8) -> Int32 {
        switch state {
        case DeferState.open: return -EPROTO
        case DeferState.timedOut: return -ETIMEDOUT
        case DeferState.orphan: return -ECONNRESET
        default: return -EALREADY
        }
    }

    private func needsHeaded(_ d: DeferredAnswer) -> Int32 {
        let s = d.state.load(ordering: .acquiring)
        return s == DeferState.headed ? 0 : Self.refusal(s)
    }

    func streamHeader(name: String, value: String) -> Int32 {
        guard let mb = d.mailbox else { return -ECONNRESET }
        return mb.locked {
            let s = d.state.load(ordering: .acquiring)
            if s != DeferState.open { return s == DeferState.headed ? -EALREADY : Self.refusal(s) }
            if name.lowercased() == "content-length" {
                guard let n = Int64(value), n >= 0 else { return -EINVAL }
                d.declaredLeft = n
            }
            d.pendingHeaders.append((name, value))
            return 0
        }
    }

    func streamHead(status: Int) -> Int32 {
        guard let mb = d.mailbox else { return -ECONNRESET }
        guard (200...999).contains(status) else { return -EINVAL }
        var headers: [(name: String, value: String)] = []
        return mb.submit(d, { d in
            guard d.state.compareExchange(expected: DeferState.open, desired: DeferState.headed,
                                          ordering: .acquiringAndReleasing).exchanged else {
                let s = d.state.load(ordering: .acquiring)
                return s == DeferState.headed ? -EALREADY : Self.refusal(s)
            }
            headers = d.pendingHeaders
            d.pendingHeaders = []
            return 0
        }, { .head(status: status, headers: headers, length: nil) })
    }

    func streamWrite(_ bytes: UnsafeRawBufferPointer) -> Int32 {
        guard let mb = d.mailbox else { return -ECONNRESET }
        if bytes.count > 0 && bytes.baseAddress == nil { return -EINVAL }
        let rc = mb.submit(d, { d in
            let r = needsHeaded(d)
            if r != 0 { return r }
            if d.declaredLeft >= 0 {
                if Int64(bytes.count) > d.declaredLeft { return -EMSGSIZE }
                d.declaredLeft -= Int64(bytes.count)
            }
            return 0
        }, { .body(Array(bytes)) })
        if rc != 0 { return rc }
        let posted = d.postedTotal.add(bytes.count, ordering: .sequentiallyConsistent).newValue
        if posted + d.loopPart.load(ordering: .sequentiallyConsistent) <= d.highWater { return 0 }
        // Sequentially consistent with publishWritability (store the level,
        // then read the flag): either the loop sees the flag, or this
        // re-read sees the level it published, so no wake-up is missed.
        d.wantWritable.store(true, ordering: .sequentiallyConsistent)
        let level = d.postedTotal.load(ordering: .sequentiallyConsistent) + d.loopPart.load(ordering: .sequentiallyConsistent)
        if level <= d.lowWater && d.wantWritable.exchange(false, ordering: .sequentiallyConsistent) {
            return 0   // drained meanwhile, and the loop had not seen the flag
        }
        return 1
    }

    func streamTrailer(name: String, value: String) -> Int32 {
        guard let mb = d.mailbox else { return -ECONNRESET }
        return mb.locked {
            let r = needsHeaded(d)
            if r != 0 { return r }
            d.trailers.append((name, value))
            return 0
        }
    }

    func streamEnd() -> Int32 {
        guard let mb = d.mailbox else { return -ECONNRESET }
        var trailers: [(name: String, value: String)] = []
        var short = false
        let rc = mb.submit(d, { d in
            guard d.state.compareExchange(expected: DeferState.headed, desired: DeferState.sent,
                                          ordering: .acquiringAndReleasing).exchanged else {
                return Self.refusal(d.state.load(ordering: .acquiring))
            }
            trailers = d.trailers
            short = d.declaredLeft > 0
            return 0
        }, { .end(trailers: trailers) })
        if rc != 0 { return rc }
        return short ? -EMSGSIZE : 0   // posted; the loop closes after the body
    }

    func streamOnWritable(_ callback: (@Sendable () -> Void)?) {
        watchedWritable.store(true, ordering: .releasing)
        d.setOnWritable(callback)
    }
}

extension UnsafeMutablePointer where Pointee == ConnState {
    /// Renders a stream's ops (loop thread) with the ordinary writer, its
    /// state carried in `d` between drains.
    func renderOps(_ d: DeferredAnswer, _ ops: [StreamOp]) {
        if ops.isEmpty || d.ended { return }
        let saved = holdBegin()
        let writer = saveWriter()
        let closeAfter = pointee.flags & CF.closeAfter   // a later request's, not this one's
        pointee.flags &= ~CF.closeAfter
        if d.isStream {
            pointee.respState = d.wState
            pointee.respFlags = d.wFlags
            pointee.respStatus = d.wStatus
            pointee.respLengthLeft = d.wLengthLeft
            pointee.reqKeepAlive = d.wKeepAlive
        } else {
            pointee.respState = RespState.none
            pointee.respStatus = 0
            pointee.respLengthLeft = 0
            pointee.respFlags = d.noBody ? RespFlag.noBody : 0
            pointee.reqKeepAlive = d.keepAlive
        }
        pointee.reqMinor = d.reqMinor
        for op in ops {
            switch op {
            case .head(let status, let headers, let length):
                pointee.loop.lateRemove(d)   // the handler timeout applies until the head
                d.isStream = true
                let response = Response(sink: OpaquePointer(self), functions: pointee.loop.pointee.responseFunctions)
                if response.begin(status: status) {
                    var hasLength = false
                    for (name, value) in headers {
                        if name.lowercased() == "content-length" { hasLength = true }
                        response.header(name, value)
                    }
                    if let length, !hasLength && status != 204 && status != 304 {
                        response.header("Content-Length", String(length))
                    }
                    _ = writeBody(nil, 0)   // the head goes out now
                } else {
                    response.send(status: 500, body: "Internal Server Error\n")
                    d.ended = true
                }
            case .body(let bytes):
                d.renderedTotal += bytes.count
                if bytes.withUnsafeBytes({ writeBody($0.baseAddress, $0.count) }) != 0 {
                    pointee.flags |= CF.closeAfter   // the body cannot go on: end with the connection
                    d.ended = true
                }
            case .end(let trailers):
                if pointee.respFlags & RespFlag.chunked != 0 && pointee.respState == RespState.body {
                    var text = "0\r\n"
                    for (name, value) in trailers where isTrailerSafe(name, value) { text += "\(name): \(value)\r\n" }
                    text += "\r\n"
                    var t = text
                    if !t.withUTF8({ outAppend($0.baseAddress, $0.count) }) { pointee.flags |= CF.closeAfter }
                    pointee.respState = RespState.done
                } else if end() != 0 {
                    pointee.flags |= CF.closeAfter   // short of Content-Length
                }
                d.ended = true
            case .abort:
                pointee.flags |= CF.closeAfter   // the client sees a truncated body
                d.ended = true
            }
            if d.ended { break }
        }
        d.wState = pointee.respState
        d.wFlags = pointee.respFlags
        d.wStatus = pointee.respStatus
        d.wLengthLeft = pointee.respLengthLeft
        d.wKeepAlive = pointee.reqKeepAlive
        d.closeAfter |= pointee.flags & CF.closeAfter
        pointee.flags = (pointee.flags & ~CF.closeAfter) | closeAfter
        restoreWriter(writer, for: d)
        holdAppend(saved, into: d)
        if d.ended { d.ready = true }
    }

    /// The stream at the front: publish its level; run onWritable when a
    /// producer waits and the level is back at the low mark.
    func publishWritability() {
        guard let u = pointee.deferHead else { return }
        let d = u.takeUnretainedValue()
        guard d.isStream && !d.ended else { return }
        let part = pointee.outBytes + d.outBytes - d.renderedTotal
        d.loopPart.store(part, ordering: .sequentiallyConsistent)
        if d.wantWritable.load(ordering: .sequentiallyConsistent)
            && d.postedTotal.load(ordering: .sequentiallyConsistent) + part <= d.lowWater {
            d.runWritable()
        }
    }
}

extension DeferredAnswer {
    /// The loop thread: a producer told to wait may write again (or learns
    /// the peer went at its next write).
    func runWritable() {
        guard wantWritable.exchange(false, ordering: .sequentiallyConsistent) else { return }
        onWritable?()
    }

    /// The peer went: a registered producer hears it once, waiting for room
    /// or not (so an async handler busy elsewhere can be cancelled).
    func runPeerGone() {
        wantWritable.store(false, ordering: .sequentiallyConsistent)
        onWritable?()
    }
}

/// A trailer the writer puts on the wire (a token name, no CR/LF in the value;
/// no framing fields).
private func isTrailerSafe(_ name: String, _ value: String) -> Bool {
    let lower = name.lowercased()
    if name.isEmpty || lower == "content-length" || lower == "transfer-encoding" { return false }
    for c in name.utf8 where !(c > 32 && c < 127 && c != UInt8(ascii: ":")) { return false }
    for c in value.utf8 where c == 13 || c == 10 || c == 0 { return false }
    return true
}
