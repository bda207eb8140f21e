// The streamed-body step: the C prg_http_body_next and the Swift
// HTTP1Parser.bodyNext must agree, span by span, on every feeding.
import CPeregrine
import PeregrineSwiftEpoll
import XCTest

final class BodyStreamConformanceTests: XCTestCase {
    /// (request with body and what follows, streamed limit)
    static let cases: [(String, Int)] = [
        ("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789GET / HTTP/1.1\r\n\r\n", 1 << 20),
        ("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\nXYZ", 1 << 20),
        ("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n", 1 << 20),
        ("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", 8),
        ("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", 10),
        ("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc", 50),
        ("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nBad Trailer: x\r\n\r\n", 1 << 20),
        ("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", 1 << 20),
        ("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 1 << 20),
    ]

    /// One call's result: used (or -status), the decoded bytes, done.
    struct Step: Equatable {
        var result: Int
        var decoded: [UInt8]
        var done: Bool
    }

    /// Feeds the body part `pieces` at a time to both parsers; returns each one's steps.
    private func run(_ raw: [UInt8], limit: Int, piece: Int) -> (c: [Step], swift: [Step]) {
        let headLen = raw.count - (String(decoding: raw, as: UTF8.self).components(separatedBy: "\r\n\r\n").dropFirst()
            .joined(separator: "\r\n\r\n").utf8.count)
        var cp = prg_http_parser()
        prg_http_parser_reset(&cp)
        var sp = HTTP1Parser()
        var cHead = prg_http_limits()
        prg_http_limits_default(&cHead)
        cHead.max_body = 1 << 30
        var sHead = HTTP1Limits()
        sHead.maxBody = 1 << 30
        var head = Array(raw[0..<headLen])
        var req = prg_request()
        let headers = UnsafeMutablePointer<prg_header>.allocate(capacity: 100)
        defer { headers.deallocate() }
        let sHeaders = UnsafeMutableRawPointer.allocate(byteCount: 100 * 32, alignment: 8)
        defer { sHeaders.deallocate() }
        XCTAssertEqual(head.withUnsafeMutableBytes { prg_http_parse(&cp, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), headLen, &cHead, &req, headers) }, 0)
        var sreq = ParsedRequest()
        XCTAssertEqual(head.withUnsafeMutableBytes { sp.parse($0, limits: sHead, headers: sHeaders, into: &sreq) }, 0)
        var cLim = cHead
        cLim.max_body = limit
        var sLim = sHead
        sLim.maxBody = limit

        func feed(_ step: (inout [UInt8]) -> Step) -> [Step] {
            var steps: [Step] = []
            var pending: [UInt8] = []
            var pos = headLen
            while steps.count < 10_000 {
                let add = min(piece, raw.count - pos)
                pending += raw[pos..<pos + add]
                pos += add
                let s = step(&pending)
                steps.append(s)
                if s.result < 0 || s.done || (pos == raw.count && s.decoded.isEmpty && steps.count > 1 && steps[steps.count - 2].decoded.isEmpty) { break }
            }
            return steps
        }
        let c = feed { pending in
            var decoded = 0
            var done: Int32 = 0
            let n = pending.count
            let r = pending.withUnsafeMutableBytes { b in
                prg_http_body_next(&cp, b.baseAddress?.assumingMemoryBound(to: UInt8.self), n, &cLim, &decoded, &done)
            }
            let out = Step(result: Int(r), decoded: r >= 0 ? Array(pending[0..<decoded]) : [], done: done != 0)
            if r >= 0 { pending.removeFirst(Int(r)) }
            return out
        }
        let s = feed { pending in
            var decoded = 0
            var done = false
            let r = pending.withUnsafeMutableBytes { sp.bodyNext($0, limits: sLim, decoded: &decoded, done: &done) }
            let out = Step(result: r, decoded: r >= 0 ? Array(pending[0..<decoded]) : [], done: done)
            if r >= 0 { pending.removeFirst(r) }
            return out
        }
        return (c, s)
    }

    func testCAndSwiftAgreeOnEveryFeeding() {
        for (text, limit) in Self.cases {
            let raw = Array(text.utf8)
            for piece in [1, 2, 3, 7, 1000] {
                let (c, s) = run(raw, limit: limit, piece: piece)
                XCTAssertEqual(c, s, "\(text.debugDescription) in pieces of \(piece)")
                XCTAssertTrue(c.last.map { $0.done || $0.result < 0 } ?? false, "\(text.debugDescription): ends with done or an error")
            }
        }
    }
}
