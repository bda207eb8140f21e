// HTTP/1.x behaviour over real loopback sockets, under every trigger mode.
import Foundation
import Peregrine
import XCTest

final class HTTPTests: XCTestCase {
    // 1. keep-alive hello
    func testHelloKeepAlive100Requests() throws {
        try forEachEngine { mode in
            try withServer(mode, BuiltinApp.hello.application) { server in
                guard mode.keepsAlive else {
                    return try assertOneRequestPerConnection(mode, port: server.port,
                        requests: "GET / HTTP/1.1\r\nHost: localhost\r\n\r\nGET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                }
                let s = try TestSocket(port: server.port)
                for i in 0..<100 {
                    try s.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    let r = try s.readResponse()
                    XCTAssertEqual(r.status, 200, "[\(mode)] request \(i): \(r)")
                    XCTAssertEqual(r.bodyString, "Hello, World!", "[\(mode)] request \(i) body")
                    XCTAssertEqual(r.header("Content-Length"), "13", "[\(mode)] request \(i)")
                    XCTAssertEqual(r.header("Server"), "Peregrine", "[\(mode)] request \(i) Server header")
                    XCTAssertNotNil(r.header("Date"), "[\(mode)] request \(i) Date header")
                    if let d = r.header("Date") {
                        XCTAssertTrue(d.hasSuffix(" GMT") && d.count == 29, "[\(mode)] Date format: \(d)")
                    }
                    XCTAssertNil(r.header("Connection").flatMap { $0.lowercased() == "close" ? $0 : nil },
                                 "[\(mode)] request \(i) must not close")
                    if i == 99 { XCTAssertTrue(r.statusLine.hasPrefix("HTTP/1.1 200"), "[\(mode)] \(r.statusLine)") }
                }
                XCTAssertTrue(s.looksOpen, "[\(mode)] connection still open after 100 requests")
                XCTAssertTrue(s.pending.isEmpty, "[\(mode)] no stray bytes after 100 responses: \(s.pending.count)")
                // And it still works.
                try s.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                XCTAssertEqual(try s.readResponse().bodyString, "Hello, World!", "[\(mode)] 101st request")
            }
        }
    }

    // 2. pipelining
    func testSixteenPipelinedRequestsInOneWrite() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                guard mode.keepsAlive else {
                    return try assertOneRequestPerConnection(mode, port: server.port,
                        requests: "GET /0 HTTP/1.1\r\nHost: h\r\n\r\nGET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
                }
                let s = try TestSocket(port: server.port)
                var batch = ""
                for i in 0..<16 { batch += "GET /\(i) HTTP/1.1\r\nHost: h\r\nX-Test: n\(i)\r\n\r\n" }
                try s.send(batch)
                for i in 0..<16 {
                    let r = try s.readResponse()
                    XCTAssertEqual(r.status, 200, "[\(mode)] pipelined \(i): \(r)")
                    XCTAssertEqual(r.fields["target"], "/\(i)", "[\(mode)] response \(i) is for the wrong request (out of order?)")
                    XCTAssertEqual(r.fields["h:x-test"], "n\(i)", "[\(mode)] response \(i) header view")
                }
                XCTAssertTrue(s.looksOpen, "[\(mode)] open after pipelined batch")
                // Pipelined POSTs with bodies, mixed with GETs, in one write.
                var mixed = ""
                for i in 0..<6 {
                    if i % 2 == 0 { mixed += "POST /p\(i) HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nbody\(i)" }
                    else { mixed += "POST /p\(i) HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nd\(i)\r\n0\r\n\r\n" }
                }
                try s.send(mixed)
                for i in 0..<6 {
                    let r = try s.readResponse()
                    XCTAssertEqual(r.fields["target"], "/p\(i)", "[\(mode)] mixed pipelined \(i)")
                    let want = i % 2 == 0 ? "body\(i)" : "abcd\(i)"
                    XCTAssertEqual(r.inspectedBody.map { String(decoding: $0, as: UTF8.self) }, want, "[\(mode)] mixed pipelined \(i) body")
                }
            }
        }
    }

