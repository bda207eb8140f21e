// Response streams (ResponseStream, Responder.stream()) on every engine mode.
// The C engines stream through the C core's prg_stream_* model (the blocking
// and threaded ones too: the connection's thread serves the stream), the
// Swift engine through its port of it; all are held to the same results.
import Foundation
import Peregrine
import XCTest

final class ResponseStreamTests: XCTestCase {
    /// Waits (bounded, 10 s) until `list` holds `count` entries.
    private func waitFor(_ count: Int, in list: LockedList<String>) {
        let deadline = Date().addingTimeInterval(10)
        while list.all.count < count && Date() < deadline { usleep(1000) }
    }

    /// The body after the head, as the client received it.
    private func bodyBytes(_ raw: [UInt8]) -> String {
        let text = String(decoding: raw, as: UTF8.self)
        guard let r = text.range(of: "\r\n\r\n") else { return "" }
        return String(text[r.upperBound...])
    }

    /// Chunked writes and a trailer reach a raw client byte for byte; the
    /// refusals come from the state (write before head, end twice, write
    /// after end).
    func testChunkedWritesAndTrailersReachARawClient() throws {
        try forEachEngine { mode in
            let results = LockedList<String>()
            let app = Application.offloaded { _, responder in
                let s: ResponseStream
                do {
                    s = try responder.stream()
                } catch let e as ResponseStreamUnsupported {
                    responder.send(body: "unsupported: \(e.engine)")
                    return
                } catch {
                    responder.send(status: 500, body: "\(error)")
                    return
                }
                results.append("early write \(s.write("x"))")
                results.append("head \(s.head(status: 200, headers: [("Content-Type", "text/plain")]))")
                results.append("head again \(s.head(status: 200))")
                results.append("write \(s.write("hello"))")
                results.append("write \(s.write(" world"))")
                results.append("trailer \(s.trailer(name: "X-Sum", value: "11"))")
                results.append("end \(s.end())")
                results.append("end again \(s.end())")
                results.append("write after end \(s.write("late"))")
            }
            try withServer(mode, app) { server in
                let socket = try TestSocket(port: server.port)
                try socket.send("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                let raw = try socket.readUntilEOF()
                // The handler records end's result after the client may have read it all.
                waitFor(9, in: results)
                XCTAssertTrue(String(decoding: raw, as: UTF8.self).hasPrefix("HTTP/1.1 200"), "[\(mode)]")
                XCTAssertTrue(String(decoding: raw, as: UTF8.self).lowercased().contains("transfer-encoding: chunked"), "[\(mode)]")
                XCTAssertEqual(bodyBytes(raw), "5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n", "[\(mode)]")
                XCTAssertEqual(results.all, [
                    "early write refused(PeregrineCore.StreamRefusal.notHeaded)", "head ok", "head again ended",
                    "write ok", "write ok", "trailer ok", "end ok", "end again ended", "write after end ended",
                ], "[\(mode)]")
            }
        }
    }

    /// A stream takes the answer: a second stream() throws
    /// ResponseStreamUnavailable and send is refused; the first stream is
    /// not disturbed.
    func testStreamTakesTheAnswerOnce() throws {
        try forEachEngine { mode in
            let results = LockedList<String>()
            let app = Application.offloaded { _, responder in
                guard let s = try? responder.stream() else { return }
                do {
                    _ = try responder.stream()
                    results.append("second stream made")
                } catch {
                    results.append("second: \(error is ResponseStreamUnavailable)")
                }
                results.append("send: \(responder.send(body: "one-shot"))")
                s.head(status: 200)
                s.write("streamed")
                s.end()
            }
            try withServer(mode, app) { server in
                let r = try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(r.bodyString, "streamed", "[\(mode)]")
                XCTAssertEqual(results.all, ["second: true", "send: false"], "[\(mode)]")
            }
        }
    }

    /// A Content-Length head fixes the framing: no chunks, a write beyond
    /// the length is refused with nothing queued, the connection is kept.
    func testContentLengthStream() throws {
        try forEachEngine { mode in
            let results = LockedList<String>()
            let app = Application.offloaded { _, responder in
                guard let s = try? responder.stream() else { return }
                results.append("head \(s.head(status: 200, headers: [("Content-Length", "10")]))")
                results.append("write \(s.write("0123"))")
                results.append("write \(s.write("456789"))")
                results.append("over \(s.write("!"))")
                results.append("end \(s.end())")
            }
            try withServer(mode, app) { server in
                let session = try Session(mode, port: server.port)
                try session.send("GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
                let r = try session.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)]")
                XCTAssertNil(r.header("Transfer-Encoding"), "[\(mode)]")
                XCTAssertEqual(r.bodyString, "0123456789", "[\(mode)]")
                try session.send("GET /b HTTP/1.1\r\nHost: t\r\n\r\n")
                XCTAssertEqual(try session.readResponse().bodyString, "0123456789", "[\(mode)] the connection is kept")
                waitFor(10, in: results)
                let one = ["head ok", "write ok", "write ok", "over refused(PeregrineCore.StreamRefusal.contentLength)", "end ok"]
                XCTAssertEqual(results.all.sorted(), (one + one).sorted(), "[\(mode)] both answers")
            }
        }
    }

