// HTTP1Parser.swift: the pure-Swift engine's HTTP/1.1 request parser.
//
// A faithful port of csrc/http1.c (incremental, zero-copy, strict RFC 9112),
// so the two engines answer every input alike: the same results, statuses,
// flags, slices and byte counts, with the checks made in the same order.
// Tests/ParserConformanceTests runs one table through both parsers.
//
// Design (as in C)
//   The parser keeps offsets only (never pointers), so the caller may move
//   the buffer between calls. Every check is made in byte order and depends
//   only on the bytes up to the position where it fires, so feeding the same
//   bytes whole, split at any offset or one byte at a time gives the same
//   result.
//
//   Phases (`state`; a negative state is a stored -status):
//     start        skipping leading empty lines (CRLF pairs)
//     requestLine  request line: looking for its LF (414 / 431 watch)
//     headerLines  header lines: looking for the empty line (431 watch)
//     bodyLength   head parsed, waiting for Content-Length bytes
//     bodyChunked  head parsed, decoding chunks in place
//     done         request complete (a repeated call returns the same)
//
//   The head is scanned once with memchr for LFs (each call only looks at
//   new bytes, `scanned`); every LF must follow a CR. When the empty line
//   is found the head is parsed in one pass. When the body completes in a
//   later call the (known valid) head is parsed again to derive the slices
//   for the current buffer address.
//
//   Differences from C in representation only: the request line offset has
//   its own field (C borrows chunk_left for it), and the chunk decoder's
//   phase and counter are two fields (C packs them in chunk_state). In the
//   trailer section `chunkLeft` counts trailer bytes, as in C.
//
//   No allocation, no class, no closure, no existential, no Foundation:
//   bytes are read through raw pointers and the character classes live in a
//   constant table, so a parse costs about what the C one does (bench/swift,
//   ParserBenchmarks, C/* and Swift/* side by side). Offsets are
//   bounded by the buffer's size, so the head scanner, the chunk decoder and
//   the list helpers use the wrapping operators (&+, &-): no overflow check
//   per byte. parseHead keeps plain arithmetic: with it the optimizer shapes
//   the header loops better (measured: about 8% faster on a browser head).
//
//   Limits must be non-negative (C's are size_t).

import Glibc
import PeregrineCore

// MARK: - Public types

/// Request limits (the C `prg_http_limits`): the shared `Limits`. Beyond
/// them the parser answers 414 (request line), 431 (header bytes or count,
/// trailers too) or 413 (body; answered from the head when Content-Length
/// already exceeds it).
public typealias HTTP1Limits = Limits

/// What the head said about framing and the connection (the C `PRG_REQ_*`
/// bits, same values).
public struct HTTP1RequestFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// The body arrived with `Transfer-Encoding: chunked` (decoded in place).
    public static let chunked = HTTP1RequestFlags(rawValue: 1 << 0)
    /// `Expect: 100-continue` on HTTP/1.1 (ignored on 1.0, RFC 9110 10.1.1).
    public static let expectContinue = HTTP1RequestFlags(rawValue: 1 << 1)
    /// The connection persists after the response (1.1 unless `close`;
    /// 1.0 only with `keep-alive` and without `close`).
    public static let keepAlive = HTTP1RequestFlags(rawValue: 1 << 2)
    /// The request carried a (valid) Content-Length.
    public static let hasContentLength = HTTP1RequestFlags(rawValue: 1 << 3)
}

/// One parsed request (the C `prg_request`). Zero-copy: every slice points
/// into the caller's buffer, so it is valid only until that buffer is
/// reused or moved.
public struct ParsedRequest {
    public var method: UnsafeRawBufferPointer
    public var target: UnsafeRawBufferPointer
    /// HTTP/1.<versionMinor>: 0 or 1.
    public var versionMinor: Int
    public var flags: HTTP1RequestFlags
    /// The `headers` table passed to `parse`: `headerCount` records of 32
    /// bytes in the C `prg_header` layout (name pointer, name length, value
    /// pointer, value length), names as sent, values trimmed of OWS.
    public var headers: UnsafeRawPointer?
    public var headerCount: Int
    /// Contiguous; a chunked body is decoded in place.
    public var body: UnsafeRawBufferPointer
    /// -1 when the request had no Content-Length.
    public var contentLength: Int64

    public init() {
        method = UnsafeRawBufferPointer(start: nil, count: 0)
        target = method
        versionMinor = 1
        flags = []
        headers = nil
        headerCount = 0
        body = method
        contentLength = -1
    }

    @inlinable public var chunked: Bool { flags.contains(.chunked) }
    @inlinable public var expectContinue: Bool { flags.contains(.expectContinue) }
    @inlinable public var keepAlive: Bool { flags.contains(.keepAlive) }
    @inlinable public var hasContentLength: Bool { flags.contains(.hasContentLength) }

    /// The handler's view of this request (no copy).
    @inlinable public var request: Request { request(remoteAddress: nil) }

    /// The handler's view of this request from the client at `remoteAddress`.
    @inlinable public func request(remoteAddress: SocketAddress?) -> Request {
        Request(method: method, target: target, versionMinor: versionMinor, keepAlive: keepAlive,
                headerTable: headers, headerCount: headerCount, body: body, remoteAddress: remoteAddress)
    }
}

