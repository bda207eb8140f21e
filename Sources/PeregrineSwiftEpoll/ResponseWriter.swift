// ResponseWriter.swift: the response writer (the port of csrc/response.c).
// Appends straight into the connection's send queue: status line, Server
// and Date (formatted once per second per loop), application headers, then
// the body framed by Content-Length, chunked encoding (HTTP/1.1) or
// connection close (HTTP/1.0).
//
// `ResponseWriterFunctions` holds @convention(c) functions taking an opaque
// sink: here the sink is the connection record itself (a ConnPtr), so a
// handler's `response.send(...)` is one indirect call with no retain, no
// release and no allocation.

import Glibc
import PeregrineCore
import Synchronization

/// Response writer states (RESP_*).
enum RespState {
    static let none: UInt8 = 0
    static let head: UInt8 = 1
    static let body: UInt8 = 2
    static let done: UInt8 = 3
}

/// Response flags.
enum RespFlag {
    static let hasLength: UInt8 = 1 << 0 // Content-Length written by the application
    static let chunked: UInt8 = 1 << 1   // body framed with chunked encoding
    static let noBody: UInt8 = 1 << 2    // HEAD request or 1xx/204/304: body bytes not sent
    static let connHeader: UInt8 = 1 << 3 // the application wrote its own Connection header
    static let marked: UInt8 = 1 << 4     // begun inside the current handler: respMark* say where
}

// MARK: - Small byte helpers

@inline(__always)
private func copyStatic(_ to: UnsafeMutableRawPointer, _ s: StaticString) -> Int {
    memcpy(to, s.utf8Start, s.utf8CodeUnitCount)
    return s.utf8CodeUnitCount
}

/// A body up to this size goes into the head's reservation (one copy, one
/// reservation); a larger one is appended after it (PRG_SEND_INLINE_BODY).
private let sendInlineBody = 1024

/// memcpy for the short variable lengths of a response head (the Server and
/// Date lines, a content type, a small body): word moves, no call.
@inline(__always)
private func copyShort(_ dst: UnsafeMutableRawPointer, _ src: UnsafeRawPointer, _ n: Int) {
    if n > 64 {
        memcpy(dst, src, n)
    } else if n >= 8 {
        var i = 0
        while i &+ 8 < n {
            dst.storeBytes(of: src.loadUnaligned(fromByteOffset: i, as: UInt64.self), toByteOffset: i, as: UInt64.self)
            i &+= 8
        }
        dst.storeBytes(of: src.loadUnaligned(fromByteOffset: n &- 8, as: UInt64.self), toByteOffset: n &- 8, as: UInt64.self)
    } else {
        var i = 0
        while i < n {
            dst.storeBytes(of: src.load(fromByteOffset: i, as: UInt8.self), toByteOffset: i, as: UInt8.self)
            i &+= 1
        }
    }
}

/// a and b equal over n <= sendCTMax bytes: word compares, no call.
@inline(__always)
private func equalShort(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) -> Bool {
    if n < 8 {
        var i = 0
        while i < n {
            if a.load(fromByteOffset: i, as: UInt8.self) != b.load(fromByteOffset: i, as: UInt8.self) { return false }
            i &+= 1
        }
        return true
    }
    var i = 0
    while i &+ 8 < n {
        if a.loadUnaligned(fromByteOffset: i, as: UInt64.self) != b.loadUnaligned(fromByteOffset: i, as: UInt64.self) {
            return false
        }
        i &+= 8
    }
    return a.loadUnaligned(fromByteOffset: n &- 8, as: UInt64.self) == b.loadUnaligned(fromByteOffset: n &- 8, as: UInt64.self)
}

/// The longest Content-Type the loop's sendHead keeps (PRG_SEND_CT_MAX).
let sendCTMax = 64

extension UnsafeMutablePointer where Pointee == LoopState {
    /// The length of the loop's sendHead for this (checked) Content-Type of
    /// at most sendCTMax bytes; rebuilt when the type or the Date changed.
    @inline(__always)
    func sendHeadLength(_ ct: UnsafeRawPointer, _ ctLen: Int, sameType: Bool) -> Int {
        if sameType && pointee.sendHeadLen != 0 && pointee.sendHeadSecond == pointee.dateSecond {
            return pointee.sendHeadLen
        }
        return rebuildSendHead(ct, ctLen)
    }