    /// The client resets the connection mid-body: a later write answers
    /// .peerGone (within a bound), and the server keeps serving others.
    func testWriteAfterTheClientLeftIsPeerGone() throws {
        try forEachEngine { mode in
            let headed = DispatchSemaphore(value: 0)
            let outcome = LockedList<String>()
            let app = Application.offloaded { request, responder in
                if request.path == "/ok" { responder.send(body: "ok"); return }
                guard let s = try? responder.stream() else { return }
                s.head(status: 200)
                s.write("first")
                headed.signal()
                let chunk = [UInt8](repeating: 0x61, count: 1024)
                let deadline = DispatchTime.now() + 10
                while DispatchTime.now() < deadline {
                    let r = s.write(chunk)
                    if r == .peerGone { outcome.append("peerGone"); return }
                    if !r.isAccepted { outcome.append("\(r)"); return }
                    usleep(1000)   // a producer's pace, not synchronisation
                }
                outcome.append("no peerGone within 10 s")
            }
            try withServer(mode, app) { server in
                let socket = try TestSocket(port: server.port)
                try socket.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                XCTAssertEqual(headed.wait(timeout: .now() + 10), .success, "[\(mode)]")
                socket.reset()
                let deadline = Date().addingTimeInterval(15)
                while outcome.all.isEmpty && Date() < deadline { usleep(10_000) }
                XCTAssertEqual(outcome.all, ["peerGone"], "[\(mode)]")
                XCTAssertEqual(try fetch(port: server.port, "GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").bodyString,
                               "ok", "[\(mode)]")
            }
        }
    }