    // 3. fragmentation
    func testRequestOneByteAtATimeAndSplitAtEveryOffset() throws {
        let request = "POST /frag?q=1 HTTP/1.1\r\nHost: example\r\nX-Test: split\r\nContent-Length: 11\r\n\r\nhello world"
        let chunked = "POST /chunk HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                for req in [request, chunked] {
                    let reference = try fetch(port: server.port, req)
                    XCTAssertEqual(reference.status, 200, "[\(mode)] reference \(reference)")
                    XCTAssertEqual(reference.inspectedBody.map { String(decoding: $0, as: UTF8.self) }, "hello world", "[\(mode)] reference body")
                    let bytes = Array(req.utf8)

                    // One byte per send().
                    let s = try TestSocket(port: server.port)
                    for b in bytes { try s.send([b]) }
                    let r = try s.readResponse()
                    XCTAssertEqual(r.status, 200, "[\(mode)] byte-at-a-time: \(r)")
                    XCTAssertEqual(r.body, reference.body, "[\(mode)] byte-at-a-time gives a different parse")

                    // Two sends, split at every offset (keep-alive: reuse a few connections).
                    var conn = try Session(mode, port: server.port)
                    for cut in 1..<bytes.count {
                        if cut % 40 == 0 { conn = try Session(mode, port: server.port) }
                        try conn.send(Array(bytes[0..<cut]))
                        try conn.send(Array(bytes[cut...]))
                        let r = try conn.readResponse()
                        XCTAssertEqual(r.status, 200, "[\(mode)] split at \(cut): \(r)")
                        XCTAssertEqual(r.body, reference.body, "[\(mode)] split at \(cut) gives a different parse: \(r.bodyString.debugDescription)")
                    }
                }
            }
        }
    }

    // 4. HTTP/1.0
    func testHTTP10CloseAndKeepAlive() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                // Without keep-alive: answered then closed.
                let a = try TestSocket(port: server.port)
                try a.send("GET /ten HTTP/1.0\r\n\r\n")
                let r = try a.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)] 1.0: \(r)")
                XCTAssertEqual(r.fields["version"], "1.0", "[\(mode)] parser version")
                XCTAssertEqual(r.fields["keepalive"], "0", "[\(mode)] 1.0 default is close")
                XCTAssertEqual(r.header("Connection")?.lowercased(), "close", "[\(mode)] 1.0 without keep-alive says close")
                XCTAssertEqual(try a.expectClose(), [], "[\(mode)] 1.0 connection closed after the answer, nothing more")

                // With keep-alive: stays open.
                guard mode.keepsAlive else {
                    return try assertOneRequestPerConnection(mode, port: server.port,
                        requests: "GET /ka1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /ka2 HTTP/1.0\r\n\r\n")
                }
                let b = try TestSocket(port: server.port)
                try b.send("GET /ka1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                let r1 = try b.readResponse()
                XCTAssertEqual(r1.status, 200, "[\(mode)] 1.0 keep-alive: \(r1)")
                XCTAssertEqual(r1.header("Connection")?.lowercased(), "keep-alive", "[\(mode)] 1.0 keep-alive echoed")
                XCTAssertEqual(r1.fields["keepalive"], "1", "[\(mode)] parser keep-alive flag")
                XCTAssertTrue(b.looksOpen, "[\(mode)] 1.0 keep-alive connection open")
                try b.send("GET /ka2 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                let r2 = try b.readResponse()
                XCTAssertEqual(r2.fields["target"], "/ka2", "[\(mode)] second 1.0 keep-alive request")
                XCTAssertEqual(r2.header("Connection")?.lowercased(), "keep-alive", "[\(mode)]")
                // Final one without keep-alive closes.
                try b.send("GET /ka3 HTTP/1.0\r\n\r\n")
                XCTAssertEqual(try b.readResponse().fields["target"], "/ka3", "[\(mode)]")
                XCTAssertEqual(try b.expectClose(), [], "[\(mode)] closed after the last 1.0 request")
            }
        }
    }

    // 4b. streaming: chunked on 1.1, close-delimited on 1.0
    func testStreamingResponseChunkedOn11CloseDelimitedOn10() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                let s = try Session(mode, port: server.port)
                try s.send("GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)] \(r)")
                XCTAssertEqual(r.header("Transfer-Encoding")?.lowercased(), "chunked", "[\(mode)] 1.1 stream is chunked")
                XCTAssertNil(r.header("Content-Length"), "[\(mode)] no Content-Length with chunked")
                XCTAssertEqual(r.bodyString, "part1 part2 part3", "[\(mode)] decoded chunked body")
                XCTAssertEqual(r.header("Content-Type"), "text/plain", "[\(mode)]")
                // Keep-alive still works after a chunked response.
                try s.send("GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertEqual(try s.readResponse().bodyString, "Hello, World!", "[\(mode)] after chunked")

                let t = try TestSocket(port: server.port)
                try t.send("GET /stream HTTP/1.0\r\n\r\n")
                let r0 = try t.readResponse()
                XCTAssertEqual(r0.status, 200, "[\(mode)] \(r0)")
                XCTAssertNil(r0.header("Transfer-Encoding"), "[\(mode)] no chunked for 1.0")
                XCTAssertNil(r0.header("Content-Length"), "[\(mode)]")
                XCTAssertTrue(r0.closeDelimited, "[\(mode)] 1.0 stream ends with the close")
                XCTAssertEqual(r0.bodyString, "part1 part2 part3", "[\(mode)] close-delimited body")

                // 1.0 keep-alive asked, but no length: the server must close anyway.
                let u = try TestSocket(port: server.port)
                try u.send("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                let r2 = try u.readResponse()
                XCTAssertTrue(r2.closeDelimited, "[\(mode)] 1.0 keep-alive stream is close-delimited")
                XCTAssertEqual(r2.bodyString, "part1 part2 part3", "[\(mode)]")
                XCTAssertNotEqual(r2.header("Connection")?.lowercased(), "keep-alive", "[\(mode)] must not promise keep-alive")
            }
        }
    }

    // 5. Connection: close
    func testHTTP11ConnectionClose() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                let s = try TestSocket(port: server.port)
                try s.send("GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)] \(r)")
                XCTAssertEqual(r.fields["keepalive"], "0", "[\(mode)] parser sees close")
                XCTAssertEqual(r.header("Connection")?.lowercased(), "close", "[\(mode)] answers Connection: close")
                XCTAssertEqual(try s.expectClose(), [], "[\(mode)] closed after Connection: close")

                // Pipelined after a Connection: close: the second is not answered.
                let t = try TestSocket(port: server.port)
                try t.send("GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertEqual(try t.readResponse().fields["target"], "/a", "[\(mode)]")
                XCTAssertEqual(try t.expectClose(), [], "[\(mode)] nothing answered after Connection: close")
            }
        }
    }

    // 6. bodies
    func testContentLengthAndChunkedBodies() throws {
        var big = [UInt8](repeating: 0, count: 100 * 1024)
        for i in 0..<big.count { big[i] = UInt8(truncatingIfNeeded: i * 7 + i / 256) }
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                let s = try Session(mode, port: server.port)
                try s.send("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: \(big.count)\r\n\r\n")
                try s.send(big)
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)] \(r)")
                XCTAssertEqual(r.fields["method"], "POST", "[\(mode)]")
                XCTAssertEqual(r.fields["body-length"], String(big.count), "[\(mode)] body length")
                XCTAssertEqual(r.fields["h:content-length"], String(big.count), "[\(mode)]")
                XCTAssertTrue(r.inspectedBody == big, "[\(mode)] 100 KiB body bytes differ")

                // Chunked: several chunks, an extension, a trailer.
                try s.send("POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" +
                           "4\r\nWiki\r\n" + "5;name=value;quoted=\"a b\"\r\npedia\r\n" + "E\r\n in\r\n\r\nchunks.\r\n" +
                           "1a\r\nabcdefghijklmnopqrstuvwxyz\r\n" + "0\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n")
                let c = try s.readResponse()
                XCTAssertEqual(c.status, 200, "[\(mode)] chunked \(c)")
                let want = "Wikipedia in\r\n\r\nchunks.abcdefghijklmnopqrstuvwxyz"
                XCTAssertEqual(c.inspectedBody.map { String(decoding: $0, as: UTF8.self) }, want, "[\(mode)] decoded chunked body")
                XCTAssertEqual(c.fields["body-length"], String(want.utf8.count), "[\(mode)]")
                XCTAssertEqual(c.fields["h:transfer-encoding"], "chunked", "[\(mode)]")

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
                XCTAssertTrue(b.inspectedBody == payload, "[\(mode)] 64 KiB binary chunked body differs (got \(b.inspectedBody?.count ?? -1) bytes)")

                // Empty bodies.
                try s.send("POST /empty HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
                XCTAssertEqual(try s.readResponse().fields["body-length"], "0", "[\(mode)] CL 0")
                try s.send("POST /empty2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
                XCTAssertEqual(try s.readResponse().fields["body-length"], "0", "[\(mode)] chunked empty")
            }
        }
    }

    // 7. Expect: 100-continue
    func testExpectContinue() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                let s = try Session(mode, port: server.port)
                try s.send("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
                let interim = try s.readResponse()
                XCTAssertEqual(interim.status, 100, "[\(mode)] interim answer: \(interim)")
                XCTAssertEqual(interim.rawHead, "HTTP/1.1 100 Continue\r\n\r\n", "[\(mode)] exact 100 Continue")
                XCTAssertTrue(s.pending.isEmpty, "[\(mode)] nothing but 100 Continue before the body")
                try s.send("hello world")
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)] final answer: \(r)")
                XCTAssertEqual(r.inspectedBody.map { String(decoding: $0, as: UTF8.self) }, "hello world", "[\(mode)]")
                XCTAssertEqual(r.fields["h:expect"], "100-continue", "[\(mode)]")

                // Again on the same connection, chunked this time: 100 Continue is per request.
                try s.send("POST /again HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
                let interim2 = try s.readResponse()
                XCTAssertEqual(interim2.status, 100, "[\(mode)] second 100 Continue: \(interim2)")
                try s.send("3\r\nabc\r\n0\r\n\r\n")
                let r2 = try s.readResponse()
                XCTAssertEqual(r2.fields["target"], "/again", "[\(mode)]")
                XCTAssertEqual(r2.inspectedBody.map { String(decoding: $0, as: UTF8.self) }, "abc", "[\(mode)]")
            }
        }
    }

    // 9. half-closed client
    func testHalfClosedClientStillGetsAnswers() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                let s = try TestSocket(port: server.port)
                try s.send("GET /half HTTP/1.1\r\nHost: h\r\n\r\n")
                s.shutdownWrite()
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)] \(r)")
                XCTAssertEqual(r.fields["target"], "/half", "[\(mode)]")
                XCTAssertEqual(try s.expectClose(), [], "[\(mode)] EOF after the answer to a half-closed client")

                if mode.keepsAlive {   // pipelined: the blocking engine answers one request per connection
                    let p = try TestSocket(port: server.port)
                    try p.send("GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nPOST /3 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz")
                    p.shutdownWrite()
                    for i in 1...3 {
                        let r = try p.readResponse()
                        XCTAssertEqual(r.fields["target"], "/\(i)", "[\(mode)] pipelined + SHUT_WR, answer \(i)")
                    }
                    XCTAssertEqual(try p.expectClose(), [], "[\(mode)] EOF after 3 answers")
                }

                // Big response to a half-closed client: delivered in full.
                let b = try TestSocket(port: server.port)
                try b.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
                b.shutdownWrite()
                let big = try b.readResponse()
                XCTAssertEqual(big.body.count, TestApps.bigBodySize, "[\(mode)] 4 MiB to a half-closed client")
                XCTAssertEqual(try b.expectClose(), [], "[\(mode)]")
            }
        }
    }

    // 14. response writer rules
    func testResponseWriterRules() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                let s = try Session(mode, port: server.port)
                try s.send("GET /inject HTTP/1.1\r\nHost: h\r\n\r\n")
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)] \(r)")
                XCTAssertTrue(r.bodyString.contains("injected=false"), "[\(mode)] header() with CRLF must return false: \(r.bodyString)")
                XCTAssertTrue(r.bodyString.contains("lf=false"), "[\(mode)] header() with LF must return false")
                XCTAssertTrue(r.bodyString.contains("nul=false"), "[\(mode)] header() with NUL must return false")
                XCTAssertTrue(r.bodyString.contains("badname=false"), "[\(mode)] header() with a non-token name must return false")
                XCTAssertTrue(r.bodyString.contains("good=true"), "[\(mode)] a normal header is accepted")
                XCTAssertNil(r.header("X-Injected"), "[\(mode)] refused header absent")
                XCTAssertNil(r.header("Evil"), "[\(mode)] no injected header")
                XCTAssertNil(r.header("Evil2"), "[\(mode)] no injected header")
                XCTAssertFalse(r.rawHead.contains("Evil"), "[\(mode)] head: \(r.rawHead)")
                XCTAssertEqual(r.header("X-Good"), "fine", "[\(mode)]")

                // HEAD: Content-Length 13, no body (the next pipelined response parses cleanly).
                try s.send("HEAD /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                let h = try s.readResponse(expectBody: false)
                XCTAssertEqual(h.status, 200, "[\(mode)] HEAD: \(h)")
                XCTAssertEqual(h.header("Content-Length"), "13", "[\(mode)] HEAD Content-Length")
                try s.send("GET /after-head HTTP/1.1\r\nHost: h\r\n\r\n")
                let after = try s.readResponse()
                XCTAssertEqual(after.status, 200, "[\(mode)] response after HEAD: \(after) (HEAD leaked body bytes?)")
                XCTAssertEqual(after.fields["target"], "/after-head", "[\(mode)]")

                // HEAD to the hello app exactly, pipelined with a GET.
                try withServer(mode, BuiltinApp.hello.application) { hello in
                    guard mode.keepsAlive else { return }   // pipelined: covered by testSixteenPipelined…
                    let t = try TestSocket(port: hello.port)
                    try t.send("HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
                    let hh = try t.readResponse(expectBody: false)
                    XCTAssertEqual(hh.header("Content-Length"), "13", "[\(mode)] hello HEAD")
                    let g = try t.readResponse()
                    XCTAssertTrue(g.statusLine.hasPrefix("HTTP/1.1 200"), "[\(mode)] GET after HEAD: \(g.statusLine)")
                    XCTAssertEqual(g.bodyString, "Hello, World!", "[\(mode)]")
                    XCTAssertTrue(t.pending.isEmpty, "[\(mode)] stray bytes: \(String(decoding: t.pending, as: UTF8.self).debugDescription)")
                }

                // A handler that does not answer: 500, connection keeps working.
                try s.send("GET /noanswer HTTP/1.1\r\nHost: h\r\n\r\n")
                let n = try s.readResponse()
                XCTAssertEqual(n.status, 500, "[\(mode)] unanswered request: \(n)")
                if mode.keepsAlive {
                    XCTAssertNotEqual(n.header("Connection")?.lowercased(), "close", "[\(mode)] 500 keeps the connection")
                }
                try s.send("GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertEqual(try s.readResponse().bodyString, "Hello, World!", "[\(mode)] after a 500")

                // HEAD to a streaming route: no chunk bytes.
                if mode.keepsAlive {   // pipelined: leaked chunk bytes would corrupt the next answer
                    try s.send("HEAD /stream HTTP/1.1\r\nHost: h\r\n\r\nGET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                } else {
                    try s.send("HEAD /stream HTTP/1.1\r\nHost: h\r\n\r\n")
                }
                let hs = try s.readResponse(expectBody: false)
                XCTAssertEqual(hs.status, 200, "[\(mode)] HEAD /stream")
                if !mode.keepsAlive { try s.send("GET /hello HTTP/1.1\r\nHost: h\r\n\r\n") }
                let g2 = try s.readResponse()
                XCTAssertEqual(g2.bodyString, "Hello, World!", "[\(mode)] GET after HEAD /stream: \(g2)")
            }
        }
    }
}