/// Per-request parser state (the C `prg_http_parser`). Reset it before the
/// first byte of each request. Holds offsets only, so the buffer may move
/// between calls.
///
/// `parse` returns
/// - `> 0`: the request is complete, `request` describes it, and the value
///   is the number of bytes it used: the next pipelined request starts there;
/// - `0`: more bytes are needed: call again with the same prefix plus more
///   bytes (after `compact`, if it shrank the buffer). Once `headComplete`,
///   `flags` are known (to send 100 Continue);
/// - `< 0`: the request is malformed: -status (400, 413, 414, 417, 431, 501,
///   505). The error is sticky; the connection must close.
public struct HTTP1Parser: Sendable {
    /// Phase, stored narrow (with chunkPhase, in the last bytes): a
    /// connection record packs fields into what is left after it.
    @inlinable var state: Int {
        get { Int(state16) }
        set { state16 = Int16(truncatingIfNeeded: newValue) }   // a phase, or -status (3 digits)
    }
    /// Bytes of the head already searched for the blank line.
    public private(set) var scanned: Int
    /// Length of the head including the final CRLFCRLF (and any leading empty
    /// lines); 0 until found. The body starts there.
    public private(set) var headLength: Int
    /// Content-Length of the request, -1 when absent (known once `headComplete`).
    public private(set) var contentLength: Int64
    /// Known once `headComplete`; empty before.
    @inlinable public var flags: HTTP1RequestFlags { HTTP1RequestFlags(rawValue: UInt32(flags8)) }
    /// Offset of the request line (after skipped empty lines).
    var lineStart: Int
    /// Raw bytes consumed after the head.
    var bodyRead: Int
    /// Decoded bytes written (in place) after the head.
    var bodyDecoded: Int
    /// Bytes left in the current chunk; in the trailer section, trailer bytes so far.
    var chunkLeft: UInt64
    /// Chunk decoder counter: size-line bytes, or trailer fields.
    var chunkCount: Int
    /// Chunk decoder phase (`Chunk`).
    var chunkPhase: UInt8
    @usableFromInline var flags8: UInt8
    @usableFromInline var state16: Int16

    public init() {
        state16 = Int16(Phase.start)
        flags8 = 0
        scanned = 0
        headLength = 0
        contentLength = -1
        lineStart = 0
        bodyRead = 0
        bodyDecoded = 0
        chunkLeft = 0
        chunkPhase = Chunk.size
        chunkCount = 0
    }

    /// Ready for the first byte of the next request (`prg_http_parser_reset`).
    public mutating func reset() { self = HTTP1Parser() }

    /// True once the request head has been parsed successfully.
    @inlinable public var headComplete: Bool { state >= 3 /* Phase.bodyLength */ }
    /// The status of a stored error (400, 413, ...), nil when none.
    @inlinable public var errorStatus: Int? { state < 0 ? -state : nil }
    @inlinable public var expectContinue: Bool { flags.contains(.expectContinue) }
    @inlinable public var keepAlive: Bool { flags.contains(.keepAlive) }
    @inlinable public var chunked: Bool { flags.contains(.chunked) }

    // MARK: Entry point

    /// Parses one request from `buffer`, which starts at the first byte of
    /// the request and is writable (chunked bodies are decoded in place).
    /// `headers` must have room for `limits.maxHeaders` records of 32 bytes.
    /// Splitting the same bytes at any offset over several calls gives the
    /// same result (`prg_http_parse`).
    public mutating func parse(_ buffer: UnsafeMutableRawBufferPointer, limits: HTTP1Limits,
                               headers: UnsafeMutableRawPointer, into request: inout ParsedRequest) -> Int {
        if state < 0 { return state }
        guard let raw = buffer.baseAddress else { return 0 } // empty: nothing to look at
        let buf = Bytes(UnsafeRawPointer(raw))
        let len = buffer.count
        var hi = HeadInfo()
        var haveHead = false

        if state < Phase.bodyLength {
            // Fused fast path (as in http1.c): a new request whose bytes end in
            // CRLFCRLF (the usual case) is parsed in one pass, its lines checked
            // as they are parsed instead of scanned for first. Taken only when it
            // succeeds and scanHead would have passed no limit on the way (both
            // limit conditions grow with the byte count, so the request line's
            // LF and the last LF decide); anything else is parsed the slow way,
            // which answers in byte order.
            if state == Phase.start && scanned == 0 && len >= 4 && buf.load32(len &- 4) == Byte.crlfcrlf
                && parseHead(buf, 0, len, limits, headers, &hi) == 0
                && Self.headOverflow(buf, 0, hi.requestLineLF, true, limits) == 0
                && Self.headOverflow(buf, 0, hi.headEnd &- 1, false, limits) == 0 {
                scanned = hi.headEnd
                headLength = hi.headEnd
                lineStart = 0
            } else {
                var rc = scanHead(buf, len, limits)
                if rc <= 0 { return settle(rc) }
                rc = parseHead(buf, lineStart, headLength, limits, headers, &hi)
                if rc < 0 { return settle(rc) }
            }
            haveHead = true
            flags8 = UInt8(truncatingIfNeeded: hi.flags.rawValue)   // four flags: stored narrow
            contentLength = hi.contentLength
            chunkLeft = 0
            chunkPhase = Chunk.size
            chunkCount = 0
            bodyRead = 0
            bodyDecoded = 0
            if hi.flags.contains(.chunked) {
                state = Phase.bodyChunked
            } else if hi.contentLength > 0 {
                state = Phase.bodyLength
            } else {
                state = Phase.done
            }
        }

        if state == Phase.bodyLength {
            if len < headLength || Int64(len - headLength) < contentLength { return 0 }
            bodyRead = Int(contentLength)
            state = Phase.done
        } else if state == Phase.bodyChunked {
            let rc = decodeChunked(raw, len, limits)
            if rc <= 0 { return settle(rc) }
            state = Phase.done
        }

        // done
        if len < headLength + bodyRead { return 0 } // caller broke the contract (shorter buffer)
        if !haveHead {
            // The head was parsed in an earlier call and is known valid: parse
            // it again for the slices at the current buffer address.
            let rc = parseHead(buf, lineStart, headLength, limits, headers, &hi)
            if rc < 0 { return settle(rc) } // unreachable unless the caller changed the head
        }
        let base = UnsafeRawPointer(raw)
        request.method = UnsafeRawBufferPointer(start: base + hi.methodStart, count: hi.methodLength)
        request.target = UnsafeRawBufferPointer(start: base + hi.targetStart, count: hi.targetLength)
        request.versionMinor = hi.versionMinor
        request.flags = flags
        request.headers = UnsafeRawPointer(headers)
        request.headerCount = hi.headerCount
        request.body = UnsafeRawBufferPointer(start: base + headLength,
                                              count: flags.contains(.chunked) ? bodyDecoded : bodyRead)
        request.contentLength = contentLength
        return headLength + bodyRead
    }