    @inline(never)
    func rebuildSendHead(_ ct: UnsafeRawPointer, _ ctLen: Int) -> Int {
        let p = pointee.sendHead
        var at = copyStatic(p, "HTTP/1.1 200 OK\r\n")
        memcpy(p + at, pointee.serverLine, pointee.serverLineLen)
        at &+= pointee.serverLineLen
        memcpy(p + at, pointee.dateLine, pointee.dateLen)
        at &+= pointee.dateLen
        at &+= copyStatic(p + at, "Content-Type: ")
        memcpy(p + at, ct, ctLen)
        at &+= ctLen
        at &+= copyStatic(p + at, "\r\nContent-Length: ")
        pointee.sendHeadLen = at
        pointee.sendHeadSecond = pointee.dateSecond
        memcpy(pointee.sendCT, ct, ctLen)
        pointee.sendCTLen = ctLen
        return at
    }
}

/// Decimal digits of v at `out`; returns how many.
@inline(__always)
private func putUInt(_ out: UnsafeMutableRawPointer, _ value: UInt64) -> Int {
    if value < 100 {   // the usual small body: no loop
        if value < 10 {
            out.storeBytes(of: UInt8(truncatingIfNeeded: 48 &+ value), as: UInt8.self)
            return 1
        }
        out.storeBytes(of: UInt8(truncatingIfNeeded: 48 &+ value / 10), as: UInt8.self)
        out.storeBytes(of: UInt8(truncatingIfNeeded: 48 &+ value % 10), toByteOffset: 1, as: UInt8.self)
        return 2
    }
    var v = value
    var n = 0
    repeat { n += 1; v /= 10 } while v != 0
    v = value
    var i = n
    repeat {
        i -= 1
        out.storeBytes(of: UInt8(truncatingIfNeeded: 48 &+ v % 10), toByteOffset: i, as: UInt8.self)
        v /= 10
    } while i > 0
    return n
}

/// RFC 9110 tchar.
@inline(__always)
private func isTokenChar(_ c: UInt8) -> Bool {
    switch c {
    case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
    case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
         UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
         UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
        return true
    default: return false
    }
}

private func isToken(_ s: UnsafeRawPointer?, _ n: Int) -> Bool {
    guard let s, n > 0 else { return false }
    for i in 0..<n where !isTokenChar(s.load(fromByteOffset: i, as: UInt8.self)) { return false }
    return true
}

/// Whether any of the n bytes at s is a CR, LF or NUL.
private func hasUnsafeByte(_ s: UnsafeRawPointer, _ n: Int) -> Bool {
    var i = 0
    while i < n {
        let c = s.load(fromByteOffset: i, as: UInt8.self)
        if c == 13 || c == 10 || c == 0 { return true }
        i &+= 1
    }
    return false
}

/// Whether any byte of the word at s is below 0x0E (CR, LF and NUL are).
@inline(__always)
private func below0E(_ s: UnsafeRawPointer) -> Bool {
    let x = s.loadUnaligned(as: UInt64.self)
    return (x &- 0x0E0E_0E0E_0E0E_0E0E) & ~x & 0x8080_8080_8080_8080 != 0
}

/// Header values and reason phrases: no CR, LF or NUL (response splitting).
/// Eight bytes a step (the last step may overlap the one before) while none
/// of them is below 0x0E; a flagged word is checked byte by byte (as
/// response.c's is_safe_text).
@inline(__always)
private func isSafeText(_ s: UnsafeRawPointer?, _ n: Int) -> Bool {
    guard let s else { return n == 0 }
    if n < 8 { return !hasUnsafeByte(s, n) }
    var i = 0
    while i &+ 8 <= n {
        if below0E(s + i) && hasUnsafeByte(s + i, 8) { return false }
        i &+= 8
    }
    return i == n || !below0E(s + (n &- 8)) || !hasUnsafeByte(s + (n &- 8), 8)
}

