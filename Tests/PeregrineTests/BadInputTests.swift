// Malformed and oversized input: each answered with its status, then closed;
// the server and other connections go on.
import Foundation
import Peregrine
import XCTest

final class BadInputTests: XCTestCase {
    struct Case {
        let name: String
        let wire: String
        let status: Int
    }

    static let cases: [Case] = {
        let h = "Host: h\r\n"
        var c: [Case] = [
            Case(name: "bare CR in a header value", wire: "GET / HTTP/1.1\r\n\(h)X-A: a\rb\r\n\r\n", status: 400),
            Case(name: "bare CR ending a header line", wire: "GET / HTTP/1.1\r\n\(h)X-A: a\r\r\n\r\n", status: 400),
            Case(name: "space before colon", wire: "GET / HTTP/1.1\r\n\(h)X-A : b\r\n\r\n", status: 400),
            Case(name: "space before colon in Host", wire: "GET / HTTP/1.1\r\nHost : h\r\n\r\n", status: 400),
            Case(name: "obs-fold", wire: "GET / HTTP/1.1\r\n\(h)X-A: a\r\n  folded\r\n\r\n", status: 400),
            Case(name: "obs-fold with tab", wire: "GET / HTTP/1.1\r\n\(h)X-A: a\r\n\tfolded\r\n\r\n", status: 400),
            Case(name: "Content-Length abc", wire: "POST / HTTP/1.1\r\n\(h)Content-Length: abc\r\n\r\n", status: 400),
            Case(name: "Content-Length -1", wire: "POST / HTTP/1.1\r\n\(h)Content-Length: -1\r\n\r\n", status: 400),
            Case(name: "Content-Length 1 2", wire: "POST / HTTP/1.1\r\n\(h)Content-Length: 1 2\r\n\r\nab", status: 400),
            Case(name: "two different Content-Lengths", wire: "POST / HTTP/1.1\r\n\(h)Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", status: 400),
            Case(name: "Content-Length overflowing 64 bits", wire: "POST / HTTP/1.1\r\n\(h)Content-Length: 99999999999999999999999\r\n\r\n", status: 400),
            Case(name: "Content-Length and Transfer-Encoding", wire: "POST / HTTP/1.1\r\n\(h)Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 400),
            Case(name: "Transfer-Encoding and Content-Length", wire: "POST / HTTP/1.1\r\n\(h)Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", status: 400),
            Case(name: "chunk size zz", wire: "POST / HTTP/1.1\r\n\(h)Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", status: 400),
            Case(name: "chunk size with no digits", wire: "POST / HTTP/1.1\r\n\(h)Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n", status: 400),
            Case(name: "chunk data without CRLF", wire: "POST / HTTP/1.1\r\n\(h)Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n", status: 400),
            Case(name: "request line over maxRequestLine", wire: "GET /\(String(repeating: "a", count: 300)) HTTP/1.1\r\n\(h)\r\n", status: 414),
            Case(name: "header section over maxHeaderBytes", wire: "GET / HTTP/1.1\r\n\(h)X-Big: \(String(repeating: "b", count: 1100))\r\n\r\n", status: 431),
            Case(name: "11 header fields with maxHeaders 10", wire: "GET / HTTP/1.1\r\n\(h)" + (1...10).map { "X-\($0): v\r\n" }.joined() + "\r\n", status: 431),
            Case(name: "Content-Length over maxBody (head only)", wire: "POST / HTTP/1.1\r\n\(h)Content-Length: 2048\r\n\r\n", status: 413),
            Case(name: "chunked body over maxBody", wire: "POST / HTTP/1.1\r\n\(h)Transfer-Encoding: chunked\r\n\r\n" +
                 String(repeating: "200\r\n" + String(repeating: "c", count: 512) + "\r\n", count: 3) + "0\r\n\r\n", status: 413),
            Case(name: "Transfer-Encoding gzip", wire: "POST / HTTP/1.1\r\n\(h)Transfer-Encoding: gzip\r\n\r\n", status: 501),
            Case(name: "Transfer-Encoding gzip, chunked", wire: "POST / HTTP/1.1\r\n\(h)Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", status: 501),
            Case(name: "HTTP/2.0 request line", wire: "GET / HTTP/2.0\r\n\(h)\r\n", status: 505),
            Case(name: "HTTP/1.2 request line", wire: "GET / HTTP/1.2\r\n\(h)\r\n", status: 505),
            Case(name: "missing Host in HTTP/1.1", wire: "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", status: 400),
            Case(name: "two Host headers", wire: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", status: 400),
            Case(name: "lowercase http version", wire: "GET / http/1.1\r\n\(h)\r\n", status: 400),
            Case(name: "missing target", wire: "GET HTTP/1.1\r\n\(h)\r\n", status: 400),
            Case(name: "NUL in header value", wire: "GET / HTTP/1.1\r\n\(h)X-A: a\0b\r\n\r\n", status: 400),
            Case(name: "header name with a space", wire: "GET / HTTP/1.1\r\n\(h)X A: b\r\n\r\n", status: 400),
            Case(name: "empty header name", wire: "GET / HTTP/1.1\r\n\(h): b\r\n\r\n", status: 400),
        ]
        return c
    }()

    static func configure(_ c: inout Configuration) {
        c.limits.maxRequestLine = 256
        c.limits.maxHeaderBytes = 1024
        c.limits.maxHeaders = 10
        c.limits.maxBody = 1024
    }

    /// Asserts the next thing on `s` is an error answer with `status`, then EOF.
    func assertErrorThenClose(_ s: TestSocket, _ status: Int, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            let r = try s.readResponse()
            XCTAssertEqual(r.status, status, "\(what): \(r)", file: file, line: line)
            XCTAssertEqual(r.header("Connection")?.lowercased(), "close", "\(what): error answer says Connection: close", file: file, line: line)
            let rest = try s.expectClose()
            XCTAssertEqual(rest.count, 0, "\(what): nothing after the error answer: \(String(decoding: rest, as: UTF8.self).debugDescription)", file: file, line: line)
        } catch {
            XCTFail("\(what): expected \(status) then close, got \(error)", file: file, line: line)
        }
    }

    func assertServerHealthy(_ port: Int, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            let r = try fetch(port: port, "GET /healthy HTTP/1.1\r\nHost: h\r\n\r\n")
            XCTAssertEqual(r.status, 200, "\(what): a new connection afterwards: \(r)", file: file, line: line)
            XCTAssertEqual(r.fields["target"], "/healthy", "\(what)", file: file, line: line)
        } catch {
            XCTFail("\(what): new connection afterwards failed: \(error)", file: file, line: line)
        }
    }