    /// Chunked bodies are decoded in place, so the framing already decoded
    /// away leaves a gap between the decoded body and the unread input.
    /// Between calls that returned 0, this closes the gap by moving the
    /// unread bytes down, and returns how many bytes the request shrank by:
    /// the caller shortens its buffer by that much. Keeps the memory a body of
    /// many small chunks needs at its decoded size. Returns 0 when there is
    /// nothing to close (`prg_http_compact`).
    public mutating func compact(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        if state != Phase.bodyChunked || bodyRead == bodyDecoded { return 0 }
        let from = headLength + bodyRead
        let to = headLength + bodyDecoded
        guard from <= buffer.count, let raw = buffer.baseAddress else { return 0 } // contract broken
        memmove(raw + to, raw + from, buffer.count - from)
        // The decoder resumes at bodyRead: the raw bytes now follow the
        // decoded ones directly, and nothing else in the state is positional.
        bodyRead = bodyDecoded
        return from - to
    }

    @inline(__always)
    private mutating func settle(_ rc: Int) -> Int {
        if rc < 0 { state = rc }
        return rc
    }

    // MARK: Head scanning

    /// Limits on a head that has not ended yet: n bytes from the request line
    /// start are known and hold no LF beyond those already accepted. 414 fires
    /// once the request line content is certainly longer than maxRequestLine
    /// (at R+1 bytes when byte R is not the CR of its CRLF, else at R+2), 431
    /// once maxHeaderBytes bytes are here without the empty line. The one that
    /// fires at the smaller byte count wins (tie: 414). Both conditions are
    /// monotone in n, so a prefix never disagrees with the whole.
    @inline(__always)
    private static func headOverflow(_ buf: Bytes, _ start: Int, _ n: Int, _ inLine: Bool,
                                     _ lim: HTTP1Limits) -> Int {
        let r = lim.maxRequestLine, h = lim.maxHeaderBytes
        if inLine && n > r {
            var t = r + 1 // r < n, so no overflow
            if buf[start &+ r] == Byte.cr { t = t == Int.max ? Int.max : t + 1 }
            if n >= t && t <= h { return -414 }
        }
        if n >= h { return -431 }
        return 0
    }

    /// 1 when the head is complete (headLength set), 0 when more bytes are
    /// needed, a negative status on error.
    private mutating func scanHead(_ buf: Bytes, _ len: Int, _ lim: HTTP1Limits) -> Int {
        var s = scanned
        if len < s { return 0 } // caller broke the contract (shorter buffer): wait
        if state == Phase.start {
            while true {
                if s >= len {
                    scanned = s
                    return 0
                }
                let c = buf[s]
                if c == Byte.cr {
                    if len &- s < 2 {
                        scanned = s
                        return 0
                    }
                    if buf[s &+ 1] != Byte.lf { return -400 }
                    s &+= 2
                    if s > lim.maxHeaderBytes { return -400 } // endless empty lines
                    continue
                }
                if CharClass.of(c) & CharClass.tchar == 0 { return -400 } // bare LF, or not a method
                break
            }
            lineStart = s
            state = Phase.requestLine
        }
        let start = lineStart
        while s < len {
            guard let lf = memchr(buf.base + s, Int32(Byte.lf), len &- s) else { break }
            let j = UnsafeRawPointer(lf) - buf.base
            let e = Self.headOverflow(buf, start, j &- start, state == Phase.requestLine, lim)
            if e != 0 { return e }
            if buf[j &- 1] != Byte.cr { return -400 } // bare LF
            s = j &+ 1
            if state == Phase.requestLine {
                state = Phase.headerLines
            } else if buf[j &- 2] == Byte.lf {
                scanned = s
                headLength = s
                return 1
            }
        }
        scanned = len
        return Self.headOverflow(buf, start, len &- start, state == Phase.requestLine, lim)
    }

    // MARK: Chunked body, decoded in place

    /// 1 when the last chunk and trailers are consumed, 0 when more bytes are
    /// needed (state saved), a negative status on error.
    private mutating func decodeChunked(_ buf: UnsafeMutableRawPointer, _ len: Int,
                                        _ lim: HTTP1Limits) -> Int {
        let base = headLength
        var r = base + bodyRead    // next raw byte
        var w = base + bodyDecoded // next decoded byte (w <= r)
        var st = chunkPhase
        var cnt = chunkCount
        var left = chunkLeft
        let lineMax = lim.maxRequestLine < Chunk.countMax ? lim.maxRequestLine : Chunk.countMax
        var rc = 0

        decode: while r < len {
            if st == Chunk.data {
                var n = len &- r
                if UInt64(n) > left { n = Int(left) }
                if w != r { memmove(buf + w, buf + r, n) }
                w &+= n
                r &+= n
                left -= UInt64(n)
                if left == 0 { st = Chunk.dataCR }
                continue
            }
            let c = buf.load(fromByteOffset: r, as: UInt8.self)
            r &+= 1
            switch st {
            case Chunk.size:
                if CharClass.of(c) & CharClass.hex != 0 {
                    if cnt >= 16 { // more than 16 hex digits
                        rc = -400
                        break decode
                    }
                    left = (left << 4) | UInt64(hexValue(c))
                    cnt &+= 1
                    break
                }
                if cnt == 0 {
                    rc = -400
                    break decode
                }
                if c == Byte.cr {
                    st = Chunk.sizeLF
                } else if c == Byte.semicolon {
                    st = Chunk.ext
                } else if isOWS(c) {
                    st = Chunk.bws
                } else {
                    rc = -400
                    break decode
                }
                if left > UInt64(truncatingIfNeeded: lim.maxBody &- (w - base)) {
                    rc = -413
                    break decode
                }
                cnt &+= 1
            case Chunk.bws, Chunk.ext, Chunk.extName, Chunk.extNameBWS, Chunk.extValue, Chunk.extToken,
                 Chunk.extQuoted, Chunk.extQuotedPair, Chunk.extQuoteEnd, Chunk.extValueBWS:
                st = chunkExtNext(st, c)
                if st == Chunk.extBad {
                    rc = -400
                    break decode
                }
                if st == Chunk.sizeLF { break } // the CR does not count toward the line
                if cnt >= lineMax { // chunk-size line over maxRequestLine
                    rc = -400
                    break decode
                }
                cnt &+= 1
            case Chunk.sizeLF:
                if c != Byte.lf {
                    rc = -400
                    break decode
                }
                cnt = 0
                // after the last chunk, left (0) counts trailer bytes
                st = left != 0 ? Chunk.data : Chunk.trailerStart
            case Chunk.dataCR:
                if c != Byte.cr {
                    rc = -400
                    break decode
                }
                st = Chunk.dataLF
            case Chunk.dataLF:
                if c != Byte.lf {
                    rc = -400
                    break decode
                }
                st = Chunk.size
                cnt = 0
                left = 0
            default: // trailer section
                if left >= UInt64(truncatingIfNeeded: lim.maxHeaderBytes) {
                    rc = -431
                    break decode
                }
                left += 1
                switch st {
                case Chunk.trailerStart:
                    if c == Byte.cr {
                        st = Chunk.trailerEnd
                        break
                    }
                    if CharClass.of(c) & CharClass.tchar == 0 { // obs-fold, empty name, control...
                        rc = -400
                        break decode
                    }
                    if cnt >= lim.maxHeaders {
                        rc = -431
                        break decode
                    }
                    if cnt < Chunk.countMax { cnt &+= 1 }
                    st = Chunk.trailerName
                case Chunk.trailerName:
                    if c == Byte.colon {
                        st = Chunk.trailerValue
                    } else if CharClass.of(c) & CharClass.tchar == 0 {
                        rc = -400
                        break decode
                    }
                case Chunk.trailerValue:
                    if c == Byte.cr {
                        st = Chunk.trailerLF
                    } else if CharClass.of(c) & CharClass.value == 0 {
                        rc = -400
                        break decode
                    }
                case Chunk.trailerLF:
                    if c != Byte.lf {
                        rc = -400
                        break decode
                    }
                    st = Chunk.trailerStart
                default: // trailerEnd
                    if c != Byte.lf {
                        rc = -400
                        break decode
                    }
                    rc = 1
                    break decode
                }
            }
        }
        bodyRead = r - base
        bodyDecoded = w - base
        chunkLeft = left
        chunkPhase = st
        chunkCount = cnt
        return rc
    }
}