/// ASCII case-insensitive equality with a lower-case literal.
private func equalsLower(_ a: UnsafeRawPointer?, _ n: Int, _ lit: StaticString) -> Bool {
    guard n == lit.utf8CodeUnitCount else { return false }
    guard let a else { return n == 0 }
    let l = lit.utf8Start
    for i in 0..<n {
        var x = a.load(fromByteOffset: i, as: UInt8.self)
        if x >= 65 && x <= 90 { x += 32 }
        if x != l[i] { return false }
    }
    return true
}

/// True when the comma-separated value holds the token (case-insensitive).
private func hasToken(_ v: UnsafeRawPointer?, _ n: Int, _ tok: StaticString) -> Bool {
    guard let v else { return false }
    @inline(__always) func at(_ i: Int) -> UInt8 { v.load(fromByteOffset: i, as: UInt8.self) }
    var i = 0
    while i < n {
        while i < n && (at(i) == 32 || at(i) == 9 || at(i) == 44) { i += 1 }
        let start = i
        while i < n && at(i) != 44 { i += 1 }
        var end = i
        while end > start && (at(end - 1) == 32 || at(end - 1) == 9) { end -= 1 }
        if equalsLower(v + start, end - start, tok) { return true }
    }
    return false
}

@inline(__always)
private func statusHasNoBody(_ status: Int32) -> Bool {
    (status >= 100 && status < 200) || status == 204 || status == 304
}

/// Standard reason phrase for a status ("Unknown" if none), as prg_status_reason.
func statusReason(_ status: Int32) -> StaticString {
    switch status {
    case 100: return "Continue"
    case 101: return "Switching Protocols"
    case 200: return "OK"
    case 201: return "Created"
    case 202: return "Accepted"
    case 204: return "No Content"
    case 206: return "Partial Content"
    case 301: return "Moved Permanently"
    case 302: return "Found"
    case 303: return "See Other"
    case 304: return "Not Modified"
    case 307: return "Temporary Redirect"
    case 308: return "Permanent Redirect"
    case 400: return "Bad Request"
    case 401: return "Unauthorized"
    case 403: return "Forbidden"
    case 404: return "Not Found"
    case 405: return "Method Not Allowed"
    case 408: return "Request Timeout"
    case 409: return "Conflict"
    case 411: return "Length Required"
    case 413: return "Content Too Large"
    case 414: return "URI Too Long"
    case 415: return "Unsupported Media Type"
    case 416: return "Range Not Satisfiable"
    case 417: return "Expectation Failed"
    case 426: return "Upgrade Required"
    case 431: return "Request Header Fields Too Large"
    case 500: return "Internal Server Error"
    case 501: return "Not Implemented"
    case 502: return "Bad Gateway"
    case 503: return "Service Unavailable"
    case 504: return "Gateway Timeout"
    case 505: return "HTTP Version Not Supported"
    default: return "Unknown"
    }
}

// MARK: - Date, once per second

/// Two decimal digits of v at line + at.
@inline(__always)
private func putTwoDigits(_ line: UnsafeMutableRawPointer, _ at: Int, _ v: Int32) -> Int {
    line.storeBytes(of: UInt8(truncatingIfNeeded: 48 + v / 10 % 10), toByteOffset: at, as: UInt8.self)
    line.storeBytes(of: UInt8(truncatingIfNeeded: 48 + v % 10), toByteOffset: at + 1, as: UInt8.self)
    return at + 2
}

/// "Date: Mon, 23 Nov 2026 12:57:34 GMT\r\n" into `line` (64 bytes); returns
/// its length. Once per second per loop, from the loop's thread: no
/// Foundation, no allocation.
func formatDateLine(_ line: UnsafeMutableRawPointer, _ now: Int) -> Int {
    let days: StaticString = "SunMonTueWedThuFriSat"
    let months: StaticString = "JanFebMarAprMayJunJulAugSepOctNovDec"
    var t = time_t(now)
    var tm = Glibc.tm()
    gmtime_r(&t, &tm)
    var at = copyStatic(line, "Date: ")
    memcpy(line + at, days.utf8Start + 3 * Int(tm.tm_wday), 3)
    at += 3
    at += copyStatic(line + at, ", ")
    at = putTwoDigits(line, at, tm.tm_mday)
    at += copyStatic(line + at, " ")
    memcpy(line + at, months.utf8Start + 3 * Int(tm.tm_mon), 3)
    at += 3
    at += copyStatic(line + at, " ")
    let year = tm.tm_year + 1900
    at = putTwoDigits(line, at, year / 100)
    at = putTwoDigits(line, at, year % 100)
    at += copyStatic(line + at, " ")
    at = putTwoDigits(line, at, tm.tm_hour)
    at += copyStatic(line + at, ":")
    at = putTwoDigits(line, at, tm.tm_min)
    at += copyStatic(line + at, ":")
    at = putTwoDigits(line, at, tm.tm_sec)
    at += copyStatic(line + at, " GMT\r\n")
    return at
}

