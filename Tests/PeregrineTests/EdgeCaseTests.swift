// Beyond the basics: big pipelined bursts, accept storms, HTTP-mode
// backpressure, stop() with live clients, parser corner cases.
import Foundation
import Peregrine
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class EdgeCaseTests: XCTestCase {
    // 2000 requests in one write: more than one receive buffer and more than the
    // edge-mode reads-per-wakeup cap.
    func testTwoThousandPipelinedRequests() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                guard mode.keepsAlive else {
                    return try assertOneRequestPerConnection(mode, port: server.port,
                        requests: String(repeating: "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n", count: 2000))
                }
                let s = try TestSocket(port: server.port)
                var wire = ""
                for i in 0..<2000 { wire += i % 3 == 0 ? "GET /\(i) HTTP/1.1\r\nHost: h\r\n\r\n" : "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n" }
                let bytes = Array(wire.utf8)
                let err = LockedList<String>()
                let sender = TestThread { do { try s.send(bytes) } catch { err.append("\(error)") } }
                var bad = 0
                do {
                    for i in 0..<2000 {
                        let r = try s.readResponse()
                        let ok = i % 3 == 0 ? r.fields["target"] == "/\(i)" : r.bodyString == "Hello, World!"
                        if !ok || r.status != 200 {
                            bad += 1
                            if bad < 5 { XCTFail("[\(mode)] response \(i) wrong: \(r)") }
                        }
                    }
                } catch {
                    XCTFail("[\(mode)] reading 2000 pipelined responses: \(error)")
                }
                XCTAssertTrue(sender.join(), "[\(mode)] the sender did not finish")
                XCTAssertEqual(err.all, [], "[\(mode)] sender")
                XCTAssertEqual(bad, 0, "[\(mode)] wrong responses")
                XCTAssertTrue(s.looksOpen, "[\(mode)]")
            }
        }
    }

    // More simultaneous connects than the accept cap per wakeup (64).
    func testAcceptStormOf300Connections() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: { $0.backlog = 1024 }) { server in
                var socks: [TestSocket] = []
                for _ in 0..<300 { socks.append(try TestSocket(port: server.port)) }
                for (i, s) in socks.enumerated() { try s.send("GET /c\(i) HTTP/1.1\r\nHost: h\r\n\r\n") }
                var failed = 0
                for (i, s) in socks.enumerated() {
                    do {
                        let r = try s.readResponse()
                        if r.fields["target"] != "/c\(i)" { failed += 1 }
                    } catch {
                        failed += 1
                        if failed < 4 { XCTFail("[\(mode)] connection \(i) of 300: \(error)") }
                    }
                }
                XCTAssertEqual(failed, 0, "[\(mode)] connections of 300 not answered")
            }
        }
    }

    // Independent parser state: partial requests on many connections,
    // completed in reverse order.
    func testInterleavedPartialRequestsOnManyConnections() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                guard mode.servesConcurrently else { return try assertOneClientAtATime(mode, port: server.port) }
                let n = 20
                var socks: [TestSocket] = []
                for i in 0..<n {
                    let s = try TestSocket(port: server.port)
                    try s.send("POST /p\(i) HTTP/1.1\r\nHost: h\r\nContent-Length: \(String(i).count + 4)\r\n\r\nbo")
                    socks.append(s)
                }
                // Every connection holds its partial request in the server at once.
                for (i, s) in socks.enumerated() {
                    XCTAssertTrue(s.waitUntilServerHasRead(), "[\(mode)] partial request \(i) was not read")
                }
                for i in stride(from: n - 1, through: 0, by: -1) {
                    try socks[i].send("dy\(i)")
                    let r = try socks[i].readResponse()
                    XCTAssertEqual(r.fields["target"], "/p\(i)", "[\(mode)] connection \(i)")
                    XCTAssertEqual(r.inspectedBody.map { String(decoding: $0, as: UTF8.self) }, "body\(i)", "[\(mode)] connection \(i) body")
                }
            }
        }
    }

    // HTTP-mode backpressure: 8 pipelined 4 MiB answers to a slow reader.
    func testPipelinedLargeResponsesToSlowReaderStayBounded() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: { $0.maxOutputPerConnection = 256 * 1024 }) { server in
                // Pipelined: the blocking engine answers the first and closes
                // (testTwoThousandPipelinedRequests checks that), and writes
                // with blocking sends, so its output never queues anyway.
                guard mode.keepsAlive else { return }
                let s = try TestSocket(port: server.port)
                let rssBefore = residentKiB()
                try s.send(String(repeating: "GET /big HTTP/1.1\r\nHost: h\r\n\r\n", count: 8) + "GET /last HTTP/1.1\r\nHost: h\r\n\r\n")
                // The server holds all nine requests (it could run ahead) ...
                XCTAssertTrue(s.waitUntilServerHasRead(), "[\(mode)] the pipelined requests were not read")
                // ... and is given 200 ms with a reader that does not read: the
                // subject. Rendering 32 MiB ahead takes far less; memory must not grow.
                usleep(200_000)
                let rssQueued = residentKiB()
                var answered = 0
                do {
                    for i in 0..<8 {
                        let r = try s.readResponse()
                        XCTAssertEqual(r.body.count, TestApps.bigBodySize, "[\(mode)] big response \(i)")
                        answered += 1
                    }
                    XCTAssertEqual(try s.readResponse().fields["target"], "/last", "[\(mode)] the request after 8 big ones")
                } catch {
                    XCTFail("[\(mode)] stalled after \(answered) of 8 pipelined 4 MiB answers (+\(s.pending.count) bytes of the next): \(error)")
                    return
                }
                XCTAssertLessThan(rssQueued - rssBefore, 24 * 1024,
                                  "[\(mode)] VmRSS grew \(rssQueued - rssBefore) KiB while 32 MiB of answers waited for a reader")
            }
        }
    }

    // stop() with idle, half-sent and busy connections: returns and closes them.
    func testStopWithLiveConnections() throws {
        try forEachEngine { mode in
            let server = try startServer(mode, TestApps.inspect) { $0.threads = mode.runsSeveralLoops ? 2 : 1 }
            let idle = try TestSocket(port: server.port)
            try idle.send("GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
            _ = try idle.readResponse()
            let partial = try TestSocket(port: server.port)
            try partial.send("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc")
            let busy = try TestSocket(port: server.port)
            try busy.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
            // Each in the state its name says: partial read, busy answered and
            // stalled (one client at a time: busy waits in the backlog).
            XCTAssertTrue(partial.waitUntilServerHasRead(), "[\(mode)] the half-sent request was not read")
            if mode.servesConcurrently {
                XCTAssertTrue(busy.waitReadable(), "[\(mode)] /big was not answered")
            }
            let done = DispatchSemaphore(value: 0)
            let box = LockedList<Server>()
            box.append(server)
            Thread { box.all[0].stop(); done.signal() }.start()
            XCTAssertEqual(done.wait(timeout: .now() + 5), .success, "[\(mode)] stop() returns with live connections")
            XCTAssertNoThrow(try idle.expectClose(), "[\(mode)] idle connection closed by stop()")
            XCTAssertNoThrow(try partial.expectClose(), "[\(mode)] half-sent request closed by stop()")
            XCTAssertNoThrow(try busy.expectClose(), "[\(mode)] busy connection closed by stop()")
            XCTAssertThrowsError(try TestSocket(port: server.port).send("x"), "[\(mode)] nothing listens after stop()") { _ in }
        }
    }

    // Expect: 100-continue for a body over the limit: 413 at once, no 100.
    func testExpectContinueOverLimitGets413Not100() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: { $0.limits.maxBody = 1024 }) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 413, "[\(mode)] \(r)")
                XCTAssertNoThrow(try s.expectClose(), "[\(mode)] closed after 413")
            }
        }
    }

    // A body far over the limit, sent in full with the head: the 413 must
    // still reach the client (no RST from closing with unread input).
    func testHugeOversizedBodyStillGets413() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: { $0.limits.maxBody = 1024 }) { server in
                let s = try TestSocket(port: server.port)
                let body = [UInt8](repeating: 0x41, count: 200_000)
                let err = LockedList<String>()
                let sender = TestThread {
                    do { try s.send(Array("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 200000\r\n\r\n".utf8) + body) }
                    catch { err.append("\(error)") }   // the server may stop reading: that is fine
                }
                do {
                    let r = try s.readResponse()
                    XCTAssertEqual(r.status, 413, "[\(mode)] \(r)")
                } catch {
                    XCTFail("[\(mode)] the 413 answer was lost: \(error)")
                }
                XCTAssertTrue(sender.join(), "[\(mode)] the sender did not finish")
                let r2 = try fetch(port: server.port, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertEqual(r2.bodyString, "Hello, World!", "[\(mode)] server fine afterwards")
            }
        }
    }

    // Body exactly at the default 1 MiB limit passes; one byte more is 413.
    func testDefaultOneMiBBodyLimit() throws {
        let limit = Limits().maxBody
        var body = [UInt8](repeating: 0, count: limit)
        for i in 0..<limit { body[i] = UInt8(truncatingIfNeeded: i &* 2654435761 >> 13) }
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                let s = try Session(mode, port: server.port)
                try s.send("POST /max HTTP/1.1\r\nHost: h\r\nContent-Length: \(limit)\r\n\r\n")
                try s.send(body)
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)] body == maxBody: \(r.statusLine)")
                XCTAssertTrue(r.inspectedBody == body, "[\(mode)] 1 MiB body bytes")

                // Chunked, 4 KiB chunks, same total.
                var wire = Array("POST /maxc HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
                var off = 0
                while off < limit { wire += Array("1000\r\n".utf8) + body[off..<off + 4096] + [13, 10]; off += 4096 }
                wire += Array("0\r\n\r\n".utf8)
                try s.send(wire)
                let c = try s.readResponse()
                XCTAssertEqual(c.status, 200, "[\(mode)] chunked body == maxBody: \(c.statusLine)")
                XCTAssertTrue(c.inspectedBody == body, "[\(mode)] 1 MiB chunked body bytes")

                let t = try TestSocket(port: server.port)
                try t.send("POST /over HTTP/1.1\r\nHost: h\r\nContent-Length: \(limit + 1)\r\n\r\n")
                XCTAssertEqual(try t.readResponse().status, 413, "[\(mode)] maxBody + 1")
            }
        }
    }

    // Parser corner cases that must be accepted.
    func testParserAcceptsValidCornerCases() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                let s = try Session(mode, port: server.port)
                // Leading empty line before a request.
                try s.send("\r\nGET /lead HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertEqual(try s.readResponse().fields["target"], "/lead", "[\(mode)] leading CRLF")
                // Header names are case-insensitive; values are trimmed.
                try s.send("POST /case HTTP/1.1\r\nhOsT: h\r\nx-test:   padded value \t\r\ncontent-LENGTH: 3\r\n\r\nabc")
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)] \(r)")
                XCTAssertEqual(r.fields["h:x-test"], "padded value", "[\(mode)] trimmed value")
                XCTAssertEqual(r.inspectedBody.map { String(decoding: $0, as: UTF8.self) }, "abc", "[\(mode)] lowercase content-length")
                try s.send("POST /te HTTP/1.1\r\nHost: h\r\nTRANSFER-ENCODING: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n")
                let t = try s.readResponse()
                XCTAssertEqual(t.inspectedBody.map { String(decoding: $0, as: UTF8.self) }, "0123456789", "[\(mode)] uppercase TE/hex: \(t)")
                // Empty header value, OPTIONS *, absolute-form, query kept.
                try s.send("GET /q?a=1&b=%20x HTTP/1.1\r\nHost: h\r\nX-Test:\r\n\r\n")
                let q = try s.readResponse()
                XCTAssertEqual(q.fields["target"], "/q?a=1&b=%20x", "[\(mode)] target with query")
                XCTAssertEqual(q.fields["h:x-test"], "", "[\(mode)] empty header value")
                try s.send("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
                let o = try s.readResponse()
                XCTAssertEqual(o.fields["method"], "OPTIONS", "[\(mode)]")
                XCTAssertEqual(o.fields["target"], "*", "[\(mode)] asterisk-form")
                try s.send("GET http://example.com/abs HTTP/1.1\r\nHost: example.com\r\n\r\n")
                XCTAssertEqual(try s.readResponse().fields["target"], "http://example.com/abs", "[\(mode)] absolute-form")
                // Two identical Content-Length values: RFC 9112 lets a server accept them.
                // Connection tokens: "keep-alive, close" closes.
                try s.send("GET /last HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n")
                let last = try s.readResponse()
                XCTAssertEqual(last.fields["keepalive"], "0", "[\(mode)] close token among others")
                if mode.keepsAlive {   // (Session checked the close on the blocking engine)
                    XCTAssertNoThrow(try s.expectClose(), "[\(mode)] closed after 'keep-alive, Close'")
                }
            }
        }
    }

    // Writer: a short body closes the connection; the app's Connection: close is honoured.
    func testShortBodyClosesAndAppConnectionClose() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                let s = try TestSocket(port: server.port)
                try s.send("GET /short HTTP/1.1\r\nHost: h\r\n\r\n")
                let all = String(decoding: try s.expectClose(), as: UTF8.self)
                XCTAssertTrue(all.hasPrefix("HTTP/1.1 200"), "[\(mode)] \(all)")
                XCTAssertTrue(all.contains("Content-Length: 10\r\n"), "[\(mode)] \(all)")
                XCTAssertTrue(all.hasSuffix("\r\n\r\n12345"), "[\(mode)] 5 bytes then close: \(all.debugDescription)")

                let t = try TestSocket(port: server.port)
                try t.send("GET /close-header HTTP/1.1\r\nHost: h\r\n\r\n")
                let r = try t.readResponse()
                XCTAssertEqual(r.bodyString, "bye", "[\(mode)]")
                XCTAssertEqual(r.headerCount("Connection"), 1, "[\(mode)] exactly one Connection header: \(r.rawHead)")
                XCTAssertNoThrow(try t.expectClose(), "[\(mode)] app's Connection: close honoured")
            }
        }
    }

    // Limits.maxBody is documented as the limit on the *decoded* body. A body of
    // exactly maxBody sent in small (8-byte) chunks must be accepted, not 413.
    func testSmallChunksWithinMaxBodyAccepted() throws {
        let maxBody = 64 * 1024
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: {
                $0.limits.maxBody = maxBody
                $0.limits.maxHeaderBytes = 1024
            }) { server in
                let s = try TestSocket(port: server.port)
                var wire = Array("POST /small-chunks HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
                let chunk = Array("8\r\nabcdefgh\r\n".utf8)
                for _ in 0..<(maxBody / 8) { wire += chunk }
                wire += Array("0\r\n\r\n".utf8)
                let err = LockedList<String>()
                let bytes = wire
                let sender = TestThread { do { try s.send(bytes) } catch { err.append("\(error)") } }
                let r = try s.readResponse()
                XCTAssertTrue(sender.join(), "[\(mode)] the sender did not finish")
                XCTAssertEqual(r.status, 200, "[\(mode)] \(maxBody)-byte decoded body in 8-byte chunks (\(wire.count) bytes on the wire) with maxBody \(maxBody): \(r.statusLine)")
                XCTAssertEqual(r.fields["body-length"], r.status == 200 ? String(maxBody) : nil, "[\(mode)]")
            }
        }
    }
}