// MARK: - Head parsing (the whole head is present, every LF follows a CR)

extension HTTP1Parser {
    /// Parses the head at buf[start...] and writes the header records. Two
    /// ways in (as http1.c's parse_head): scanHead found its end (every LF
    /// follows a CR, the first empty line is the end, len is the head's
    /// length), or the fused fast path: nothing scanned, but buf[len-4..<len]
    /// is CRLFCRLF. Either way every loop below stops inside the buffer, at
    /// the latest at that CR, and every compare stops at the first mismatch;
    /// each line is checked to end in CRLF, and the first empty line ends the
    /// head (hi.headEnd; hi.requestLineLF is the request line's LF).
    fileprivate func parseHead(_ buf: Bytes, _ start: Int, _ len: Int, _ lim: HTTP1Limits,
                               _ hdrs: UnsafeMutableRawPointer, _ hi: inout HeadInfo) -> Int {
        var p = start
        let maxHeaders = lim.maxHeaders
        var n = 0
        var host = 0, haveCL = false, haveTE = false, connClose = false, connKeepAlive = false
        var expect = false, expectBad = false
        var te = TransferCodings()
        var cl: UInt64 = 0
        var flags: HTTP1RequestFlags = []

        // method SP request-target SP HTTP-version CRLF
        let m = p
        if buf.load32(p) == Byte.getSpace {
            p &+= 3
        } else {
            while CharClass.of(buf[p]) & CharClass.tchar != 0 { p &+= 1 }
        }
        if p == m || buf[p] != Byte.space { return -400 }
        hi.methodStart = m
        hi.methodLength = p - m
        p += 1
        let t = p
        p = spanTo(buf, p, CharClass.target)
        if p == t || buf[p] != Byte.space { return -400 }
        hi.targetStart = t
        hi.targetLength = p - t
        p += 1
        let minor: Int
        if len &- p >= 10 && buf.load64(p) == Byte.http11 && buf[p + 8] == Byte.cr && buf[p + 9] == Byte.lf {
            minor = 1
        } else if buf[p] == 0x48 /* H */ && buf[p + 1] == 0x54 /* T */ && buf[p + 2] == 0x54 /* T */
            && buf[p + 3] == 0x50 /* P */ && buf[p + 4] == 0x2F /* / */
            && buf[p + 5] >= Byte.zero && buf[p + 5] <= Byte.nine && buf[p + 6] == 0x2E /* . */
            && buf[p + 7] >= Byte.zero && buf[p + 7] <= Byte.nine
            && buf[p + 8] == Byte.cr && buf[p + 9] == Byte.lf {
            if buf[p + 5] != 0x31 /* 1 */ || (buf[p + 7] != 0x30 /* 0 */ && buf[p + 7] != 0x31 /* 1 */) {
                return -505
            }
            minor = Int(buf[p + 7] &- Byte.zero)
        } else {
            return -400
        }
        hi.requestLineLF = p &+ 9
        p += 10

        while !(buf[p] == Byte.cr && buf[p &+ 1] == Byte.lf) {
            let name = p
            // "Host:" (the field every HTTP/1.1 request has), a word compare;
            // else the tchar run. At least 5 bytes are left: this line is not
            // the empty one, and the empty line follows. (As http1.c.)
            var hostName = false, hostOK = false
            if buf.load32(p) | 0x2020_2020 == Byte.hostLower && buf[p &+ 4] == Byte.colon {
                p &+= 4
                hostName = true
            } else {
                p = spanTo(buf, p, CharClass.tchar)
            }
            if p == name || buf[p] != Byte.colon { return -400 } // obs-fold, empty name, space before colon...
            let nlen = p - name
            p += 1
            while isOWS(buf[p]) { p &+= 1 }
            let v = p
            var ve = p
            if hostName {
                // The usual Host value, reg-name [":" port] then OWS CRLF, is
                // checked in the pass that finds its end: every byte of it is
                // a field-value byte and hostValid would accept it. Anything
                // else (an IP literal, a pct-encoding, a byte hostValid
                // refuses) goes the general way below. The runs stop at the CR
                // at the latest (in neither class). (As http1.c.)
                var q = spanTo(buf, p, CharClass.regName)
                if buf[q] == Byte.colon {
                    q &+= 1
                    while buf[q] &- Byte.zero <= 9 { q &+= 1 }
                }
                var r = q
                while isOWS(buf[r]) { r &+= 1 }
                if buf[r] == Byte.cr && buf[r &+ 1] == Byte.lf {
                    ve = q
                    p = r
                    hostOK = true
                }
            }
            if !hostOK {
                p = spanValue(buf, p, len)
                if buf[p] != Byte.cr || buf[p + 1] != Byte.lf { return -400 } // control byte or bare CR in the value
                ve = p
                while ve > v && isOWS(buf[ve - 1]) { ve -= 1 }
            }
            p += 2
            if n >= maxHeaders { return -431 }
            // The C prg_header layout (PeregrineCore.Request.headerRecordSize).
            let record = hdrs + n &* 32
            record.storeBytes(of: buf.base + name, as: UnsafeRawPointer.self)
            record.storeBytes(of: nlen, toByteOffset: 8, as: Int.self)
            record.storeBytes(of: buf.base + v, toByteOffset: 16, as: UnsafeRawPointer.self)
            record.storeBytes(of: ve - v, toByteOffset: 24, as: Int.self)
            n += 1

            switch nlen {
            case 4:
                if hostOK || ieq(buf, name, nlen, "host") {
                    if !hostOK && !hostValid(buf, v, ve) { return -400 } // RFC 9112 3.2
                    host += 1
                }
            case 6:
                if ieq(buf, name, nlen, "expect") {
                    if ieq(buf, v, ve - v, "100-continue") {
                        expect = true
                    } else {
                        expectBad = true
                    }
                }
            case 10:
                if ieq(buf, name, nlen, "connection") {
                    var it = v, es = 0, ee = 0
                    while nextElement(buf, &it, ve, &es, &ee) {
                        if ieq(buf, es, ee - es, "close") {
                            connClose = true
                        } else if ieq(buf, es, ee - es, "keep-alive") {
                            connKeepAlive = true
                        }
                    }
                }
            case 14:
                if ieq(buf, name, nlen, "content-length") {
                    if haveCL || v == ve { return -400 }
                    haveCL = true
                    var q = v
                    while q < ve {
                        let d = UInt64(buf[q] &- Byte.zero)
                        if d > 9 { return -400 }
                        if cl > (UInt64(Int64.max) - d) / 10 { return -400 }
                        cl = cl * 10 + d
                        q += 1
                    }
                }
            case 17:
                if ieq(buf, name, nlen, "transfer-encoding") {
                    let e = parseTransferEncoding(buf, v, ve, &te)
                    if e != 0 { return e }
                    haveTE = true
                }
            default:
                break
            }
        }

        if host > 1 || (minor == 1 && host == 0) { return -400 }
        if haveTE {
            if haveCL || minor == 0 { return -400 }
            if te.chunked > 1 || (te.chunked == 1 && !te.last) { return -400 }
            if te.other { return -501 }
            flags.insert(.chunked)
        }
        if expectBad { return -417 }
        if expect && minor == 1 { flags.insert(.expectContinue) } // RFC 9110 10.1.1: ignored in HTTP/1.0
        if minor == 1 ? !connClose : (connKeepAlive && !connClose) { flags.insert(.keepAlive) }
        if haveCL {
            if cl > UInt64(truncatingIfNeeded: lim.maxBody) { return -413 }
            flags.insert(.hasContentLength)
        }
        hi.versionMinor = minor
        hi.headEnd = p &+ 2
        hi.headerCount = n
        hi.flags = flags
        hi.contentLength = haveCL ? Int64(cl) : -1
        return 0
    }
}

