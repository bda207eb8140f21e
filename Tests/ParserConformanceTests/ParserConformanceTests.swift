// Runs the parser case table (Tests/ParserCases/cases.txt, read by
// ConformanceCases.swift) through the C parser (csrc/http1.c) and the
// Swift parser (PeregrineSwiftEpoll.HTTP1Parser): whole, split into two calls
// at every offset, and byte by byte, calling compact between incomplete calls
// as csrc/conn.c's process_http does. Every run of either parser must give
// the table's outcome, and the C and Swift runs of the same feeding must
// agree exactly (slice offsets and buffer bytes included).
import CPeregrine
import PeregrineCore
import PeregrineSwiftEpoll
import XCTest

/// The outcome the table asks for.
func expectedOutcome(_ c: ConformanceCase) -> Outcome {
    switch c.expected {
    case .error(let status):
        return Outcome(result: -status, headComplete: false, parserFlags: 0, fields: nil, leftover: [])
    case .incomplete(let hc, let flags):
        return Outcome(result: 0, headComplete: hc, parserFlags: hc ? flags.rawValue : 0, fields: nil, leftover: [])
    case .request(let e):
        let consumed = e.consumed ?? c.raw.count
        return Outcome(
            result: consumed, headComplete: true, parserFlags: e.flags.rawValue,
            fields: .init(method: e.method, target: e.target, versionMinor: e.versionMinor,
                          flags: e.flags.rawValue, headers: e.headers.flatMap { [$0.0, $0.1] },
                          body: e.body, contentLength: e.contentLength),
            leftover: Array(c.raw[consumed...]))
    }
}

/// The feedings of an input of n bytes. Long inputs get a sample of split
/// points (both ends densely, the middle sparsely, plus `extraSplits`).
func feedings(_ n: Int, extraSplits: [Int] = []) -> [Feeding] {
    var out = [Feeding(cuts: [n], copy: false, compact: false, label: "whole")]
    let splits: [Int]
    if n <= 1024 {
        splits = Array(0..<n)
    } else {
        var s = Set(0..<64)
        s.formUnion((n - 64)..<n)
        s.formUnion(stride(from: 64, to: n, by: 97))
        for x in extraSplits { for d in -3...3 where x + d >= 0 && x + d < n { s.insert(x + d) } }
        splits = s.sorted()
    }
    for k in splits {
        out.append(Feeding(cuts: [k, n], copy: false, compact: true, label: "split at \(k)"))
        out.append(Feeding(cuts: [k, n], copy: true, compact: true, label: "split at \(k)"))
        out.append(Feeding(cuts: [k, n], copy: false, compact: false, label: "split at \(k)"))
    }
    if n > 0 {
        out.append(Feeding(cuts: Array(1...n), copy: false, compact: true, label: "byte by byte"))
        out.append(Feeding(cuts: Array(1...n), copy: true, compact: false, label: "byte by byte"))
    }
    return out
}

/// Runs one case through both parsers in every feeding; returns failure messages.
func check(_ c: ConformanceCase, extraSplits: [Int] = [], maxFailures: Int = 6) -> [String] {
    let limits = c.limits ?? HTTP1Limits()
    let want = expectedOutcome(c)
    var failures: [String] = []
    for feeding in feedings(c.raw.count, extraSplits: extraSplits) {
        var cProblems: [String] = [], swiftProblems: [String] = []
        let (cOut, cExact) = feed(CParser.self, c.raw, limits: limits, feeding, problems: &cProblems)
        let (sOut, sExact) = feed(SwiftParser.self, c.raw, limits: limits, feeding, problems: &swiftProblems)
        for p in cProblems { failures.append("case '\(c.name)' [C] \(feeding): \(p)") }
        for p in swiftProblems { failures.append("case '\(c.name)' [Swift] \(feeding): \(p)") }
        if cOut != want { failures.append("case '\(c.name)' [C] \(feeding):\n  got      \(cOut)\n  expected \(want)") }
        if sOut != want { failures.append("case '\(c.name)' [Swift] \(feeding):\n  got      \(sOut)\n  expected \(want)") }
        if cOut != sOut {
            failures.append("case '\(c.name)' [C vs Swift] \(feeding):\n  C     \(cOut)\n  Swift \(sOut)")
        } else if cExact != sExact {
            failures.append("case '\(c.name)' [C vs Swift] \(feeding): slices or buffer bytes differ:\n"
                            + "  C     \(String(describing: cExact.snapshot)) len \(cExact.bufferLength) \(str(cExact.bufferBytes))\n"
                            + "  Swift \(String(describing: sExact.snapshot)) len \(sExact.bufferLength) \(str(sExact.bufferBytes))")
        }
        if failures.count >= maxFailures { break }
    }
    return failures
}