    // 8. each malformed request, alone on its connection
    func testMalformedRequestsAnsweredWithStatusThenClosed() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: Self.configure) { server in
                // A bystander connection that must survive every bad request
                // (not on the blocking engine: an open idle connection holds it).
                let bystander = mode.servesConcurrently ? try TestSocket(port: server.port) : nil
                for c in Self.cases {
                    let what = "[\(mode)] \(c.name)"
                    do {
                        let s = try TestSocket(port: server.port)
                        try s.send(c.wire)
                        assertErrorThenClose(s, c.status, what)
                    } catch {
                        XCTFail("\(what): \(error)")
                    }
                    assertServerHealthy(server.port, what)
                    if let bystander {
                        try bystander.send("GET /bystander HTTP/1.1\r\nHost: h\r\n\r\n")
                        XCTAssertEqual(try bystander.readResponse().fields["target"], "/bystander", "\(what): other connection untouched")
                    }
                }
            }
        }
    }

    // 8. the same, sent one byte at a time (the limits must hold incrementally)
    func testMalformedRequestsByteAtATime() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: Self.configure) { server in
                for c in Self.cases {
                    let what = "[\(mode)] byte-at-a-time \(c.name)"
                    do {
                        let s = try TestSocket(port: server.port)
                        for b in c.wire.utf8 {
                            do { try s.send([b]) } catch { break }   // the server may close early
                        }
                        assertErrorThenClose(s, c.status, what)
                    } catch {
                        XCTFail("\(what): \(error)")
                    }
                }
                assertServerHealthy(server.port, "[\(mode)] after byte-at-a-time bad input")
            }
        }
    }

    // 8. limits: just at the limit is fine
    func testLimitsBoundariesAccepted() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: Self.configure) { server in
                // 10 header fields with maxHeaders 10.
                let ten = "GET /ten HTTP/1.1\r\nHost: h\r\n" + (1...9).map { "X-\($0): v\r\n" }.joined() + "\r\n"
                let r = try fetch(port: server.port, ten)
                XCTAssertEqual(r.status, 200, "[\(mode)] exactly maxHeaders fields: \(r)")
                XCTAssertEqual(r.fields["headers"], "10", "[\(mode)]")
                // Body of exactly maxBody, both framings.
                let body = String(repeating: "q", count: 1024)
                let cl = try fetch(port: server.port, "POST /cl HTTP/1.1\r\nHost: h\r\nContent-Length: 1024\r\n\r\n" + body)
                XCTAssertEqual(cl.status, 200, "[\(mode)] CL == maxBody: \(cl)")
                XCTAssertEqual(cl.fields["body-length"], "1024", "[\(mode)]")
                let ch = try fetch(port: server.port, "POST /ch HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n\(body.prefix(512))\r\n200\r\n\(body.prefix(512))\r\n0\r\n\r\n")
                XCTAssertEqual(ch.status, 200, "[\(mode)] chunked == maxBody: \(ch)")
                XCTAssertEqual(ch.fields["body-length"], "1024", "[\(mode)]")
                // Request line of exactly 256 bytes.
                let prefix = "GET /"
                let suffix = " HTTP/1.1"
                let line = prefix + String(repeating: "t", count: 256 - prefix.count - suffix.count) + suffix
                XCTAssertEqual(line.utf8.count, 256)
                let rl = try fetch(port: server.port, line + "\r\nHost: h\r\n\r\n")
                XCTAssertEqual(rl.status, 200, "[\(mode)] request line == maxRequestLine: \(rl.statusLine)")
            }
        }
    }

    // 8. a valid request pipelined before a malformed one
    func testValidRequestBeforeMalformedOneIsAnsweredFirst() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: Self.configure) { server in
                guard mode.keepsAlive else {
                    // One request per connection: the valid one is answered
                    // with Connection: close and the malformed one never read.
                    return try assertOneRequestPerConnection(mode, port: server.port,
                        requests: "GET /first HTTP/1.1\r\nHost: h\r\n\r\n" + Self.cases[0].wire)
                }
                for c in Self.cases {
                    let what = "[\(mode)] valid then \(c.name)"
                    do {
                        let s = try TestSocket(port: server.port)
                        try s.send("GET /first HTTP/1.1\r\nHost: h\r\n\r\n" + c.wire)
                        let first = try s.readResponse()
                        XCTAssertEqual(first.status, 200, "\(what): first answer \(first)")
                        XCTAssertEqual(first.fields["target"], "/first", "\(what)")
                        assertErrorThenClose(s, c.status, what)
                    } catch {
                        XCTFail("\(what): \(error)")
                    }
                }
                assertServerHealthy(server.port, "[\(mode)] after pipelined bad input")
            }
        }
    }

    // 413 for a body that is already on its way (sent in full with the head).
    func testOversizedBodySentInFullGets413() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: Self.configure) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2048\r\n\r\n" + String(repeating: "z", count: 2048))
                assertErrorThenClose(s, 413, "[\(mode)] CL 2048 > maxBody 1024, body sent")
                assertServerHealthy(server.port, "[\(mode)] after 413")
            }
        }
    }
}