    /// A producer faster than its client is told .wouldBlock once the
    /// stream holds more than its high mark (accepted bytes bounded by the
    /// kernel's buffers plus the mark), and onWritable wakes it when the
    /// client reads; every byte arrives.
    func testWatermarkWaitAndWakeWithASlowReader() throws {
        try forEachEngine { mode in
            let total = 16 << 20
            let chunkSize = 64 << 10
            let firstWait = DispatchSemaphore(value: 0)
            let stats = LockedList<Int>()   // accepted bytes at each wouldBlock
            let woke = LockedList<Int>()
            let app = Application.offloaded { _, responder in
                guard let s = try? responder.stream() else { return }
                let writable = DispatchSemaphore(value: 0)
                s.onWritable { woke.append(1); writable.signal() }
                s.head(status: 200, headers: [("Content-Length", String(total))])
                let chunk = [UInt8](repeating: 0x62, count: chunkSize)
                var sent = 0
                while sent < total {
                    let r = s.write(chunk)
                    guard r.isAccepted else { return }
                    sent += chunkSize
                    if r == .wouldBlock {
                        stats.append(sent)
                        if stats.all.count == 1 { firstWait.signal() }
                        if writable.wait(timeout: .now() + 30) == .timedOut { return }
                    }
                }
                s.end()
            }
            try withServer(mode, app) { server in
                let socket = try TestSocket(port: server.port)
                try socket.send("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                // The client reads nothing until the producer was told to wait.
                XCTAssertEqual(firstWait.wait(timeout: .now() + 30), .success, "[\(mode)] no wouldBlock")
                let accepted = stats.all.first ?? 0
                XCTAssertLessThan(accepted, 12 << 20, "[\(mode)] accepted before the first wouldBlock")
                let r = try socket.readResponse()
                XCTAssertEqual(r.body.count, total, "[\(mode)]")
                XCTAssertTrue(r.body.allSatisfy { $0 == 0x62 }, "[\(mode)]")
                XCTAssertGreaterThanOrEqual(woke.all.count, 1, "[\(mode)] onWritable ran")
            }
        }
    }

    /// Pipelined: a stream and then an inline answer leave in request order.
    func testPipelinedStreamThenInlineKeepOrder() throws {
        try forEachEngine { mode in
            guard mode.keepsAlive else { return }   // the blocking engine answers one request per connection
            let app = Application.offloaded({ _, responder in
                guard let s = try? responder.stream() else { return }
                s.head(status: 200)
                for i in 0..<5 {
                    s.write("part\(i);")
                    usleep(5000)
                }
                s.end()
            }, inline: { request, response in
                guard String(decoding: request.path, as: UTF8.self) == "/inline" else { return false }
                response.send(status: 200, body: "inline")
                return true
            })
            try withServer(mode, app) { server in
                let session = try Session(mode, port: server.port)
                try session.send("GET /stream HTTP/1.1\r\nHost: t\r\n\r\nGET /inline HTTP/1.1\r\nHost: t\r\n\r\n")
                XCTAssertEqual(try session.readResponse().bodyString, "part0;part1;part2;part3;part4;", "[\(mode)]")
                XCTAssertEqual(try session.readResponse().bodyString, "inline", "[\(mode)]")
            }
        }
    }

    /// Released without an end: before the head the client gets 500 (and
    /// the connection is kept); after it the connection closes after what
    /// was written (chunked: no last chunk, so the client sees the cut).
    func testReleasedWithoutEnd() throws {
        try forEachEngine { mode in
            let app = Application.offloaded { request, responder in
                guard let s = try? responder.stream() else { return }
                if request.path == "/midbody" {
                    s.head(status: 200)
                    s.write("partial")
                }
                // s goes here, unended
            }
            try withServer(mode, app) { server in
                let session = try Session(mode, port: server.port)
                try session.send("GET /beforehead HTTP/1.1\r\nHost: t\r\n\r\n")
                XCTAssertEqual(try session.readResponse().status, 500, "[\(mode)]")
                try session.send("GET /midbody HTTP/1.1\r\nHost: t\r\n\r\n")
                let raw = String(decoding: try session.expectClose(), as: UTF8.self)
                XCTAssertTrue(raw.hasPrefix("HTTP/1.1 200"), "[\(mode)] \(raw)")
                XCTAssertTrue(raw.hasSuffix("\r\n\r\n7\r\npartial\r\n"), "[\(mode)] \(raw.debugDescription)")
            }
        }
    }

    /// The handler timeout applies until the head: a stream not headed in
    /// time gets 503 and its head is refused (.timedOut); a headed stream
    /// that outlives the timeout is not cut.
    func testHandlerTimeoutAppliesUntilTheHead() throws {
        try forEachEngine { mode in
            let late = DispatchSemaphore(value: 0)
            let results = LockedList<String>()
            let app = Application.offloaded { request, responder in
                guard let s = try? responder.stream() else { return }
                if request.path == "/late" {
                    _ = late.wait(timeout: .now() + 30)   // the test saw the 503
                    results.append("late head \(s.head(status: 200))")
                    return
                }
                s.head(status: 200)
                s.write("a")
                // Past the 1 s timeout (the loop's sweep runs once a second),
                // waiting on a deadline: nothing to wait on but time here.
                var ts = timespec(tv_sec: 2, tv_nsec: 500_000_000), left = timespec()
                while nanosleep(&ts, &left) != 0 { ts = left }
                results.append("write after timeout \(s.write("b"))")
                s.end()
            }
            try withServer(mode, app, configure: { $0.handlerTimeout = 1 }) { server in
                let r = try fetch(port: server.port, "GET /late HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(r.status, 503, "[\(mode)]")
                late.signal()
                let ok = try fetch(port: server.port, "GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(ok.status, 200, "[\(mode)]")
                XCTAssertEqual(ok.bodyString, "ab", "[\(mode)]")
                let deadline = Date().addingTimeInterval(10)
                while results.all.count < 2 && Date() < deadline { usleep(10_000) }
                XCTAssertEqual(Set(results.all), ["late head refused(PeregrineCore.StreamRefusal.timedOut)", "write after timeout ok"],
                               "[\(mode)]")
            }
        }
    }

    /// HTTP/1.0 without a Content-Length: the body ends with the connection.
    func testHTTP10StreamEndsWithTheConnection() throws {
        try forEachEngine { mode in
            let app = Application.offloaded { _, responder in
                guard let s = try? responder.stream() else { return }
                s.head(status: 200)
                s.write("one,")
                s.write("two")
                s.end()
            }
            try withServer(mode, app) { server in
                let r = try fetch(port: server.port, "GET / HTTP/1.0\r\n\r\n")
                XCTAssertEqual(r.status, 200, "[\(mode)]")
                XCTAssertNil(r.header("Transfer-Encoding"), "[\(mode)]")
                XCTAssertTrue(r.closeDelimited, "[\(mode)]")
                XCTAssertEqual(r.bodyString, "one,two", "[\(mode)]")
            }
        }
    }

    /// `--app stream` (BuiltinApp.stream) with `curl -N`: N chunks of S
    /// bytes arrive about T ms apart; values out of bounds get 400.
    func testStreamAppWithCurl() throws {
        let curl = "/usr/bin/curl"
        guard FileManager.default.isExecutableFile(atPath: curl) else { throw XCTSkip("\(curl) is not installed") }
        try forEachEngine { mode in
            try withServer(mode, BuiltinApp.stream.application) { server in
                let base = "http://127.0.0.1:\(server.port)"
                for bad in ["/?n=0", "/?n=10001", "/?size=0", "/?size=65537", "/?ms=-1", "/?ms=60001", "/?n=x", "/?color=red"] {
                    let (_, out) = try runCurl(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", base + bad])
                    XCTAssertEqual(out, "400", "[\(mode)] \(bad)")
                }
                let (n, size, ms) = (5, 32, 200)
                let start = DispatchTime.now()
                let p = Process()
                p.executableURL = URL(fileURLWithPath: curl)
                p.arguments = ["-s", "-N", "--max-time", "20", "-w", "\n%{http_code}", base + "/?n=\(n)&size=\(size)&ms=\(ms)"]
                let out = Pipe()
                p.standardOutput = out
                try p.run()
                var received: [UInt8] = []
                var lineTimes: [Double] = []   // seconds since start, one per complete line
                while true {
                    let data = out.fileHandleForReading.availableData
                    if data.isEmpty { break }
                    let now = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
                    for byte in data {
                        received.append(byte)
                        if byte == UInt8(ascii: "\n") { lineTimes.append(now) }
                    }
                }
                p.waitUntilExit()
                let text = String(decoding: received, as: UTF8.self)
                XCTAssertEqual(p.terminationStatus, 0, "[\(mode)] curl exit")
                let chunkLine = String(repeating: "x", count: size - 1) + "\n"
                XCTAssertEqual(text, String(repeating: chunkLine, count: n) + "\n200", "[\(mode)]")
                guard lineTimes.count >= n else { return XCTFail("[\(mode)] \(lineTimes.count) lines") }
                let chunkTimes = Array(lineTimes.prefix(n))
                // The ticker keeps absolute times from the request's arrival
                // (after `start`): chunk i is never written before i*T, and
                // the last one arrives within (n-1)*T plus the scheduling of a
                // loaded machine (3 s).
                for i in 1..<n {
                    XCTAssertGreaterThanOrEqual(chunkTimes[i], Double(i * ms) / 1000, "[\(mode)] chunk \(i): \(chunkTimes)")
                }
                XCTAssertLessThanOrEqual(chunkTimes[n - 1], Double((n - 1) * ms) / 1000 + 3, "[\(mode)] \(chunkTimes)")
            }
        }
    }

    private func runCurl(_ args: [String]) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