// MARK: - Helpers

/// Phases of `HTTP1Parser.state` (a negative state is a stored -status).
private enum Phase {
    static let start = 0
    static let requestLine = 1
    static let headerLines = 2
    static let bodyLength = 3 // `headComplete` spells this value out (inlinable)
    static let bodyChunked = 4
    static let done = 5
}

/// Phases of the chunk decoder (`HTTP1Parser.chunkPhase`).
private enum Chunk {
    static let size: UInt8 = 0         // chunk-size hex digits (counter = digits so far)
    static let bws: UInt8 = 1          // BWS after the size: ';' follows (chunkExtNext)
    static let ext: UInt8 = 2          // after a ';': BWS, then a chunk-ext-name
    static let sizeLF: UInt8 = 3       // LF after the chunk-size line
    static let data: UInt8 = 4         // chunk data (chunkLeft bytes to go)
    static let dataCR: UInt8 = 5       // CR after chunk data
    static let dataLF: UInt8 = 6       // LF after chunk data
    static let trailerStart: UInt8 = 7 // start of a trailer line (or the final CRLF)
    static let trailerName: UInt8 = 8  // trailer field name
    static let trailerValue: UInt8 = 9 // trailer field value, until CR
    static let trailerLF: UInt8 = 10   // LF ending a trailer field
    static let trailerEnd: UInt8 = 11  // LF ending the trailer section
    // the rest of a chunk extension (chunkExtNext); the counter is the
    // chunk-size line's length throughout
    static let extName: UInt8 = 12     // chunk-ext-name (token)
    static let extNameBWS: UInt8 = 13  // BWS after a name: '=' or ';' follows
    static let extValue: UInt8 = 14    // after '=': BWS, then a token or quoted-string
    static let extToken: UInt8 = 15    // token value
    static let extQuoted: UInt8 = 16   // quoted-string value, inside the quotes
    static let extQuotedPair: UInt8 = 17 // quoted-pair: the byte after a backslash
    static let extQuoteEnd: UInt8 = 18 // after the closing quote
    static let extValueBWS: UInt8 = 19 // BWS after a value: ';' follows
    static let extBad: UInt8 = 20      // chunkExtNext: the byte breaks the grammar
    /// Cap of the counter (C packs it in 23 bits).
    static let countMax = 0x7F_FFFF
}