// MARK: - The writer

extension UnsafeMutablePointer where Pointee == ConnState {
    /// Before each handler call (prg_response_reset).
    @inline(__always)
    func responseReset(_ req: ParsedRequest) {
        pointee.respState = RespState.none
        pointee.respStatus = 0
        pointee.respLengthLeft = 0
        pointee.reqMinor = UInt8(truncatingIfNeeded: req.versionMinor)
        pointee.reqKeepAlive = req.keepAlive
        let m = req.method
        let isHead = m.count == 4 && m.baseAddress.unsafelyUnwrapped.loadUnaligned(as: UInt32.self) == 0x4441_4548 // "HEAD"
        pointee.respFlags = isHead ? RespFlag.noBody : 0
    }

    /// Checks that a final answer may begin and marks where it begins (for
    /// `replace`); returns the reason phrase and the room the status line,
    /// Server and Date lines take (see putStatus), or nil when it may not
    /// begin. A nil reason with status 200 is "OK".
    @inline(__always)
    func beginStatus(_ status: Int32, _ reasonIn: UnsafeRawPointer?, _ reasonLenIn: Int)
        -> (reason: UnsafeRawPointer?, reasonLen: Int, need: Int)? {
        // 1xx are interim answers: taking one as the final answer would pair
        // every later response on the connection with the wrong request.
        if pointee.respState != RespState.none || status < 200 || status > 999 { return nil }
        var reason = reasonIn
        var reasonLen = reasonLenIn
        if reason == nil {
            if status != 200 {
                let s = statusReason(status)
                reason = UnsafeRawPointer(s.utf8Start)
                reasonLen = s.utf8CodeUnitCount
            } else {
                reasonLen = 2
            }
        } else if reasonLen < 0 || !isSafeText(reason, reasonLen) {
            return nil
        }
        markBegin()
        let loop = pointee.loop
        return (reason, reasonLen, 15 &+ reasonLen &+ loop.pointee.serverLineLen &+ loop.pointee.dateLen)
    }

    /// Marks where the answer begins, for `replace` (inside the handler).
    @inline(__always)
    func markBegin() {
        if pointee.flags & CF.inCallback != 0 {
            let loop = pointee.loop
            loop.pointee.respMarkConn = self
            loop.pointee.respMarkChunk = pointee.outTail
            loop.pointee.respMarkEnd = pointee.outTail?.pointee.end ?? 0
            pointee.respFlags |= RespFlag.marked
        }
    }

    /// Writes what beginStatus sized at p; returns its length.
    @inline(__always)
    func putStatus(_ p: UnsafeMutableRawPointer, _ status: Int32, _ reason: UnsafeRawPointer?, _ reasonLen: Int) -> Int {
        var at: Int
        if let reason {
            _ = copyStatic(p, "HTTP/1.1 ")
            p.storeBytes(of: UInt8(truncatingIfNeeded: 48 + status / 100), toByteOffset: 9, as: UInt8.self)
            p.storeBytes(of: UInt8(truncatingIfNeeded: 48 + status / 10 % 10), toByteOffset: 10, as: UInt8.self)
            p.storeBytes(of: UInt8(truncatingIfNeeded: 48 + status % 10), toByteOffset: 11, as: UInt8.self)
            p.storeBytes(of: 32 as UInt8, toByteOffset: 12, as: UInt8.self)
            copyShort(p + 13, reason, reasonLen)
            at = 13 &+ reasonLen
            p.storeBytes(of: 0x0A0D as UInt16, toByteOffset: at, as: UInt16.self) // CRLF
            at &+= 2
        } else {
            at = copyStatic(p, "HTTP/1.1 200 OK\r\n")   // constant length: word moves
        }
        let loop = pointee.loop
        let serverLen = loop.pointee.serverLineLen, dateLen = loop.pointee.dateLen
        copyShort(p + at, loop.pointee.serverLine, serverLen)
        at &+= serverLen
        copyShort(p + at, loop.pointee.dateLine, dateLen)
        pointee.respStatus = status
        pointee.respState = RespState.head
        if statusHasNoBody(status) { pointee.respFlags |= RespFlag.noBody }
        return at &+ dateLen
    }

