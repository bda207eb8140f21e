// Streamed request bodies (Application.streaming, BodyConsumer): whole
// bodies in pieces, one receive block at most, backpressure, 100 Continue,
// the streamed limit, clients that leave, stalled bodies. Every engine mode.
import Foundation
import Peregrine
import Synchronization
import XCTest

/// What the streaming test app saw, shared with the test thread.
final class StreamLog: @unchecked Sendable {
    private let lock = NSLock()
    private var endsList: [(target: String, end: BodyEnd, received: Int)] = []
    private var live = 0
    private var heldConsumer: BodyConsumer?
    let maxCapacity = MaxBox()
    /// Blocking and threaded engines: a consumer that must hold the body
    /// back blocks here until the test opens the gate.
    let gate = DispatchSemaphore(value: 0)

    func ended(_ target: String, _ end: BodyEnd, _ received: Int) {
        lock.lock(); endsList.append((target, end, received)); lock.unlock()
    }
    var ends: [(target: String, end: BodyEnd, received: Int)] { lock.lock(); defer { lock.unlock() }; return endsList }
    func clearEnds() { lock.lock(); endsList.removeAll(); lock.unlock() }
    func opened() { lock.lock(); live += 1; lock.unlock() }
    func released() { lock.lock(); live -= 1; lock.unlock() }
    /// Consumers not yet deallocated.
    var liveConsumers: Int { lock.lock(); defer { lock.unlock() }; return live }
    func hold(_ c: BodyConsumer?) { lock.lock(); heldConsumer = c; lock.unlock() }
    func takeHeld() -> BodyConsumer? { lock.lock(); defer { lock.unlock() }; let c = heldConsumer; heldConsumer = nil; return c }
}

/// Counts a consumer's life: captured by its closures, freed with it.
final class LifeToken: @unchecked Sendable {
    let log: StreamLog
    init(_ log: StreamLog) { self.log = log; log.opened() }
    deinit { log.released() }
}

/// FNV-1a, 64-bit.
struct Checksum {
    var value: UInt64 = 0xcbf2_9ce4_8422_2325
    mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var h = value
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        value = h
    }
    static func of(_ bytes: [UInt8]) -> UInt64 {
        var c = Checksum()
        bytes.withUnsafeBytes { c.add($0) }
        return c.value
    }
}

final class StreamingBodyTests: XCTestCase {
    /// Routes (the head handler's decision by target):
    ///   /sum       stream: answers `n=<bytes> sum=<fnv1a hex> cap=<max receive buffer>`
    ///   /count     stream: counts only (no checksum), same answer with sum=0
    ///   /pause     stream: after `pauseAt` bytes pauses (event engines) or blocks on
    ///              `log.gate` (blocking, threaded); `n=<bytes>` at the end
    ///   /held      stream that starts paused (resumed by GET /resume)
    ///   /early     stream: answers `early` at its first span, takes the rest
    ///   /deny      answers 401 from the head
    ///   /buffer    nil: buffered, answered by `request` with `buffered=<length>`
    ///   GET /resume  resumes the paused consumer (same loop), answers `resumed=<bool>`
    static func app(_ log: StreamLog, pauseAt: Int = 1 << 16) -> Application {
        .streaming(head: { request, response in
            let target = request.targetString
            switch target {
            case "/deny":
                response.send(status: 401, body: "no\n")
                return nil
            case "/buffer":
                return nil
            default:
                break
            }
            let token = LifeToken(log)
            var sum = Checksum()
            let checksum = target == "/sum"
            let pausing = target == "/pause"
            let early = target == "/early"
            var paused = false
            let consumer = BodyConsumer(startsPaused: target == "/held", chunk: { bytes, body in
                _ = token
                if early && body.received == 0 { body.response?.send(body: "early\n") }   // answer before the end
                log.maxCapacity.record(body.receiveBufferCapacity)
                if checksum { sum.add(bytes) }
                if pausing && !paused && body.received + bytes.count >= pauseAt {
                    paused = true
                    if body.pause() {
                        log.hold(body)   // resumed by GET /resume on the same loop
                    } else {
                        log.hold(nil)
                        log.gate.wait()  // blocking engines: backpressure by blocking here
                    }
                }
                return bytes.count
            }, end: { how, body in
                _ = token
                log.ended(target, how, body.received)
                if how == .complete && !early {
                    body.response?.send(body: "n=\(body.received) sum=\(String(checksum ? sum.value : 0, radix: 16)) cap=\(log.maxCapacity.max)\n")
                }
            })
            if target == "/held" { log.hold(consumer) }
            return consumer
        }, request: { request, response in
            if request.targetString == "/resume" {
                let resumed = log.takeHeld()?.resume() ?? false
                response.send(body: "resumed=\(resumed)\n")
            } else {
                response.send(body: "buffered=\(request.body.count)\n")
            }
        })
    }