private enum Byte {
    static let tab: UInt8 = 0x09
    static let lf: UInt8 = 0x0A
    static let cr: UInt8 = 0x0D
    static let space: UInt8 = 0x20
    static let comma: UInt8 = 0x2C
    static let zero: UInt8 = 0x30
    static let nine: UInt8 = 0x39
    static let colon: UInt8 = 0x3A
    static let semicolon: UInt8 = 0x3B
    static let equals: UInt8 = 0x3D
    static let quote: UInt8 = 0x22
    static let backslash: UInt8 = 0x5C
    /// Words whose bytes in memory are "\r\n\r\n", "GET ", "HTTP/1.1" (for native loads).
    static let crlfcrlf = UInt32(littleEndian: 0x0A0D_0A0D)
    static let getSpace = UInt32(littleEndian: 0x2054_4547)
    static let http11 = UInt64(littleEndian: 0x312E_312F_5054_5448)
    static let hostLower = UInt32(littleEndian: 0x7473_6F68) // "host"
}

/// Unchecked byte reads from the caller's buffer (raw loads: valid whatever
/// type the memory is bound to).
private struct Bytes {
    let base: UnsafeRawPointer
    @inline(__always) init(_ base: UnsafeRawPointer) { self.base = base }
    @inline(__always) subscript(_ i: Int) -> UInt8 { base.load(fromByteOffset: i, as: UInt8.self) }
    @inline(__always) func load32(_ i: Int) -> UInt32 { base.loadUnaligned(fromByteOffset: i, as: UInt32.self) }
    @inline(__always) func load64(_ i: Int) -> UInt64 { base.loadUnaligned(fromByteOffset: i, as: UInt64.self) }
}

/// The first byte at or after p that is not a field-value byte (HTAB,
/// SP...'~', 0x80...0xFF), 8 bytes a step while they lie before len: a step
/// goes on only when none of its bytes is below 0x20 or 0x7F; else the
/// lowest flagged byte is the first such byte (the flags of higher ones may
/// be wrong, never the lowest's), which ends the span unless it is an HTAB
/// (the byte loop takes it). The same as http1.c's span_value.
@inline(__always)
private func spanValue(_ buf: Bytes, _ start: Int, _ len: Int) -> Int {
    var p = start
    let ones: UInt64 = 0x0101_0101_0101_0101, high: UInt64 = 0x8080_8080_8080_8080
    while len &- p >= 8 {
        let x = UInt64(littleEndian: buf.load64(p)), y = x ^ (0x7F &* ones)
        let hit = ((x &- 0x20 &* ones) & ~x & high) | ((y &- ones) & ~y & high)
        if hit != 0 {
            p &+= hit.trailingZeroBitCount >> 3
            if buf[p] != Byte.tab { return p }
            break
        }
        p &+= 8
    }
    while CharClass.of(buf[p]) & CharClass.value != 0 { p &+= 1 }
    return p
}

/// The first byte at or after p without the class bit. The caller knows such
/// a byte exists within the buffer (a CR), so the two-byte steps stay inside
/// it: each reads its second byte only when the first is in the class. (As
/// http1.c's span_to.)
@inline(__always)
private func spanTo(_ buf: Bytes, _ start: Int, _ bit: UInt8) -> Int {
    var p = start
    while CharClass.of(buf[p]) & bit != 0 && CharClass.of(buf[p &+ 1]) & bit != 0 { p &+= 2 }
    if CharClass.of(buf[p]) & bit != 0 { p &+= 1 }
    return p
}

/// The same within [start, e) (http1.c's span_in).
@inline(__always)
private func spanIn(_ buf: Bytes, _ start: Int, _ e: Int, _ bit: UInt8) -> Int {
    var p = start
    while e &- p >= 2 && CharClass.of(buf[p]) & bit != 0 && CharClass.of(buf[p &+ 1]) & bit != 0 { p &+= 2 }
    if p < e && CharClass.of(buf[p]) & bit != 0 { p &+= 1 }
    return p
}

/// Character classes, the same table as http1.c.
private enum CharClass {
    static let tchar: UInt8 = 1  // RFC 9110 tchar
    static let value: UInt8 = 2  // field-value byte: HTAB, SP, VCHAR, obs-text
    static let target: UInt8 = 4 // request-target byte: 0x21..0x7E
    static let hex: UInt8 = 8    // HEXDIG
    static let regName: UInt8 = 16 // RFC 3986 reg-name byte but '%': unreserved / sub-delims

    /// One constant table (a static string: no initialisation at run time,
    /// no bounds check).
    @inline(__always)
    static func of(_ c: UInt8) -> UInt8 {
        let table: StaticString = """
            \u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{2}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\
            \u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\
            \u{2}\u{17}\u{6}\u{7}\u{17}\u{7}\u{17}\u{17}\u{16}\u{16}\u{17}\u{17}\u{16}\u{17}\u{17}\u{6}\
            \u{1F}\u{1F}\u{1F}\u{1F}\u{1F}\u{1F}\u{1F}\u{1F}\u{1F}\u{1F}\u{6}\u{16}\u{6}\u{16}\u{6}\u{6}\
            \u{6}\u{1F}\u{1F}\u{1F}\u{1F}\u{1F}\u{1F}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\
            \u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{6}\u{6}\u{6}\u{7}\u{17}\
            \u{7}\u{1F}\u{1F}\u{1F}\u{1F}\u{1F}\u{1F}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\
            \u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{17}\u{6}\u{7}\u{6}\u{17}\u{0}\
            \u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\
            \u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\
            \u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\
            \u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\
            \u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\
            \u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\
            \u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\
            \u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}
            """
        return UnsafeRawPointer(table.utf8Start).load(fromByteOffset: Int(c), as: UInt8.self)
    }
}

/// The head fields `parse` hands out, as offsets from the buffer start.
private struct HeadInfo {
    var methodStart = 0, methodLength = 0
    var targetStart = 0, targetLength = 0
    var versionMinor = 0
    var requestLineLF = 0 // offset of the request line's LF
    var headEnd = 0       // the head's length (through its empty line)
    var headerCount = 0
    var flags: HTTP1RequestFlags = []
    var contentLength: Int64 = -1
}