    /// Status line plus the Server and Date lines, in one reservation.
    @inline(__always)
    func writeStatus(_ status: Int32, _ reasonIn: UnsafeRawPointer?, _ reasonLenIn: Int) -> Int32 {
        guard let head = beginStatus(status, reasonIn, reasonLenIn) else { return -1 }
        guard let p = outReserve(head.need) else { return -1 }
        outCommit(putStatus(p, status, head.reason, head.reasonLen))
        return 0
    }

    /// The keep-alive decision and the Connection header it owes (none when
    /// the application wrote its own "close"). HTTP/1.0 keep-alive must be
    /// confirmed. Writes at most 24 bytes.
    @inline(__always)
    func putConnection(_ out: UnsafeMutableRawPointer) -> Int {
        // A graceful shutdown began while the request was parsed or its
        // handler ran (a handler that blocks): it is the last one.
        let closing = !pointee.reqKeepAlive || pointee.flags & CF.closeAfter != 0
            || pointee.loop.pointee.drainSignal._withUnsafeGuaranteedRef { $0.deadline.load(ordering: .relaxed) != 0 }
        // A streamed body still arriving is read to its end first (the
        // stream's end closes, from reqKeepAlive).
        if closing && pointee.flags & CF.streaming != 0 { pointee.reqKeepAlive = false }
        else if closing { pointee.flags |= CF.closeAfter }
        if pointee.respFlags & RespFlag.connHeader != 0 { return 0 }
        if closing { return copyStatic(out, "Connection: close\r\n") }
        if pointee.reqMinor == 0 { return copyStatic(out, "Connection: keep-alive\r\n") }
        return 0
    }

    /// Framing, Connection and the blank line.
    func endHead() -> Int32 {
        guard let buf = outReserve(64) else { return -1 }
        var n = 0
        let bodyAllowed = !statusHasNoBody(pointee.respStatus)
        if pointee.respFlags & RespFlag.hasLength == 0 && bodyAllowed && pointee.respFlags & RespFlag.noBody == 0 {
            if pointee.reqMinor >= 1 {
                n = copyStatic(buf, "Transfer-Encoding: chunked\r\n")
                pointee.respFlags |= RespFlag.chunked
            } else {
                pointee.flags |= CF.closeAfter // HTTP/1.0 without a length: the close ends the body
            }
        }
        n += putConnection(buf + n)
        n += copyStatic(buf + n, "\r\n")
        outCommit(n)
        pointee.respState = RespState.body
        return 0
    }

    func respond(_ status: Int32, _ reason: UnsafeRawPointer?, _ reasonLen: Int) -> Int32 {
        if pointee.flags & CF.closed != 0 { return -1 }
        return writeStatus(status, reason, reasonLen)
    }

    func writeHeader(_ name: UnsafeRawPointer?, _ nameLen: Int, _ value: UnsafeRawPointer?, _ valueLen: Int) -> Int32 {
        if pointee.respState != RespState.head { return -1 }
        if nameLen < 0 || valueLen < 0 || !isToken(name, nameLen) || !isSafeText(value, valueLen) { return -1 }
        // Framing is the writer's job: the application declares a length or
        // lets the writer chunk, but never frames by hand.
        if equalsLower(name, nameLen, "transfer-encoding") { return -1 }
        if equalsLower(name, nameLen, "content-length") {
            if pointee.respFlags & RespFlag.hasLength != 0 || valueLen == 0 || valueLen > 18 || pointee.respStatus == 204 {
                return -1
            }
            var v: Int64 = 0
            let value = value.unsafelyUnwrapped
            for i in 0..<valueLen {
                let d = value.load(fromByteOffset: i, as: UInt8.self)
                if d < 48 || d > 57 { return -1 }
                v = v * 10 + Int64(d - 48)
            }
            pointee.respFlags |= RespFlag.hasLength
            pointee.respLengthLeft = v
        } else if equalsLower(name, nameLen, "connection") {
            // Keep-alive is the writer's decision; the application may only
            // ask to close.
            if pointee.respFlags & RespFlag.connHeader != 0 || !hasToken(value, valueLen, "close") { return -1 }
            pointee.respFlags |= RespFlag.connHeader
            pointee.reqKeepAlive = false
        }
        guard let p = outReserve(nameLen + valueLen + 4) else { return -1 }
        memcpy(p, name.unsafelyUnwrapped, nameLen)
        p.storeBytes(of: 0x203A as UInt16, toByteOffset: nameLen, as: UInt16.self) // ": "
        if valueLen > 0 { memcpy(p + nameLen + 2, value.unsafelyUnwrapped, valueLen) }
        p.storeBytes(of: 0x0A0D as UInt16, toByteOffset: nameLen + 2 + valueLen, as: UInt16.self)
        outCommit(nameLen + valueLen + 4)
        return 0
    }

