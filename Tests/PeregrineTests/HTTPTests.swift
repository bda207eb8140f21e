// HTTP/1.x behaviour over real loopback sockets, under every trigger mode.
import Foundation
import Peregrine
import XCTest

final class HTTPTests: XCTestCase {
    // 1. keep-alive hello
    func testHelloKeepAlive100Requests() throws {
        try forEachTrigger { trigger in
            try withServer(trigger, BuiltinApp.hello.application) { server in
                let s = try TestSocket(port: server.port)
                for i in 0..<100 {
                    try s.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    let r = try s.readResponse()
                    XCTAssertEqual(r.status, 200, "[\(trigger)] request \(i): \(r)")
                    XCTAssertEqual(r.bodyString, "Hello, World!", "[\(trigger)] request \(i) body")
                    XCTAssertEqual(r.header("Content-Length"), "13", "[\(trigger)] request \(i)")
                    XCTAssertEqual(r.header("Server"), "Peregrine", "[\(trigger)] request \(i) Server header")
                    XCTAssertNotNil(r.header("Date"), "[\(trigger)] request \(i) Date header")
                    if let d = r.header("Date") {
                        XCTAssertTrue(d.hasSuffix(" GMT") && d.count == 29, "[\(trigger)] Date format: \(d)")
                    }
                    XCTAssertNil(r.header("Connection").flatMap { $0.lowercased() == "close" ? $0 : nil },
                                 "[\(trigger)] request \(i) must not close")
                    if i == 99 { XCTAssertTrue(r.statusLine.hasPrefix("HTTP/1.1 200"), "[\(trigger)] \(r.statusLine)") }
                }
                XCTAssertTrue(s.looksOpen, "[\(trigger)] connection still open after 100 requests")
                XCTAssertTrue(s.pending.isEmpty, "[\(trigger)] no stray bytes after 100 responses: \(s.pending.count)")
                // And it still works.
                try s.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                XCTAssertEqual(try s.readResponse().bodyString, "Hello, World!", "[\(trigger)] 101st request")
            }
        }
    }

    // 2. pipelining
    func testSixteenPipelinedRequestsInOneWrite() throws {
        try forEachTrigger { trigger in
            try withServer(trigger, TestApps.inspect) { server in
                let s = try TestSocket(port: server.port)
                var batch = ""
                for i in 0..<16 { batch += "GET /\(i) HTTP/1.1\r\nHost: h\r\nX-Test: n\(i)\r\n\r\n" }
                try s.send(batch)
                for i in 0..<16 {
                    let r = try s.readResponse()
                    XCTAssertEqual(r.status, 200, "[\(trigger)] pipelined \(i): \(r)")
                    XCTAssertEqual(r.fields["target"], "/\(i)", "[\(trigger)] response \(i) is for the wrong request (out of order?)")
                    XCTAssertEqual(r.fields["h:x-test"], "n\(i)", "[\(trigger)] response \(i) header view")
                }
                XCTAssertTrue(s.looksOpen, "[\(trigger)] open after pipelined batch")
                // Pipelined POSTs with bodies, mixed with GETs, in one write.
                var mixed = ""
                for i in 0..<6 {
                    if i % 2 == 0 { mixed += "POST /p\(i) HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nbody\(i)" }
                    else { mixed += "POST /p\(i) HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nd\(i)\r\n0\r\n\r\n" }
                }
                try s.send(mixed)
                for i in 0..<6 {
                    let r = try s.readResponse()
                    XCTAssertEqual(r.fields["target"], "/p\(i)", "[\(trigger)] mixed pipelined \(i)")
                    let want = i % 2 == 0 ? "body\(i)" : "abcd\(i)"
                    XCTAssertEqual(r.inspectedBody.map { String(decoding: $0, as: UTF8.self) }, want, "[\(trigger)] mixed pipelined \(i) body")
                }
            }
        }
    }