    private func waitFor(_ what: String, seconds: Double = 10, _ condition: () -> Bool) -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if condition() { return true }
            usleep(5_000)
        }
        return condition()
    }

    private func randomBytes(_ n: Int) -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        var out = [UInt8](repeating: 0, count: n)
        out.withUnsafeMutableBytes { p in
            var i = 0
            while i + 8 <= n { p.storeBytes(of: g.next() as UInt64, toByteOffset: i, as: UInt64.self); i += 8 }
            while i < n { p[i] = UInt8.random(in: 0...255); i += 1 }
        }
        return out
    }

    /// Sends `bytes` in pieces of varying size (the server sees them arrive a piece at a time).
    private func sendInPieces(_ s: TestSocket, _ bytes: [UInt8]) throws {
        var off = 0
        var piece = 1000
        while off < bytes.count {
            let n = min(piece, bytes.count - off)
            try s.send(Array(bytes[off..<off + n]))
            off += n
            piece = piece * 7 % 150_001 + 1
        }
    }

    /// Chunked framing of `body` in chunks of varying size, an extension on one, a trailer.
    private func chunked(_ body: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var off = 0
        var size = 1
        var first = true
        while off < body.count {
            let n = min(size, body.count - off)
            out += Array((String(n, radix: 16) + (first ? ";ext=1" : "") + "\r\n").utf8)
            out += body[off..<off + n]
            out += [13, 10]
            off += n
            size = size * 13 % 70_001 + 1
            first = false
        }
        out += Array("0\r\nX-Trailer: done\r\n\r\n".utf8)
        return out
    }

    func testContentLengthAndChunkedBodiesArriveWhole() throws {
        let body = randomBytes(3 << 20 | 12345)
        let expected = String(Checksum.of(body), radix: 16)
        try forEachEngine { mode in
            let log = StreamLog()
            try withServer(mode, Self.app(log)) { server in
                let a = try TestSocket(port: server.port)
                try a.send("POST /sum HTTP/1.1\r\nHost: h\r\nContent-Length: \(body.count)\r\n\r\n")
                try sendInPieces(a, body)
                let ra = try a.readResponse()
                XCTAssertEqual(ra.status, 200, "[\(mode)] \(ra)")
                XCTAssertTrue(ra.bodyString.hasPrefix("n=\(body.count) sum=\(expected) "), "[\(mode)] Content-Length: \(ra.bodyString)")

                let b = try TestSocket(port: server.port)
                try b.send("POST /sum HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
                try sendInPieces(b, chunked(body))
                let rb = try b.readResponse()
                XCTAssertEqual(rb.status, 200, "[\(mode)] \(rb)")
                XCTAssertTrue(rb.bodyString.hasPrefix("n=\(body.count) sum=\(expected) "), "[\(mode)] chunked: \(rb.bodyString)")
                XCTAssertTrue(waitFor("ends") { log.ends.count == 2 }, "[\(mode)] \(log.ends)")
                XCTAssertEqual(log.ends.map(\.end), [.complete, .complete], "[\(mode)]")
                XCTAssertTrue(waitFor("consumers released") { log.liveConsumers == 0 }, "[\(mode)] \(log.liveConsumers) consumers alive")
            }
        }
    }

    /// A real client: curl -T (Content-Length, with Expect: 100-continue)
    /// and curl with Transfer-Encoding: chunked, against `--app upload`.
    func testUploadAppWithCurl() throws {
        let curl = "/usr/bin/curl"
        guard FileManager.default.isExecutableFile(atPath: curl) else { throw XCTSkip("curl is not installed") }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("peregrine-upload-\(getpid()).bin")
        let size = 5 << 20
        try Data(randomBytes(size)).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        try forEachEngine { mode in
            try withServer(mode, BuiltinApp.upload.application) { server in
                let url = "http://127.0.0.1:\(server.port)/upload"
                for extra in [[], ["-H", "Transfer-Encoding: chunked"]] {
                    let p = Process()
                    p.executableURL = URL(fileURLWithPath: curl)
                    p.arguments = ["-sS", "--max-time", "20", "-T", file.path] + extra + [url]
                    let out = Pipe()
                    p.standardOutput = out
                    try p.run()
                    let o = out.fileHandleForReading.readDataToEndOfFile()
                    p.waitUntilExit()
                    XCTAssertEqual(p.terminationStatus, 0, "[\(mode)] curl \(extra)")
                    XCTAssertEqual(String(decoding: o, as: UTF8.self), "received \(size) bytes\n", "[\(mode)] curl \(extra)")
                }
                // No body: the request handler answers.
                XCTAssertEqual(try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").bodyString, "received 0 bytes\n", "[\(mode)]")
            }
        }
    }

    /// 24 MiB through a connection whose receive buffer stays one 16 KiB block.
    func testBodyFarLargerThanTheBufferKeepsOneBlock() throws {
        let piece = randomBytes(1 << 20)
        try forEachEngine { mode in
            let log = StreamLog()
            try withServer(mode, Self.app(log)) { server in
                let s = try TestSocket(port: server.port)
                let total = 24 * piece.count
                try s.send("POST /count HTTP/1.1\r\nHost: h\r\nContent-Length: \(total)\r\n\r\n")
                for _ in 0..<24 { try s.send(piece) }
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)] \(r)")
                XCTAssertTrue(r.bodyString.hasPrefix("n=\(total) "), "[\(mode)] \(r.bodyString)")
                XCTAssertGreaterThan(log.maxCapacity.max, 0, "[\(mode)]")
                XCTAssertLessThanOrEqual(log.maxCapacity.max, 16384, "[\(mode)] the receive buffer grew while streaming")
            }
        }
    }

    /// A consumer that holds the body back: the client's sends block, the
    /// server takes no more than it had plus one receive block; once let
    /// go, the rest arrives. Event engines: pause(), then resume() from
    /// another request on the same loop. Blocking and threaded engines:
    /// pause() is refused and the consumer blocks in its callback instead.
    func testPausedStreamStopsReadingThenResumes() throws {
        let pauseAt = 1 << 16
        let total = 8 << 20
        let body = randomBytes(total)
        try forEachEngine { mode in
            let log = StreamLog()
            try withServer(mode, Self.app(log, pauseAt: pauseAt)) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /pause HTTP/1.1\r\nHost: h\r\nContent-Length: \(total)\r\n\r\n")
                // Send without blocking until the server stops taking bytes:
                // no progress for 500 ms while the socket says EAGAIN.
                let flags = fcntl(s.fd, F_GETFL)
                _ = fcntl(s.fd, F_SETFL, flags | O_NONBLOCK)
                var sent = 0
                var stuckSince: ContinuousClock.Instant? = nil
                let deadline = ContinuousClock.now + .seconds(20)
                while sent < total, ContinuousClock.now < deadline {
                    let n = body.withUnsafeBytes { Glibc.send(s.fd, $0.baseAddress! + sent, total - sent, Int32(MSG_NOSIGNAL)) }
                    if n > 0 { sent += n; stuckSince = nil; continue }
                    if let since = stuckSince {
                        if ContinuousClock.now - since > .milliseconds(500) { break }
                    } else {
                        stuckSince = .now
                    }
                    usleep(2_000)
                }
                XCTAssertLessThan(sent, total, "[\(mode)] the whole body went through a paused stream")
                let heldBack = mode.engine == .blocking || mode.engine == .threaded
                // What the consumer took: up to the pause, plus at most one receive block.
                let ends = log.ends
                XCTAssertTrue(ends.isEmpty, "[\(mode)] the stream ended while paused: \(ends)")
                // The kernel buffers hold the rest of what was sent.
                _ = fcntl(s.fd, F_SETFL, flags)
                if heldBack {
                    log.gate.signal()
                } else {
                    let r = try fetch(port: server.port, "GET /resume HTTP/1.1\r\nHost: h\r\n\r\n")
                    XCTAssertEqual(r.bodyString, "resumed=true\n", "[\(mode)]")
                }
                try s.send(Array(body[sent...]))
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)] \(r)")
                XCTAssertTrue(r.bodyString.hasPrefix("n=\(total) "), "[\(mode)] \(r.bodyString)")
                XCTAssertLessThanOrEqual(log.maxCapacity.max, 16384, "[\(mode)]")
            }
        }
    }

    /// The server's take while paused, measured directly: the consumer's
    /// count does not move while the client is blocked.
    func testPausedStreamTakesNoMoreThanOneBlockBeyondThePause() throws {
        let pauseAt = 1 << 16
        let total = 32 << 20   // more than the kernel's socket buffers hold
        try forEachEngine { mode in
            guard mode.engine != .blocking && mode.engine != .threaded else { return }   // pause() is refused there (above)
            let log = StreamLog()
            let taken = Atomic<Int>(0)
            let pausing = Atomic<Bool>(true)
            let app: Application = .streaming(head: { _, _ in
                BodyConsumer(chunk: { bytes, body in
                    taken.store(body.received + bytes.count, ordering: .relaxed)
                    if pausing.load(ordering: .relaxed) && body.received + bytes.count >= pauseAt {
                        XCTAssertTrue(body.pause(), "[\(mode)] pause on an event engine")
                        log.hold(body)
                    }
                    return bytes.count
                }, end: { how, body in
                    log.ended("/", how, body.received)
                    if how == .complete { body.response?.send(body: "n=\(body.received)\n") }
                })
            }, request: { _, response in
                let resumed = log.takeHeld()?.resume() ?? false
                response.send(body: "resumed=\(resumed)\n")
            })
            try withServer(mode, app) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: \(total)\r\n\r\n")
                let chunk = [UInt8](repeating: 7, count: 4096)
                let flags = fcntl(s.fd, F_GETFL)
                _ = fcntl(s.fd, F_SETFL, flags | O_NONBLOCK)
                var sent = 0
                var stuckSince: ContinuousClock.Instant? = nil
                while sent < total {
                    let n = chunk.withUnsafeBytes { Glibc.send(s.fd, $0.baseAddress!, min(4096, total - sent), Int32(MSG_NOSIGNAL)) }
                    if n > 0 { sent += n; stuckSince = nil; continue }
                    if let since = stuckSince {
                        if ContinuousClock.now - since > .milliseconds(500) { break }
                    } else {
                        stuckSince = .now
                    }
                    usleep(2_000)
                }
                XCTAssertLessThan(sent, total, "[\(mode)] not held back")
                let atPause = taken.load(ordering: .relaxed)
                XCTAssertGreaterThanOrEqual(atPause, pauseAt, "[\(mode)]")
                XCTAssertLessThanOrEqual(atPause, pauseAt + 16384, "[\(mode)] took more than one block beyond the pause")
                _ = fcntl(s.fd, F_SETFL, flags)
                pausing.store(false, ordering: .relaxed)
                XCTAssertEqual(try fetch(port: server.port, "GET /resume HTTP/1.1\r\nHost: h\r\n\r\n").bodyString, "resumed=true\n", "[\(mode)]")
                try s.send(Array(repeating: UInt8(7), count: total - sent))
                XCTAssertEqual(try s.readResponse().bodyString, "n=\(total)\n", "[\(mode)]")
            }
        }
    }

    /// 100 Continue goes out when the stream starts, never for an answer
    /// from the head (the client never sends that body).
    func testExpectContinueOnlyWhenStreamingStarts() throws {
        try forEachEngine { mode in
            let log = StreamLog()
            try withServer(mode, Self.app(log)) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /sum HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
                let interim = try s.readResponse()
                XCTAssertEqual(interim.status, 100, "[\(mode)] \(interim)")
                try s.send("hello")
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)] \(r)")
                XCTAssertTrue(r.bodyString.hasPrefix("n=5 "), "[\(mode)] \(r.bodyString)")

                let d = try TestSocket(port: server.port)
                try d.send("POST /deny HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
                let denied = try d.readResponse()
                XCTAssertEqual(denied.status, 401, "[\(mode)] no 100 Continue before the answer from the head: \(denied)")
                XCTAssertEqual(denied.header("Connection"), "close", "[\(mode)]")
                XCTAssertTrue(try d.readUntilEOF().isEmpty, "[\(mode)] nothing after the 401, then a close")
            }
        }
    }

    /// Python's http.client, the way it sends Expect: it waits for the
    /// answer before the body; a 401 from the head arrives without a 100.
    func testPythonClientGets401FromTheHead() throws {
        let python = "/usr/bin/python3"
        guard FileManager.default.isExecutableFile(atPath: python) else { throw XCTSkip("python3 is not installed") }
        try forEachEngine { mode in
            let log = StreamLog()
            try withServer(mode, Self.app(log)) { server in
                let script = """
                import http.client, socket
                c = http.client.HTTPConnection("127.0.0.1", \(server.port), timeout=10)
                c.putrequest("PUT", "/deny")
                c.putheader("Content-Length", "1000000")
                c.putheader("Expect", "100-continue")
                c.endheaders()
                r = c.getresponse()
                print(r.status, r.getheader("Connection"), r.read().decode().strip())
                """
                let p = Process()
                p.executableURL = URL(fileURLWithPath: python)
                p.arguments = ["-c", script]
                let out = Pipe()
                p.standardOutput = out
                try p.run()
                let o = out.fileHandleForReading.readDataToEndOfFile()
                p.waitUntilExit()
                XCTAssertEqual(String(decoding: o, as: UTF8.self), "401 close no\n", "[\(mode)]")
                XCTAssertTrue(log.ends.isEmpty, "[\(mode)] no stream began: \(log.ends)")
            }
        }
    }

    /// maxStreamedBody: a streamed Content-Length over it gets 413 before
    /// any body byte (no 100 Continue), and so does one over both limits
    /// (before on_head: no stream begins); a chunked body gets 413 when it
    /// crosses it. Buffered bodies keep maxBody.
    func testStreamedLimitGives413() throws {
        try forEachEngine { mode in
            let log = StreamLog()
            // maxBody above maxStreamedBody: the streamed limit is the one that answers.
            try withServer(mode, Self.app(log), configure: { $0.maxStreamedBody = 1000; $0.limits.maxBody = 5000 }) { server in
                let a = try TestSocket(port: server.port)
                try a.send("POST /count HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n")
                let ra = try a.readResponse()
                XCTAssertEqual(ra.status, 413, "[\(mode)] no 100 Continue before it: \(ra)")
                XCTAssertEqual(ra.header("Connection"), "close", "[\(mode)]")
                XCTAssertTrue(waitFor("end") { log.ends.count == 1 }, "[\(mode)] \(log.ends)")
                XCTAssertEqual(log.ends.first?.end, .tooLarge, "[\(mode)]")
                XCTAssertEqual(log.ends.first?.received, 0, "[\(mode)]")
                // The same size buffered is fine.
                XCTAssertEqual(try fetch(port: server.port, "POST /buffer HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n" + String(repeating: "b", count: 1001)).bodyString,
                               "buffered=1001\n", "[\(mode)]")
            }
            log.clearEnds()
            try withServer(mode, Self.app(log), configure: { $0.maxStreamedBody = 100_000; $0.limits.maxBody = 1000 }) { server in
                let a = try TestSocket(port: server.port)
                try a.send("POST /count HTTP/1.1\r\nHost: h\r\nContent-Length: 100001\r\nExpect: 100-continue\r\n\r\n")
                let ra = try a.readResponse()
                XCTAssertEqual(ra.status, 413, "[\(mode)] \(ra)")
                XCTAssertEqual(ra.header("Connection"), "close", "[\(mode)]")

                let b = try TestSocket(port: server.port)
                try b.send("POST /count HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
                let piece = Array("4000\r\n".utf8) + [UInt8](repeating: 1, count: 0x4000) + [13, 10]
                do { for _ in 0..<7 { try b.send(piece) } } catch {}   // 114,688 bytes: over the limit at the 7th chunk
                let rb = try b.readResponse()
                XCTAssertEqual(rb.status, 413, "[\(mode)] \(rb)")

                // Exactly at the limit: fine.
                let c = try TestSocket(port: server.port)
                try c.send("POST /count HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n" + String(repeating: "z", count: 100_000))
                let rc = try c.readResponse()
                XCTAssertTrue(rc.bodyString.hasPrefix("n=100000 "), "[\(mode)] \(rc)")

                // Buffered: maxBody.
                XCTAssertEqual(try fetch(port: server.port, "POST /buffer HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n" + String(repeating: "b", count: 1000)).bodyString,
                               "buffered=1000\n", "[\(mode)]")
                XCTAssertEqual(try fetch(port: server.port, "POST /buffer HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n").status, 413, "[\(mode)]")
                XCTAssertTrue(waitFor("ends") { log.ends.count == 2 }, "[\(mode)] \(log.ends)")
                XCTAssertEqual(log.ends.map(\.end), [.tooLarge, .complete], "[\(mode)] \(log.ends)")
                XCTAssertEqual(log.ends.first?.received, 6 * 0x4000, "[\(mode)] six chunks fit under the limit")
            }
        }
    }

    /// A client that leaves mid-upload (FIN, then RST) ends the stream with
    /// `.clientGone`; the consumers are released and the server goes on.
    func testClientLeavingMidUploadEndsClientGone() throws {
        try forEachEngine { mode in
            let log = StreamLog()
            try withServer(mode, Self.app(log)) { server in
                for leave in ["close", "reset"] {
                    let s = try TestSocket(port: server.port)
                    try s.send("POST /count HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n")
                    try s.send([UInt8](repeating: 3, count: 300_000))
                    XCTAssertTrue(waitFor("stream started") { log.liveConsumers == 1 }, "[\(mode)] stream started")
                    if leave == "close" { s.close() } else { s.reset() }
                    XCTAssertTrue(waitFor("end") { log.ends.contains { $0.end == .clientGone && $0.target == "/count" } }, "[\(mode)] \(leave): \(log.ends)")
                    XCTAssertTrue(waitFor("consumers released") { log.liveConsumers == 0 }, "[\(mode)] \(leave): \(log.liveConsumers) consumers alive")
                    XCTAssertEqual(log.ends.count, 1, "[\(mode)] \(leave): \(log.ends)")
                    XCTAssertLessThan(log.ends.first?.received ?? .max, 1_000_000, "[\(mode)]")
                    // Start over for the second way of leaving.
                    let r = try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                    XCTAssertEqual(r.bodyString, "buffered=0\n", "[\(mode)] server goes on")
                    log.clearEnds()
                }
            }
        }
    }

    /// A body that stops arriving gets 408 after the idle timeout, and the
    /// consumer sees `.timedOut`.
    func testStalledStreamedBodyGets408() throws {
        try forEachEngine { mode in
            let log = StreamLog()
            try withServer(mode, Self.app(log), configure: { $0.idleTimeout = 1 }) { server in
                let s = try TestSocket(port: server.port)
                let start = ContinuousClock.now
                try s.send("POST /count HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n" + String(repeating: "a", count: 10))
                let r = try s.readResponse()
                let elapsed = ContinuousClock.now - start
                XCTAssertEqual(r.status, 408, "[\(mode)] \(r)")
                XCTAssertEqual(r.header("Connection"), "close", "[\(mode)]")
                XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(900), "[\(mode)]")
                XCTAssertLessThan(elapsed, .milliseconds(4500), "[\(mode)]")
                XCTAssertTrue(waitFor("end") { log.ends.count == 1 }, "[\(mode)]")
                XCTAssertEqual(log.ends.first?.end, .timedOut, "[\(mode)]")
            }
        }
    }

    /// Bad chunk framing in a streamed body: 400, `.badFraming`.
    func testBadFramingEndsBadFraming() throws {
        try forEachEngine { mode in
            let log = StreamLog()
            try withServer(mode, Self.app(log)) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /count HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 400, "[\(mode)] \(r)")
                XCTAssertTrue(waitFor("end") { log.ends.count == 1 }, "[\(mode)]")
                XCTAssertEqual(log.ends.first?.end, .badFraming, "[\(mode)]")
                XCTAssertEqual(log.ends.first?.received, 5, "[\(mode)] the good chunk arrived first")
            }
        }
    }

    /// A graceful shutdown lets an upload in flight finish: the rest of the
    /// body is read, the answer says Connection: close, then shutdown returns.
    func testGracefulShutdownLetsAStreamedUploadFinish() throws {
        try forEachEngine { mode in
            let log = StreamLog()
            let server = try startServer(mode, Self.app(log))
            let port = server.port
            let s = try TestSocket(port: port)
            try s.send("POST /count HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n")
            try s.send([UInt8](repeating: 9, count: 200_000))
            XCTAssertTrue(waitFor("stream started") { log.liveConsumers == 1 }, "[\(mode)]")
            let finished = DispatchSemaphore(value: 0)
            Thread {
                server.shutdown(deadline: .seconds(15))
                finished.signal()
            }.start()
            // The drain has begun once new connections are refused.
            XCTAssertTrue(waitFor("listener closed") {
                guard let probe = try? TestSocket(port: port) else { return true }
                probe.close()
                return false
            }, "[\(mode)] still accepting")
            try s.send([UInt8](repeating: 9, count: 800_000))
            let r = try s.readResponse()
            XCTAssertTrue(r.bodyString.hasPrefix("n=1000000 "), "[\(mode)] \(r)")
            XCTAssertEqual(r.header("Connection"), "close", "[\(mode)]")
            XCTAssertEqual(finished.wait(timeout: .now() + 10), .success, "[\(mode)] shutdown did not return")
            XCTAssertEqual(log.ends.map(\.end), [.complete], "[\(mode)]")
        }
    }

    /// An answer written while the body is still arriving goes out at once;
    /// the rest of the body is still read, and the connection goes on.
    func testAnswerBeforeTheEndOfTheBody() throws {
        try forEachEngine { mode in
            let log = StreamLog()
            try withServer(mode, Self.app(log)) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /early HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n" + String(repeating: "e", count: 1000))
                let r = try s.readResponse()
                XCTAssertEqual(r.bodyString, "early\n", "[\(mode)] answered before the body ended")
                XCTAssertTrue(log.ends.isEmpty, "[\(mode)] \(log.ends)")
                try s.send(String(repeating: "e", count: 99_000))
                XCTAssertTrue(waitFor("end") { log.ends.count == 1 }, "[\(mode)]")
                XCTAssertEqual(log.ends.first?.end, .complete, "[\(mode)]")
                XCTAssertEqual(log.ends.first?.received, 100_000, "[\(mode)]")
                if mode.keepsAlive {
                    try s.send("GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
                    XCTAssertEqual(try s.readResponse().bodyString, "buffered=0\n", "[\(mode)] the connection goes on")
                } else {
                    XCTAssertEqual(r.header("Connection"), "close", "[\(mode)]")
                    XCTAssertTrue(try s.readUntilEOF().isEmpty, "[\(mode)] closed once the body was read")
                }
            }
        }
    }

    /// A stream that starts paused asks for no body: 100 Continue goes out
    /// only when it is resumed (event engines). The blocking engines cannot
    /// hold a stream, so there it starts, and 100 Continue goes out, at once.
    func testStreamStartingPausedSends100ContinueOnResume() throws {
        try forEachEngine { mode in
            let log = StreamLog()
            try withServer(mode, Self.app(log)) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /held HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
                let canHold = mode.engine != .blocking && mode.engine != .threaded
                if canHold {
                    XCTAssertTrue(waitFor("stream started") { log.liveConsumers == 1 }, "[\(mode)]")
                    var p = pollfd(fd: s.fd, events: Int16(POLLIN), revents: 0)
                    XCTAssertEqual(poll(&p, 1, 300), 0, "[\(mode)] something arrived before the resume")
                    let r = try fetch(port: server.port, "GET /resume HTTP/1.1\r\nHost: h\r\n\r\n")
                    XCTAssertEqual(r.bodyString, "resumed=true\n", "[\(mode)]")
                }
                XCTAssertEqual(try s.readResponse().status, 100, "[\(mode)]")
                try s.send("xyz")
                XCTAssertTrue(try s.readResponse().bodyString.hasPrefix("n=3 "), "[\(mode)]")
            }
        }
    }

    /// A body the head handler leaves buffered gets 100 Continue as before.
    func testBufferedBodyStillGets100Continue() throws {
        try forEachEngine { mode in
            let log = StreamLog()
            try withServer(mode, Self.app(log)) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /buffer HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
                XCTAssertEqual(try s.readResponse().status, 100, "[\(mode)]")
                try s.send("abcd")
                XCTAssertEqual(try s.readResponse().bodyString, "buffered=4\n", "[\(mode)]")
                XCTAssertTrue(log.ends.isEmpty, "[\(mode)] no stream")
            }
        }
    }

    /// Keep-alive after a streamed body: the next request on the same
    /// connection (pipelined right behind the body) is answered.
    func testNextRequestAfterAStreamedBody() throws {
        try forEachEngine { mode in
            guard mode.keepsAlive else { return }   // blocking: one request per connection (covered above)
            let log = StreamLog()
            try withServer(mode, Self.app(log)) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /sum HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /x HTTP/1.1\r\nHost: h\r\n\r\n"
                           + "POST /count HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
                let first = try s.readResponse()
                XCTAssertTrue(first.bodyString.hasPrefix("n=3 sum=\(String(Checksum.of(Array("abc".utf8)), radix: 16)) "), "[\(mode)] \(first)")
                XCTAssertEqual(try s.readResponse().bodyString, "buffered=0\n", "[\(mode)]")
                XCTAssertTrue(try s.readResponse().bodyString.hasPrefix("n=2 "), "[\(mode)]")
            }
        }
    }
}