    func writeBody(_ data: UnsafeRawPointer?, _ n: Int) -> Int32 {
        if pointee.respState == RespState.head && endHead() != 0 { return -1 }
        if pointee.respState != RespState.body || n < 0 { return -1 }
        if pointee.respFlags & RespFlag.hasLength != 0 {
            if Int64(n) > pointee.respLengthLeft { return -1 }
            pointee.respLengthLeft -= Int64(n)
        }
        if pointee.respFlags & RespFlag.noBody != 0 || n == 0 { return 0 }
        if pointee.respFlags & RespFlag.chunked != 0 {
            guard let line = outReserve(20) else { return -1 }
            var digits = 0
            var v = n
            repeat { digits += 1; v >>= 4 } while v != 0
            v = n
            for i in stride(from: digits - 1, through: 0, by: -1) {
                let h = UInt8(truncatingIfNeeded: v & 15)
                line.storeBytes(of: h < 10 ? 48 + h : 87 + h, toByteOffset: i, as: UInt8.self)
                v >>= 4
            }
            line.storeBytes(of: 0x0A0D as UInt16, toByteOffset: digits, as: UInt16.self)
            outCommit(digits + 2)
            var crlf: UInt16 = 0x0A0D
            if !outAppend(data, n) || !outAppend(&crlf, 2) { return -1 }
            return 0
        }
        return outAppend(data, n) ? 0 : -1
    }

    /// A file range as body bytes (prg_write_file): needs a declared
    /// Content-Length with room for it; takes `fd` whatever it returns.
    func writeFile(_ fd: Int32, _ offset: Int64, _ length: Int64) -> Int32 {
        var ok = fd >= 0 && offset >= 0 && length >= 0 && pointee.flags & CF.closed == 0
            && (pointee.respState == RespState.head || pointee.respState == RespState.body)
            && pointee.respFlags & RespFlag.hasLength != 0 && length <= pointee.respLengthLeft
            && pointee.respFlags & RespFlag.chunked == 0
        if ok && pointee.respState == RespState.head && endHead() != 0 { ok = false }
        if !ok {
            if fd >= 0 { _ = close(fd) }
            return -1
        }
        pointee.respLengthLeft -= length
        if pointee.respFlags & RespFlag.noBody != 0 || length == 0 {
            _ = close(fd) // HEAD, 304: the length was declared, no byte is sent
            return 0
        }
        return outAppendFile(fd, offset, length) ? 0 : -1
    }

    func end() -> Int32 {
        if pointee.respState == RespState.head {
            if pointee.respFlags & RespFlag.hasLength == 0 && !statusHasNoBody(pointee.respStatus)
                && pointee.respFlags & RespFlag.noBody == 0 {
                // Nothing was written: an empty fixed-length body beats a chunked one.
                let name: StaticString = "Content-Length", zero: StaticString = "0"
                if writeHeader(name.utf8Start, name.utf8CodeUnitCount, zero.utf8Start, 1) != 0 { return -1 }
            }
            if endHead() != 0 { return -1 }
        }
        if pointee.respState != RespState.body { return -1 }
        pointee.respState = RespState.done
        if pointee.respFlags & RespFlag.chunked != 0 {
            let last: StaticString = "0\r\n\r\n"
            return outAppend(last.utf8Start, 5) ? 0 : -1
        }
        if pointee.respFlags & RespFlag.hasLength != 0 && pointee.respLengthLeft != 0
            && pointee.respFlags & RespFlag.noBody == 0 {
            // The body is shorter than declared: the client would wait for the
            // rest forever, so the only honest end is closing the connection.
            pointee.flags |= CF.closeAfter
            pointee.closeReason = CloseReason.error
            return -1
        }
        return 0
    }