/// The head of a chunked request, for the byte templates below.
let CHUNKED_HEAD = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"

final class ParserConformanceTests: XCTestCase {
    /// Cases in the table when it became a data file (376) plus the chunk-size line
    /// cases added with it: the table never shrinks unnoticed.
    static let minimumCases = 413

    func testTableShape() {
        switch ConformanceTable.loaded {
        case .failure(let e): XCTFail("the case table does not read: \(e)")
        case .success(let all):
            XCTAssertGreaterThanOrEqual(all.count, Self.minimumCases, "cases lost from \(ConformanceTable.path)")
            let marked = all.filter { $0.rfc != nil }
            print("conformance table: \(all.count) cases from \(ConformanceTable.path), \(marked.count) marked as departing from the RFC's letter:")
            for c in marked { print("  - \(c.name): \(c.rfc!)") }
        }
    }

    /// The reader refuses a malformed table, naming the line.
    func testMalformedTableIsRefused() {
        let bad: [(String, String)] = [
            ("case: x\nraw: a \nwant: incomplete\n", ":2: text ends in a space or tab"),
            ("case: x\nraw: a\\q\nwant: incomplete\n", ":2: unknown escape"),
            ("case: x\nraw: GET\nwant: request\n", ":1: want: request needs"),
            ("case: x\nraw: a\nwant: incomplete\ncase: x\n", ":4: duplicate case name"),
            ("raw: a\n", ":1: a key before the first case"),
            ("case: x\nraw: a\nwant: maybe\n", ":3: want:"),
            ("case: x\nraw*0: a\nwant: incomplete\n", ":2: bad repeat count"),
            ("case: x\nraw: a\nwant: error 400\nmethod: GET\n", ":1: request fields"),
        ]
        for (text, want) in bad {
            do {
                _ = try parseCaseFile(Array(text.utf8), path: "t")
                XCTFail("accepted: \(text)")
            } catch {
                XCTAssertTrue("\(error)".hasPrefix("t" + want), "\(error) for \(text)")
            }
        }
    }

    /// Every case, in every feeding, through both parsers. Inputs over 100 kB
    /// (the 1 MiB bodies) get whole and sampled splits only: byte by byte over
    /// a megabyte is slow in a debug build.
    func testConformanceTable() {
        var failed = 0
        for c in ConformanceTable.all {
            let limits = c.limits ?? HTTP1Limits()
            let failures = c.raw.count > 100_000
                ? checkSampled(c) : check(c, extraSplits: [limits.maxRequestLine, limits.maxHeaderBytes])
            if !failures.isEmpty { failed += 1 }
            for f in failures { XCTFail("\(f)\n  (\(ConformanceTable.path):\(c.line))") }
        }
        XCTAssertEqual(failed, 0, "\(failed) of \(ConformanceTable.all.count) cases failed")
    }

    /// Whole and a few splits (for inputs too big to feed byte by byte).
    func checkSampled(_ c: ConformanceCase) -> [String] {
        let limits = c.limits ?? HTTP1Limits()
        let want = expectedOutcome(c)
        var failures: [String] = []
        let n = c.raw.count
        var feeds = [Feeding(cuts: [n], copy: false, compact: false, label: "whole")]
        for k in [0, 1, 30, 60, 100, n / 2, n - 7, n - 1] {
            feeds.append(Feeding(cuts: [k, n], copy: false, compact: true, label: "split at \(k)"))
        }
        feeds.append(Feeding(cuts: Array(stride(from: 4093, to: n, by: 4093)) + [n], copy: false, compact: true,
                             label: "4093-byte pieces"))
        for f in feeds {
            var p: [String] = []
            let (cOut, cExact) = feed(CParser.self, c.raw, limits: limits, f, problems: &p)
            let (sOut, sExact) = feed(SwiftParser.self, c.raw, limits: limits, f, problems: &p)
            failures += p.map { "case '\(c.name)' \(f): \($0)" }
            if cOut.result != want.result || cOut.fields != want.fields { failures.append("case '\(c.name)' [C] \(f): result \(cOut.result)") }
            if sOut.result != want.result || sOut.fields != want.fields { failures.append("case '\(c.name)' [Swift] \(f): result \(sOut.result)") }
            if cOut != sOut || cExact != sExact { failures.append("case '\(c.name)' [C vs Swift] \(f): differ") }
        }
        return failures
    }