/// Transfer-Encoding codings seen so far, over every TE field line.
private struct TransferCodings {
    var chunked = 0     // times "chunked" appeared
    var last = false    // the last coding seen is chunked
    var other = false   // some other coding appeared
}

@inline(__always)
private func isOWS(_ c: UInt8) -> Bool { c == Byte.space || c == Byte.tab }

/// One byte of the chunk-size line after the size (RFC 9112 7.1, 7.1.1):
///   chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
///   chunk-ext-name = token
///   chunk-ext-val  = token / quoted-string     (RFC 9110 5.6.4)
/// so whitespace is allowed only before ';', around '=' and after ';', never
/// before the CRLF. Returns the next phase: `Chunk.sizeLF` for a CR where the
/// line may end, `Chunk.extBad` for a byte the grammar does not allow there
/// (400). Extensions are checked, then ignored. (C: chunk_ext_next.)
private func chunkExtNext(_ st: UInt8, _ c: UInt8) -> UInt8 {
    let tchar = CharClass.of(c) & CharClass.tchar != 0
    let ows = isOWS(c)
    switch st {
    case Chunk.bws:
        return c == Byte.semicolon ? Chunk.ext : ows ? Chunk.bws : Chunk.extBad
    case Chunk.ext:
        return tchar ? Chunk.extName : ows ? Chunk.ext : Chunk.extBad
    case Chunk.extName, Chunk.extNameBWS:
        if tchar && st == Chunk.extName { return Chunk.extName }
        if c == Byte.cr && st == Chunk.extName { return Chunk.sizeLF }
        return c == Byte.equals ? Chunk.extValue : c == Byte.semicolon ? Chunk.ext : ows ? Chunk.extNameBWS : Chunk.extBad
    case Chunk.extValue:
        return c == Byte.quote ? Chunk.extQuoted : tchar ? Chunk.extToken : ows ? Chunk.extValue : Chunk.extBad
    case Chunk.extQuoted: // qdtext: HTAB, SP, VCHAR but '"' and '\', obs-text
        if c == Byte.quote { return Chunk.extQuoteEnd }
        if c == Byte.backslash { return Chunk.extQuotedPair }
        return CharClass.of(c) & CharClass.value != 0 ? Chunk.extQuoted : Chunk.extBad
    case Chunk.extQuotedPair: // HTAB, SP, VCHAR, obs-text
        return CharClass.of(c) & CharClass.value != 0 ? Chunk.extQuoted : Chunk.extBad
    case Chunk.extToken, Chunk.extQuoteEnd:
        if tchar && st == Chunk.extToken { return Chunk.extToken }
        if c == Byte.cr { return Chunk.sizeLF }
        return c == Byte.semicolon ? Chunk.ext : ows ? Chunk.extValueBWS : Chunk.extBad
    default: // extValueBWS
        return c == Byte.semicolon ? Chunk.ext : ows ? Chunk.extValueBWS : Chunk.extBad
    }
}

@inline(__always)
private func hexValue(_ c: UInt8) -> UInt8 {
    c <= Byte.nine ? c &- Byte.zero : (c | 0x20) &- 0x61 &+ 10
}

/// ASCII case-insensitive equality of buf[at..<at+n] with a lower-case
/// literal made of letters, digits and '-'. The bytes compared are
/// validated field bytes, so the |0x20 folding cannot alias a control byte.
@inline(__always)
private func ieq(_ buf: Bytes, _ at: Int, _ n: Int, _ lit: StaticString) -> Bool {
    if n != lit.utf8CodeUnitCount { return false }
    let l = UnsafeRawPointer(lit.utf8Start)
    // The same |0x20 compare, a word at a time (the last word may overlap
    // the one before it), as http1.c's ieq.
    if n >= 8 {
        let fold: UInt64 = 0x2020_2020_2020_2020
        var i = 0
        while i &+ 8 <= n {
            if buf.load64(at &+ i) | fold != l.loadUnaligned(fromByteOffset: i, as: UInt64.self) { return false }
            i &+= 8
        }
        return i == n || buf.load64(at &+ n &- 8) | fold == l.loadUnaligned(fromByteOffset: n &- 8, as: UInt64.self)
    }
    if n >= 4 {
        let fold: UInt32 = 0x2020_2020
        return buf.load32(at) | fold == l.loadUnaligned(as: UInt32.self)
            && buf.load32(at &+ n &- 4) | fold == l.loadUnaligned(fromByteOffset: n &- 4, as: UInt32.self)
    }
    var i = 0
    while i < n {
        if buf[at &+ i] | 0x20 != l.load(fromByteOffset: i, as: UInt8.self) { return false }
        i &+= 1
    }
    return true
}

/// Next element of a comma-separated list in [it, end): OWS trimmed,
/// possibly empty. False when the list is exhausted.
@inline(__always)
private func nextElement(_ buf: Bytes, _ it: inout Int, _ end: Int, _ es: inout Int, _ ee: inout Int) -> Bool {
    var p = it
    if p > end { return false }
    while p < end && isOWS(buf[p]) { p &+= 1 }
    es = p
    var e = p
    while e < end && buf[e] != Byte.comma { e &+= 1 }
    it = e &+ 1 // past the comma; > end once the last element is taken
    while e > p && isOWS(buf[e &- 1]) { e &-= 1 }
    ee = e
    return true
}