    /// One call: status, Content-Type (may be nil), Content-Length, body, end.
    /// The head and a small body go into one reservation.
    @inline(__always)
    func send(_ status: Int32, _ contentType: UnsafeRawPointer?, _ ctLen: Int,
              _ body: UnsafeRawPointer?, _ n: Int) -> Int32 {
        if pointee.flags & CF.closed != 0 || n < 0 || (body == nil && n > 0) { return -1 }
        let loop = pointee.loop
        // The type the loop's sendHead holds was checked when it was kept.
        let sameType = status == 200 && contentType != nil && ctLen == loop.pointee.sendCTLen &&
            equalShort(contentType.unsafelyUnwrapped, loop.pointee.sendCT, ctLen)
        if contentType != nil && !sameType && (ctLen < 0 || !isSafeText(contentType, ctLen)) { return -1 }
        let bodyAllowed = !statusHasNoBody(status)
        let bodySent = bodyAllowed && pointee.respFlags & RespFlag.noBody == 0 && n > 0
        let inlineBody = bodySent && n <= sendInlineBody
        var at: Int
        let p: UnsafeMutableRawPointer
        if status == 200, let ct = contentType, ctLen <= sendCTMax {
            // The usual answer starts from the loop's prebuilt head, up to
            // "Content-Length: " (beginStatus's checks for a 200: the state).
            if pointee.respState != RespState.none { return -1 }
            markBegin()
            let prebuilt = loop.sendHeadLength(ct, ctLen, sameType: sameType)
            guard let q = outReserve(prebuilt &+ 64 &+ (inlineBody ? n : 0)) else { return -1 }
            p = q
            pointee.respStatus = 200
            pointee.respState = RespState.head
            memcpy(p, loop.pointee.sendHead, prebuilt)
            at = prebuilt &+ putUInt(p + prebuilt, UInt64(n))
            p.storeBytes(of: 0x0A0D as UInt16, toByteOffset: at, as: UInt16.self)
            at &+= 2
        } else {
            // Status line, Server, Date, Content-Type, Content-Length,
            // Connection (and a small body).
            guard let head = beginStatus(status, nil, 0) else { return -1 }
            let need = head.need &+ (contentType != nil ? 16 &+ ctLen : 0) &+ 64 &+ (inlineBody ? n : 0)
            guard let q = outReserve(need) else { return -1 }
            p = q
            at = putStatus(p, status, head.reason, head.reasonLen)
            if let ct = contentType {
                at &+= copyStatic(p + at, "Content-Type: ")
                copyShort(p + at, ct, ctLen)
                at &+= ctLen
                p.storeBytes(of: 0x0A0D as UInt16, toByteOffset: at, as: UInt16.self)
                at &+= 2
            }
            if bodyAllowed {
                at &+= copyStatic(p + at, "Content-Length: ")
                at &+= putUInt(p + at, UInt64(n))
                p.storeBytes(of: 0x0A0D as UInt16, toByteOffset: at, as: UInt16.self)
                at &+= 2
            }
        }
        at &+= putConnection(p + at)
        p.storeBytes(of: 0x0A0D as UInt16, toByteOffset: at, as: UInt16.self)
        at &+= 2
        if inlineBody {
            copyShort(p + at, body.unsafelyUnwrapped, n)
            at &+= n
        }
        outCommit(at)
        pointee.respState = RespState.done
        if bodySent && !inlineBody { return outAppend(body, n) ? 0 : -1 }
        return 0
    }