    // 3. fragmentation
    func testRequestOneByteAtATimeAndSplitAtEveryOffset() throws {
        let request = "POST /frag?q=1 HTTP/1.1\r\nHost: example\r\nX-Test: split\r\nContent-Length: 11\r\n\r\nhello world"
        let chunked = "POST /chunk HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        try forEachTrigger { trigger in
            try withServer(trigger, TestApps.inspect) { server in
                for req in [request, chunked] {
                    let reference = try fetch(port: server.port, req)
                    XCTAssertEqual(reference.status, 200, "[\(trigger)] reference \(reference)")
                    XCTAssertEqual(reference.inspectedBody.map { String(decoding: $0, as: UTF8.self) }, "hello world", "[\(trigger)] reference body")
                    let bytes = Array(req.utf8)

                    // One byte per send().
                    let s = try TestSocket(port: server.port)
                    for b in bytes { try s.send([b]) }
                    let r = try s.readResponse()
                    XCTAssertEqual(r.status, 200, "[\(trigger)] byte-at-a-time: \(r)")
                    XCTAssertEqual(r.body, reference.body, "[\(trigger)] byte-at-a-time gives a different parse")

                    // Two sends, split at every offset (keep-alive: reuse a few connections).
                    var conn = try TestSocket(port: server.port)
                    for cut in 1..<bytes.count {
                        if cut % 40 == 0 { conn = try TestSocket(port: server.port) }
                        try conn.send(Array(bytes[0..<cut]))
                        try conn.send(Array(bytes[cut...]))
                        let r = try conn.readResponse()
                        XCTAssertEqual(r.status, 200, "[\(trigger)] split at \(cut): \(r)")
                        XCTAssertEqual(r.body, reference.body, "[\(trigger)] split at \(cut) gives a different parse: \(r.bodyString.debugDescription)")
                    }
                }
            }
        }
    }

    // 4. HTTP/1.0
    func testHTTP10CloseAndKeepAlive() throws {
        try forEachTrigger { trigger in
            try withServer(trigger, TestApps.inspect) { server in
                // Without keep-alive: answered then closed.
                let a = try TestSocket(port: server.port)
                try a.send("GET /ten HTTP/1.0\r\n\r\n")
                let r = try a.readResponse()
                XCTAssertEqual(r.status, 200, "[\(trigger)] 1.0: \(r)")
                XCTAssertEqual(r.fields["version"], "1.0", "[\(trigger)] parser version")
                XCTAssertEqual(r.fields["keepalive"], "0", "[\(trigger)] 1.0 default is close")
                XCTAssertEqual(r.header("Connection")?.lowercased(), "close", "[\(trigger)] 1.0 without keep-alive says close")
                XCTAssertEqual(try a.expectClose(), [], "[\(trigger)] 1.0 connection closed after the answer, nothing more")

                // With keep-alive: stays open.
                let b = try TestSocket(port: server.port)
                try b.send("GET /ka1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                let r1 = try b.readResponse()
                XCTAssertEqual(r1.status, 200, "[\(trigger)] 1.0 keep-alive: \(r1)")
                XCTAssertEqual(r1.header("Connection")?.lowercased(), "keep-alive", "[\(trigger)] 1.0 keep-alive echoed")
                XCTAssertEqual(r1.fields["keepalive"], "1", "[\(trigger)] parser keep-alive flag")
                XCTAssertTrue(b.looksOpen, "[\(trigger)] 1.0 keep-alive connection open")
                try b.send("GET /ka2 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                let r2 = try b.readResponse()
                XCTAssertEqual(r2.fields["target"], "/ka2", "[\(trigger)] second 1.0 keep-alive request")
                XCTAssertEqual(r2.header("Connection")?.lowercased(), "keep-alive", "[\(trigger)]")
                // Final one without keep-alive closes.
                try b.send("GET /ka3 HTTP/1.0\r\n\r\n")
                XCTAssertEqual(try b.readResponse().fields["target"], "/ka3", "[\(trigger)]")
                XCTAssertEqual(try b.expectClose(), [], "[\(trigger)] closed after the last 1.0 request")
            }
        }
    }

    // 4b. streaming: chunked on 1.1, close-delimited on 1.0
    func testStreamingResponseChunkedOn11CloseDelimitedOn10() throws {
        try forEachTrigger { trigger in
            try withServer(trigger, TestApps.inspect) { server in
                let s = try TestSocket(port: server.port)
                try s.send("GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(trigger)] \(r)")
                XCTAssertEqual(r.header("Transfer-Encoding")?.lowercased(), "chunked", "[\(trigger)] 1.1 stream is chunked")
                XCTAssertNil(r.header("Content-Length"), "[\(trigger)] no Content-Length with chunked")
                XCTAssertEqual(r.bodyString, "part1 part2 part3", "[\(trigger)] decoded chunked body")
                XCTAssertEqual(r.header("Content-Type"), "text/plain", "[\(trigger)]")
                // Keep-alive still works after a chunked response.
                try s.send("GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertEqual(try s.readResponse().bodyString, "Hello, World!", "[\(trigger)] after chunked")

                let t = try TestSocket(port: server.port)
                try t.send("GET /stream HTTP/1.0\r\n\r\n")
                let r0 = try t.readResponse()
                XCTAssertEqual(r0.status, 200, "[\(trigger)] \(r0)")
                XCTAssertNil(r0.header("Transfer-Encoding"), "[\(trigger)] no chunked for 1.0")
                XCTAssertNil(r0.header("Content-Length"), "[\(trigger)]")
                XCTAssertTrue(r0.closeDelimited, "[\(trigger)] 1.0 stream ends with the close")
                XCTAssertEqual(r0.bodyString, "part1 part2 part3", "[\(trigger)] close-delimited body")

                // 1.0 keep-alive asked, but no length: the server must close anyway.
                let u = try TestSocket(port: server.port)
                try u.send("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                let r2 = try u.readResponse()
                XCTAssertTrue(r2.closeDelimited, "[\(trigger)] 1.0 keep-alive stream is close-delimited")
                XCTAssertEqual(r2.bodyString, "part1 part2 part3", "[\(trigger)]")
                XCTAssertNotEqual(r2.header("Connection")?.lowercased(), "keep-alive", "[\(trigger)] must not promise keep-alive")
            }
        }
    }

    // 5. Connection: close
    func testHTTP11ConnectionClose() throws {
        try forEachTrigger { trigger in
            try withServer(trigger, TestApps.inspect) { server in
                let s = try TestSocket(port: server.port)
                try s.send("GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(trigger)] \(r)")
                XCTAssertEqual(r.fields["keepalive"], "0", "[\(trigger)] parser sees close")
                XCTAssertEqual(r.header("Connection")?.lowercased(), "close", "[\(trigger)] answers Connection: close")
                XCTAssertEqual(try s.expectClose(), [], "[\(trigger)] closed after Connection: close")

                // Pipelined after a Connection: close: the second is not answered.
                let t = try TestSocket(port: server.port)
                try t.send("GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertEqual(try t.readResponse().fields["target"], "/a", "[\(trigger)]")
                XCTAssertEqual(try t.expectClose(), [], "[\(trigger)] nothing answered after Connection: close")
            }
        }
    }

    // 6. bodies
    func testContentLengthAndChunkedBodies() throws {
        var big = [UInt8](repeating: 0, count: 100 * 1024)
        for i in 0..<big.count { big[i] = UInt8(truncatingIfNeeded: i * 7 + i / 256) }
        try forEachTrigger { trigger in
            try withServer(trigger, TestApps.inspect) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: \(big.count)\r\n\r\n")
                try s.send(big)
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(trigger)] \(r)")
                XCTAssertEqual(r.fields["method"], "POST", "[\(trigger)]")
                XCTAssertEqual(r.fields["body-length"], String(big.count), "[\(trigger)] body length")
                XCTAssertEqual(r.fields["h:content-length"], String(big.count), "[\(trigger)]")
                XCTAssertTrue(r.inspectedBody == big, "[\(trigger)] 100 KiB body bytes differ")

                // Chunked: several chunks, an extension, a trailer.
                try s.send("POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" +
                           "4\r\nWiki\r\n" + "5;name=value;quoted=\"a b\"\r\npedia\r\n" + "E\r\n in\r\n\r\nchunks.\r\n" +
                           "1a\r\nabcdefghijklmnopqrstuvwxyz\r\n" + "0\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n")
                let c = try s.readResponse()
                XCTAssertEqual(c.status, 200, "[\(trigger)] chunked \(c)")
                let want = "Wikipedia in\r\n\r\nchunks.abcdefghijklmnopqrstuvwxyz"
                XCTAssertEqual(c.inspectedBody.map { String(decoding: $0, as: UTF8.self) }, want, "[\(trigger)] decoded chunked body")
                XCTAssertEqual(c.fields["body-length"], String(want.utf8.count), "[\(trigger)]")
                XCTAssertEqual(c.fields["h:transfer-encoding"], "chunked", "[\(trigger)]")

                // Binary chunked body of 64 KiB in 1000-byte chunks, delivered in one write.
                var wire = Array("POST /bin HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
                let payload = Array(big[0..<65536])
                var off = 0
                while off < payload.count {
                    let n = min(1000, payload.count - off)
                    wire += Array(String(n, radix: 16).utf8) + [13, 10] + payload[off..<off + n] + [13, 10]
                    off += n
                }
                wire += Array("0\r\n\r\n".utf8)
                try s.send(wire)
                let b = try s.readResponse()
                XCTAssertTrue(b.inspectedBody == payload, "[\(trigger)] 64 KiB binary chunked body differs (got \(b.inspectedBody?.count ?? -1) bytes)")

                // Empty bodies.
                try s.send("POST /empty HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
                XCTAssertEqual(try s.readResponse().fields["body-length"], "0", "[\(trigger)] CL 0")
                try s.send("POST /empty2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
                XCTAssertEqual(try s.readResponse().fields["body-length"], "0", "[\(trigger)] chunked empty")
            }
        }
    }

    // 7. Expect: 100-continue
    func testExpectContinue() throws {
        try forEachTrigger { trigger in
            try withServer(trigger, TestApps.inspect) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
                let interim = try s.readResponse()
                XCTAssertEqual(interim.status, 100, "[\(trigger)] interim answer: \(interim)")
                XCTAssertEqual(interim.rawHead, "HTTP/1.1 100 Continue\r\n\r\n", "[\(trigger)] exact 100 Continue")
                XCTAssertTrue(s.pending.isEmpty, "[\(trigger)] nothing but 100 Continue before the body")
                try s.send("hello world")
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(trigger)] final answer: \(r)")
                XCTAssertEqual(r.inspectedBody.map { String(decoding: $0, as: UTF8.self) }, "hello world", "[\(trigger)]")
                XCTAssertEqual(r.fields["h:expect"], "100-continue", "[\(trigger)]")

                // Again on the same connection, chunked this time: 100 Continue is per request.
                try s.send("POST /again HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
                let interim2 = try s.readResponse()
                XCTAssertEqual(interim2.status, 100, "[\(trigger)] second 100 Continue: \(interim2)")
                try s.send("3\r\nabc\r\n0\r\n\r\n")
                let r2 = try s.readResponse()
                XCTAssertEqual(r2.fields["target"], "/again", "[\(trigger)]")
                XCTAssertEqual(r2.inspectedBody.map { String(decoding: $0, as: UTF8.self) }, "abc", "[\(trigger)]")
            }
        }
    }

    // 9. half-closed client
    func testHalfClosedClientStillGetsAnswers() throws {
        try forEachTrigger { trigger in
            try withServer(trigger, TestApps.inspect) { server in
                let s = try TestSocket(port: server.port)
                try s.send("GET /half HTTP/1.1\r\nHost: h\r\n\r\n")
                s.shutdownWrite()
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(trigger)] \(r)")
                XCTAssertEqual(r.fields["target"], "/half", "[\(trigger)]")
                XCTAssertEqual(try s.expectClose(), [], "[\(trigger)] EOF after the answer to a half-closed client")

                let p = try TestSocket(port: server.port)
                try p.send("GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nPOST /3 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz")
                p.shutdownWrite()
                for i in 1...3 {
                    let r = try p.readResponse()
                    XCTAssertEqual(r.fields["target"], "/\(i)", "[\(trigger)] pipelined + SHUT_WR, answer \(i)")
                }
                XCTAssertEqual(try p.expectClose(), [], "[\(trigger)] EOF after 3 answers")

                // Big response to a half-closed client: delivered in full.
                let b = try TestSocket(port: server.port)
                try b.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
                b.shutdownWrite()
                let big = try b.readResponse()
                XCTAssertEqual(big.body.count, TestApps.bigBodySize, "[\(trigger)] 4 MiB to a half-closed client")
                XCTAssertEqual(try b.expectClose(), [], "[\(trigger)]")
            }
        }
    }

    // 14. response writer rules
    func testResponseWriterRules() throws {
        try forEachTrigger { trigger in
            try withServer(trigger, TestApps.inspect) { server in
                let s = try TestSocket(port: server.port)
                try s.send("GET /inject HTTP/1.1\r\nHost: h\r\n\r\n")
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(trigger)] \(r)")
                XCTAssertTrue(r.bodyString.contains("injected=false"), "[\(trigger)] header() with CRLF must return false: \(r.bodyString)")
                XCTAssertTrue(r.bodyString.contains("lf=false"), "[\(trigger)] header() with LF must return false")
                XCTAssertTrue(r.bodyString.contains("nul=false"), "[\(trigger)] header() with NUL must return false")
                XCTAssertTrue(r.bodyString.contains("badname=false"), "[\(trigger)] header() with a non-token name must return false")
                XCTAssertTrue(r.bodyString.contains("good=true"), "[\(trigger)] a normal header is accepted")
                XCTAssertNil(r.header("X-Injected"), "[\(trigger)] refused header absent")
                XCTAssertNil(r.header("Evil"), "[\(trigger)] no injected header")
                XCTAssertNil(r.header("Evil2"), "[\(trigger)] no injected header")
                XCTAssertFalse(r.rawHead.contains("Evil"), "[\(trigger)] head: \(r.rawHead)")
                XCTAssertEqual(r.header("X-Good"), "fine", "[\(trigger)]")

                // HEAD: Content-Length 13, no body (the next pipelined response parses cleanly).
                try s.send("HEAD /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                let h = try s.readResponse(expectBody: false)
                XCTAssertEqual(h.status, 200, "[\(trigger)] HEAD: \(h)")
                XCTAssertEqual(h.header("Content-Length"), "13", "[\(trigger)] HEAD Content-Length")
                try s.send("GET /after-head HTTP/1.1\r\nHost: h\r\n\r\n")
                let after = try s.readResponse()
                XCTAssertEqual(after.status, 200, "[\(trigger)] response after HEAD: \(after) (HEAD leaked body bytes?)")
                XCTAssertEqual(after.fields["target"], "/after-head", "[\(trigger)]")

                // HEAD to the hello app exactly, pipelined with a GET.
                try withServer(trigger, BuiltinApp.hello.application) { hello in
                    let t = try TestSocket(port: hello.port)
                    try t.send("HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
                    let hh = try t.readResponse(expectBody: false)
                    XCTAssertEqual(hh.header("Content-Length"), "13", "[\(trigger)] hello HEAD")
                    let g = try t.readResponse()
                    XCTAssertTrue(g.statusLine.hasPrefix("HTTP/1.1 200"), "[\(trigger)] GET after HEAD: \(g.statusLine)")
                    XCTAssertEqual(g.bodyString, "Hello, World!", "[\(trigger)]")
                    XCTAssertTrue(t.pending.isEmpty, "[\(trigger)] stray bytes: \(String(decoding: t.pending, as: UTF8.self).debugDescription)")
                }

                // A handler that does not answer: 500, connection keeps working.
                try s.send("GET /noanswer HTTP/1.1\r\nHost: h\r\n\r\n")
                let n = try s.readResponse()
                XCTAssertEqual(n.status, 500, "[\(trigger)] unanswered request: \(n)")
                XCTAssertNotEqual(n.header("Connection")?.lowercased(), "close", "[\(trigger)] 500 keeps the connection")
                try s.send("GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertEqual(try s.readResponse().bodyString, "Hello, World!", "[\(trigger)] after a 500")

                // HEAD to a streaming route: no chunk bytes.
                try s.send("HEAD /stream HTTP/1.1\r\nHost: h\r\n\r\nGET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                let hs = try s.readResponse(expectBody: false)
                XCTAssertEqual(hs.status, 200, "[\(trigger)] HEAD /stream")
                let g2 = try s.readResponse()
                XCTAssertEqual(g2.bodyString, "Hello, World!", "[\(trigger)] GET after HEAD /stream: \(g2)")
            }
        }
    }
}