/// Host field value (RFC 9112 3.2): uri-host [ ":" port ] (RFC 3986 3.2.2),
/// the empty value included. uri-host is an IP-literal or a reg-name (an
/// IPv4address is a reg-name too): reg-name = *( unreserved / pct-encoded /
/// sub-delims ), IP-literal = "[" ( IPv6address / IPvFuture ) "]", the
/// IPv6address checked loosely (hex digits, ':' and '.', two ':' at least),
/// IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ); port =
/// *DIGIT. So no whitespace, userinfo ('@'), '/', '?', '#' or a second ':'.
/// One table lookup per byte, on the trimmed value buf[s..<e).
@inline(__always)
private func hostValid(_ buf: Bytes, _ start: Int, _ e: Int) -> Bool {
    var s = start
    if s < e && buf[s] == 0x5B /* [ */ {
        var q = s &+ 1
        if q < e && buf[q] | 0x20 == 0x76 /* v */ {
            q &+= 1
            var h = q
            while q < e && CharClass.of(buf[q]) & CharClass.hex != 0 { q &+= 1 }
            if q == h || q == e || buf[q] != 0x2E /* . */ { return false }
            q &+= 1
            h = q
            while q < e && (CharClass.of(buf[q]) & CharClass.regName != 0 || buf[q] == Byte.colon) { q &+= 1 }
            if q == h { return false }
        } else {
            var colons = 0
            while q < e && (CharClass.of(buf[q]) & CharClass.hex != 0 || buf[q] == Byte.colon || buf[q] == 0x2E /* . */) {
                if buf[q] == Byte.colon { colons &+= 1 }
                q &+= 1
            }
            if colons < 2 { return false }
        }
        if q == e || buf[q] != 0x5D /* ] */ { return false }
        s = q &+ 1
    } else {
        while s < e {
            s = spanIn(buf, s, e, CharClass.regName)
            if s == e { break }
            if buf[s] == 0x25 /* % */ && e &- s >= 3 && CharClass.of(buf[s &+ 1]) & CharClass.hex != 0
                && CharClass.of(buf[s &+ 2]) & CharClass.hex != 0 {
                s &+= 3
            } else {
                break
            }
        }
    }
    if s == e { return true }
    if buf[s] != Byte.colon { return false }
    s &+= 1
    while s < e {
        if buf[s] &- Byte.zero > 9 { return false }
        s &+= 1
    }
    return true
}

/// Transfer-Encoding: 1#transfer-coding, each a token with optional
/// parameters. Empty elements are refused (a framing header gets no slack).
private func parseTransferEncoding(_ buf: Bytes, _ v: Int, _ ve: Int, _ te: inout TransferCodings) -> Int {
    var it = v, es = 0, ee = 0
    while nextElement(buf, &it, ve, &es, &ee) {
        if es == ee { return -400 } // empty value or empty list element
        var q = es
        while q < ee && CharClass.of(buf[q]) & CharClass.tchar != 0 { q &+= 1 }
        if q == es { return -400 }
        if q == ee {
            if ieq(buf, es, q &- es, "chunked") {
                te.chunked += 1
                te.last = true
            } else {
                te.other = true
                te.last = false
            }
            continue
        }
        // token OWS ";" parameters
        var r = q
        while r < ee && isOWS(buf[r]) { r &+= 1 }
        if r == ee || buf[r] != Byte.semicolon { return -400 }
        if ieq(buf, es, q &- es, "chunked") { return -400 } // chunked takes no parameters
        te.other = true
        te.last = false
    }
    return 0
}

// MARK: - Streamed bodies (prg_http_head_view, prg_http_body_next)

extension HTTP1Parser {
    /// The request view of a complete head (`headComplete`) at `buffer` (the
    /// same bytes `parse` was given), with an empty body. 0, or -status
    /// (-500 when the head is not complete).
    public func headView(_ buffer: UnsafeRawBufferPointer, limits: HTTP1Limits,
                         headers: UnsafeMutableRawPointer, into request: inout ParsedRequest) -> Int {
        if state < 0 { return state }
        guard state >= Phase.bodyLength, buffer.count >= headLength, let raw = buffer.baseAddress else { return -500 }
        var hi = HeadInfo()
        let rc = parseHead(Bytes(raw), lineStart, headLength, limits, headers, &hi)
        if rc < 0 { return rc }
        request.method = UnsafeRawBufferPointer(start: raw + hi.methodStart, count: hi.methodLength)
        request.target = UnsafeRawBufferPointer(start: raw + hi.targetStart, count: hi.targetLength)
        request.versionMinor = hi.versionMinor
        request.flags = flags
        request.headers = UnsafeRawPointer(headers)
        request.headerCount = hi.headerCount
        request.body = UnsafeRawBufferPointer(start: raw + headLength, count: 0)
        request.contentLength = contentLength
        return 0
    }

    /// The next span of a streamed body: `buffer` holds the raw body bytes
    /// that follow what earlier calls used. Decodes in place into
    /// buffer[0..<decoded]; returns the input bytes used, and sets `done`
    /// once the body (chunked: last chunk and trailers) is used. -status on
    /// bad input (-400, -413 over `limits.maxBody`, -431); body decoded
    /// before bad input comes first, the error on the next call. Trailers
    /// are validated and dropped.
    public mutating func bodyNext(_ buffer: UnsafeMutableRawBufferPointer, limits: HTTP1Limits,
                                  decoded: inout Int, done: inout Bool) -> Int {
        decoded = 0
        done = false
        if state < 0 { return state }
        if state == Phase.done {
            done = true
            return 0
        }
        guard state == Phase.bodyLength || state == Phase.bodyChunked else { return -500 }
        let len = buffer.count
        if state == Phase.bodyLength {
            if contentLength > Int64(limits.maxBody) {
                state = -413
                return -413
            }
            let n = min(len, Int(contentLength) - bodyRead)
            bodyRead += n
            bodyDecoded += n
            if Int64(bodyRead) == contentLength {
                state = Phase.done
                done = true
            }
            decoded = n
            return n
        }
        // Chunked: the ordinary decoder, as if the body started at buffer[0]
        // (see http1.c); bodyRead and bodyDecoded keep the totals.
        guard let raw = buffer.baseAddress else { return 0 }
        var lim = limits
        lim.maxBody = limits.maxBody > bodyDecoded ? limits.maxBody - bodyDecoded : 0
        let savedHead = headLength, totalRead = bodyRead, totalDecoded = bodyDecoded
        headLength = 0
        bodyRead = 0
        bodyDecoded = 0
        let rc = decodeChunked(raw, len, lim)
        let used = bodyRead, dec = bodyDecoded
        headLength = savedHead
        bodyRead = totalRead + used
        bodyDecoded = totalDecoded + dec
        if rc < 0 {
            state = rc
            if dec == 0 { return rc }
            decoded = dec
            return used
        }
        if rc == 1 {
            state = Phase.done
            done = true
        }
        decoded = dec
        return used
    }
}