    /// After the handler: end what it began, or 500 when it did not answer.
    @inline(__always)
    func finishDefault() -> Int32 {
        if pointee.flags & CF.closed != 0 { return -1 }
        switch pointee.respState {
        case RespState.none:
            // The handler returned without answering: say so rather than hang.
            let ct: StaticString = "text/plain", msg: StaticString = "handler did not respond\n"
            return send(500, ct.utf8Start, ct.utf8CodeUnitCount, msg.utf8Start, msg.utf8CodeUnitCount)
        case RespState.head, RespState.body:
            return end()
        default:
            return 0
        }
    }

    /// Error answer with Connection: close.
    func sendError(_ status: Int32) -> Int32 {
        let reason = statusReason(status)
        var body: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        pointee.respState = RespState.none
        pointee.respFlags = 0
        pointee.reqMinor = 1
        pointee.reqKeepAlive = false // every error answer closes the connection
        return withUnsafeMutableBytes(of: &body) { b in
            let len = min(reason.utf8CodeUnitCount, b.count - 2)
            memcpy(b.baseAddress!, reason.utf8Start, len)
            b[len] = 10
            let ct: StaticString = "text/plain"
            return send(status, ct.utf8Start, ct.utf8CodeUnitCount, b.baseAddress, len + 1)
        }
    }

    /// Takes back the response begun in this handler (none of it has left)
    /// and answers `status` (400...599) with Connection: close instead
    /// (prg_response_replace).
    func replace(_ status: Int32) -> Int32 {
        let loop = pointee.loop
        guard pointee.flags & (CF.closed | CF.inCallback) == CF.inCallback,
              pointee.respFlags & RespFlag.marked != 0, loop.pointee.respMarkConn == self,
              (400...599).contains(status) else { return -1 }
        var removed = 0
        var cut: ChunkPtr?
        if let keep = loop.pointee.respMarkChunk {
            cut = keep.pointee.next
            removed = Int(keep.pointee.end - loop.pointee.respMarkEnd)
            keep.pointee.end = loop.pointee.respMarkEnd
            keep.pointee.next = nil
            pointee.outTail = keep
        } else {
            cut = pointee.outHead
            pointee.outHead = nil
            pointee.outTail = nil
        }
        while let k = cut {
            cut = k.pointee.next
            // A file link counts its range (its own end and cap are 0).
            removed += k.pointee.isFile != 0 ? Int(k.fileRange.pointee.left) : Int(k.pointee.end - k.pointee.start)
            chunkRelease(k)
        }
        pointee.outBytes -= removed
        pointee.respStatus = 0
        return sendError(status)
    }

    func sendContinue() -> Int32 {
        let line: StaticString = "HTTP/1.1 100 Continue\r\n\r\n"
        return outAppend(line.utf8Start, line.utf8CodeUnitCount) ? 0 : -1
    }
}

// MARK: - The function table handed to handlers

enum SwiftResponseWriter {
    static func functions() -> ResponseWriterFunctions {
        ResponseWriterFunctions(
            respond: { sink, status, reason, len in
                ConnPtr(sink.unsafelyUnwrapped).respond(status, UnsafeRawPointer(reason), len)
            },
            writeHeader: { sink, name, nameLen, value, valueLen in
                ConnPtr(sink.unsafelyUnwrapped).writeHeader(UnsafeRawPointer(name), nameLen, UnsafeRawPointer(value), valueLen)
            },
            writeBody: { sink, data, n in
                ConnPtr(sink.unsafelyUnwrapped).writeBody(data, n)
            },
            end: { sink in
                ConnPtr(sink.unsafelyUnwrapped).end()
            },
            send: { sink, status, ct, ctLen, body, n in
                ConnPtr(sink.unsafelyUnwrapped).send(status, UnsafeRawPointer(ct), ctLen, body, n)
            },
            status: { sink in
                ConnPtr(sink.unsafelyUnwrapped).pointee.respStatus
            },
            writeFile: { sink, fd, offset, length in
                ConnPtr(sink.unsafelyUnwrapped).writeFile(fd, offset, length)
            },
            replace: { sink, status in
                ConnPtr(sink.unsafelyUnwrapped).replace(status)
            },
            deferAnswer: { sink, out in
                guard let out, let d = ConnPtr(sink.unsafelyUnwrapped).deferAnswer() else { return false }
                out.assumingMemoryBound(to: (any DeferredAnswerEngine)?.self).pointee = SwiftResponseStream(d)
                return true
            })
    }
}