    /// test_http1.c's compact check, for both parsers: a body of 1-byte chunks
    /// fed one byte at a time with the gap closed after every incomplete call
    /// decodes to the same bytes, never needs more than head + decoded body +
    /// one unread line, and a pipelined request after it is still found.
    func testCompactManySmallChunks() {
        func body<P: ParserUnderTest>(_: P.Type) {
            let count = 300
            let head = Array("POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
            let next = Array("GET /n HTTP/1.1\r\nHost: h\r\n\r\n".utf8)
            var wire = head
            for i in 0..<count { wire += [0x31, 0x0D, 0x0A, UInt8(0x61 + i % 26), 0x0D, 0x0A] }
            wire += Array("0\r\n\r\n".utf8) + next
            let headers = UnsafeMutableRawPointer.allocate(byteCount: 100 * 32, alignment: 16)
            defer { headers.deallocate() }
            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 1)
            defer { buf.deallocate() }
            var p = P(limits: HTTP1Limits(), headers: headers)
            var len = 0, fed = 0, peak = 0, r = 0
            while fed < wire.count {
                buf[len] = wire[fed]
                len += 1
                fed += 1
                r = p.parse(UnsafeMutableRawBufferPointer(rebasing: buf[0..<len]))
                if r != 0 { break }
                len -= p.compact(UnsafeMutableRawBufferPointer(rebasing: buf[0..<len]))
                peak = max(peak, len)
            }
            XCTAssertGreaterThan(r, 0, "\(P.label): request did not complete")
            guard r > 0 else { return }
            let snap = p.snapshot(relativeTo: UnsafeRawPointer(buf.baseAddress!))
            XCTAssertEqual(snap.body.count, count, "\(P.label): decoded length")
            XCTAssertEqual(Array(buf[snap.body.offset..<snap.body.offset + snap.body.count]),
                           (0..<count).map { UInt8(0x61 + $0 % 26) }, "\(P.label): decoded bytes")
            XCTAssertLessThanOrEqual(peak, head.count + count + 8, "\(P.label): buffer grew with the framing")
            // the rest of the wire after the chunked request parses on its own
            let rest = Array(buf[r..<len]) + wire[fed...]
            let buf2 = UnsafeMutableRawBufferPointer.allocate(byteCount: rest.count, alignment: 1)
            defer { buf2.deallocate() }
            buf2.copyBytes(from: rest)
            var q = P(limits: HTTP1Limits(), headers: headers)
            XCTAssertEqual(q.parse(buf2), next.count, "\(P.label): pipelined request after the chunked one")
            XCTAssertEqual(q.snapshot(relativeTo: UnsafeRawPointer(buf2.baseAddress!)).target.count, 2)
            XCTAssertEqual(q.compact(buf2), 0, "\(P.label): nothing to compact outside a chunked body")
        }
        body(CParser.self)
        body(SwiftParser.self)
    }

    /// Every byte value in every position that classifies bytes: the two
    /// character tables and the chunk decoder must agree (no expectation:
    /// C is the reference).
    func testEveryByteInEveryPosition() {
        let templates: [(String, String)] = [
            ("method", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("method start", "@GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("target", "GET /@ HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("version", "GET / HTTP/1.@\r\nHost: a\r\n\r\n"),
            ("name", "GET / HTTP/1.1\r\nHost: a\r\nX@: v\r\n\r\n"),
            ("value", "GET / HTTP/1.1\r\nHost: a\r\nX: a@b\r\n\r\n"),
            ("value edge", "GET / HTTP/1.1\r\nHost: a\r\nX:@\r\n\r\n"),
            ("host", "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n"),
            ("host start", "GET / HTTP/1.1\r\nHost: @b\r\n\r\n"),
            ("host pct", "GET / HTTP/1.1\r\nHost: a%4@\r\n\r\n"),
            ("host port", "GET / HTTP/1.1\r\nHost: a:1@\r\n\r\n"),
            ("host IPv6", "GET / HTTP/1.1\r\nHost: [::1@]:80\r\n\r\n"),
            ("host after literal", "GET / HTTP/1.1\r\nHost: [::1]@80\r\n\r\n"),
            ("host IPvFuture", "GET / HTTP/1.1\r\nHost: [v1.a@]\r\n\r\n"),
            ("connection", "GET / HTTP/1.0\r\nConnection: keep-aliv@\r\n\r\n"),
            ("content-length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1@\r\n\r\n0123456789abcdef"),
            ("te", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunke@\r\n\r\n0\r\n\r\n"),
            ("chunk size", CHUNKED_HEAD + "@\r\n0123456789abcdef\r\n0\r\n\r\n"),
            ("chunk size end", CHUNKED_HEAD + "1@\r\n0123456789abcdef\r\n0\r\n\r\n"),
            ("chunk ext", CHUNKED_HEAD + "1;a@b\r\nx\r\n0\r\n\r\n"),
            ("chunk data end", CHUNKED_HEAD + "1\r\nx@\n0\r\n\r\n"),
            ("trailer name", CHUNKED_HEAD + "0\r\nT@: v\r\n\r\n"),
            ("trailer value", CHUNKED_HEAD + "0\r\nT: @\r\n\r\n"),
            ("expect", "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continu@\r\n\r\n"),
        ]
        var failures: [String] = []
        for (label, template) in templates {
            let parts = template.split(separator: "@", omittingEmptySubsequences: false)
            for b in 0...255 {
                let raw = Array(parts[0].utf8) + [UInt8(b)] + Array(parts[1].utf8)
                let c = ConformanceCase(name: "\(label) byte \(b)", raw: raw, limits: nil, expected: .error(0), rfc: nil)
                for f in [Feeding(cuts: [raw.count], copy: false, compact: false, label: "whole"),
                          Feeding(cuts: Array(1...raw.count), copy: false, compact: true, label: "byte by byte")] {
                    var p: [String] = []
                    let (cOut, cExact) = feed(CParser.self, c.raw, limits: HTTP1Limits(), f, problems: &p)
                    let (sOut, sExact) = feed(SwiftParser.self, c.raw, limits: HTTP1Limits(), f, problems: &p)
                    failures += p.map { "\(c.name) \(f): \($0)" }
                    if cOut != sOut || cExact != sExact { failures.append("\(c.name) \(f): C \(cOut) vs Swift \(sOut)") }
                }
            }
        }
        for f in failures.prefix(20) { XCTFail(f) }
        XCTAssertEqual(failures.count, 0)
    }

    /// Deterministic mutations of the table's inputs (byte flips, insertions,
    /// deletions, truncations), each fed whole and at a few splits through
    /// both parsers: they must agree.
    func testMutatedInputsAgree() {
        var rng = SplitMix64(seed: 0x5EED_0F_9112)
        let alphabet: [UInt8] = Array("\r\n \t:;,0123456789aAfFzZ-\"\\\u{7F}".utf8) + [0, 0x80, 0xFF, 0x0B]
        var failures: [String] = []
        var runs = 0
        // (inputs up to 4 kB: the mutants are fed byte by byte)
        for c in ConformanceTable.all where !c.raw.isEmpty && c.raw.count <= 4096 {
            for m in 0..<12 {
                var raw = c.raw
                for _ in 0...(m % 3) {
                    let at = Int(rng.next() % UInt64(raw.count + 1))
                    let b = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                    switch rng.next() % 4 {
                    case 0 where at < raw.count: raw[at] = b
                    case 1: raw.insert(b, at: at)
                    case 2 where at < raw.count: raw.remove(at: at)
                    default: raw = Array(raw.prefix(max(at, 1))) // truncation
                    }
                }
                if raw.isEmpty { continue }
                let limits = c.limits ?? HTTP1Limits()
                let n = raw.count
                let splits = [Int(rng.next() % UInt64(n)), Int(rng.next() % UInt64(n))]
                var feeds = [Feeding(cuts: [n], copy: false, compact: false, label: "whole")]
                for k in splits { feeds.append(Feeding(cuts: [k, n], copy: false, compact: true, label: "split at \(k)")) }
                feeds.append(Feeding(cuts: Array(1...n), copy: false, compact: true, label: "byte by byte"))
                var whole: Outcome?
                for f in feeds {
                    var p: [String] = []
                    let (cOut, cExact) = feed(CParser.self, raw, limits: limits, f, problems: &p)
                    let (sOut, sExact) = feed(SwiftParser.self, raw, limits: limits, f, problems: &p)
                    runs += 1
                    failures += p.map { "mutant of '\(c.name)' \(str(raw)) \(f): \($0)" }
                    if cOut != sOut || cExact != sExact {
                        failures.append("mutant of '\(c.name)' \(str(raw)) \(f):\n  C     \(cOut)\n  Swift \(sOut)")
                    }
                    if let w = whole, w != cOut { failures.append("mutant of '\(c.name)' \(str(raw)) \(f): differs from whole") }
                    if whole == nil { whole = cOut }
                }
            }
        }
        for f in failures.prefix(20) { XCTFail(f) }
        XCTAssertEqual(failures.count, 0, "\(failures.count) disagreements in \(runs) runs")
    }

    func testDefaultsAndLayout() {
        var c = prg_http_limits()
        prg_http_limits_default(&c)
        let s = HTTP1Limits()
        XCTAssertEqual([c.max_request_line, c.max_header_bytes, c.max_headers, c.max_body].map { Int($0) },
                       [s.maxRequestLine, s.maxHeaderBytes, s.maxHeaders, s.maxBody])
        XCTAssertEqual(MemoryLayout<prg_header>.size, Request.headerRecordSize)
        XCTAssertEqual(HTTP1RequestFlags.chunked.rawValue, UInt32(PRG_REQ_CHUNKED))
        XCTAssertEqual(HTTP1RequestFlags.expectContinue.rawValue, UInt32(PRG_REQ_EXPECT_CONTINUE))
        XCTAssertEqual(HTTP1RequestFlags.keepAlive.rawValue, UInt32(PRG_REQ_KEEP_ALIVE))
        XCTAssertEqual(HTTP1RequestFlags.hasContentLength.rawValue, UInt32(PRG_REQ_HAS_CONTENT_LENGTH))
        var p = HTTP1Parser()
        XCTAssertFalse(p.headComplete)
        XCTAssertEqual(p.contentLength, -1)
        XCTAssertNil(p.errorStatus)
        var req = ParsedRequest()
        let headers = UnsafeMutableRawPointer.allocate(byteCount: 100 * 32, alignment: 16)
        defer { headers.deallocate() }
        XCTAssertEqual(p.parse(UnsafeMutableRawBufferPointer(start: nil, count: 0), limits: s, headers: headers, into: &req), 0)
    }

    /// The engine builds a PeregrineCore.Request from a ParsedRequest without copying.
    func testRequestView() {
        var raw = Array("PUT /x?y=1 HTTP/1.1\r\nHost: h\r\nX-Thing:  v1 \r\nexpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi".utf8)
        let headers = UnsafeMutableRawPointer.allocate(byteCount: 100 * 32, alignment: 16)
        defer { headers.deallocate() }
        var p = HTTP1Parser()
        var parsed = ParsedRequest()
        let n = raw.withUnsafeMutableBytes { p.parse($0, limits: HTTP1Limits(), headers: headers, into: &parsed) }
        XCTAssertEqual(n, raw.count)
        XCTAssertTrue(parsed.expectContinue && parsed.keepAlive && parsed.hasContentLength && !parsed.chunked)
        XCTAssertTrue(p.expectContinue && p.keepAlive && !p.chunked)
        raw.withUnsafeMutableBytes { buf in
            _ = p.parse(buf, limits: HTTP1Limits(), headers: headers, into: &parsed)
            let r = parsed.request
            XCTAssertTrue(r.methodIs("PUT"))
            XCTAssertEqual(r.targetString, "/x?y=1")
            XCTAssertEqual(String(decoding: r.path, as: UTF8.self), "/x")
            XCTAssertEqual(r.header("x-thing").map { String(decoding: $0, as: UTF8.self) }, "v1")
            XCTAssertEqual(r.header(named: "Content-Length"), "2")
            XCTAssertEqual(r.bodyString, "hi")
            XCTAssertEqual(r.headerCount, 4)
            XCTAssertTrue(r.keepAlive)
            XCTAssertEqual(r.body.baseAddress, UnsafeRawPointer(buf.baseAddress! + buf.count - 2))
        }
        p.reset()
        XCTAssertFalse(p.headComplete)
        XCTAssertEqual(p.flags, [])
    }
}

/// A small deterministic generator (no Foundation, stable across runs).
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
