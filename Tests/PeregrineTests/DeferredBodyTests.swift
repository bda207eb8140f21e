// A deferred answer while the request body streams, on the Swift engine
// (the C engines: Tests/CTests/test_defer_body.c, the same cases). The head
// handler of a `.streaming` application defers (ConnPtr.deferAnswer) and
// returns a consumer: the body streams while the answer is owed, and the
// test answers through the engine's own handle (DeferredAnswer,
// SwiftResponseStream) from its thread. Until PeregrineCore has a public
// `Response.deferAnswer()`, this reaches the engine's internals.
import Foundation
import Peregrine
@testable import PeregrineSwiftEpoll
import Synchronization
import XCTest

/// What the app saw, shared with the test thread.
final class DeferBodyLog: @unchecked Sendable {
    private let lock = NSLock()
    private var handles: [DeferredAnswer] = []
    private var endList: [BodyEnd] = []
    private var bytes = 0
    // The echo's counters (loop thread, read after the echo ended).
    var echoWaits = 0, echoResumes = 0, echoErrors = 0, echoMaxLevel = 0

    func took(_ d: DeferredAnswer) { lock.lock(); handles.append(d); lock.unlock() }
    var handleCount: Int { lock.lock(); defer { lock.unlock() }; return handles.count }
    var lastHandle: DeferredAnswer? { lock.lock(); defer { lock.unlock() }; return handles.last }
    func received(_ n: Int) { lock.lock(); bytes += n; lock.unlock() }
    var bodyBytes: Int { lock.lock(); defer { lock.unlock() }; return bytes }
    func ended(_ how: BodyEnd) { lock.lock(); endList.append(how); lock.unlock() }
    private var waitedOnce = false
    /// The echo's producer was told to wait (set from the loop thread).
    func echoWaited() { lock.lock(); waitedOnce = true; lock.unlock() }
    var echoHasWaited: Bool { lock.lock(); defer { lock.unlock() }; return waitedOnce }
    var ends: [BodyEnd] { lock.lock(); defer { lock.unlock() }; return endList }
}

final class DeferredBodyTests: XCTestCase {
    /// The stream's high mark (DeferredAnswer's default).
    static let echoHigh = 256 * 1024
    static let echoBytes = 4 << 20

    static func pattern(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: i &* 31 &+ (i >> 12)) }

    /// Routes: /hold defers in the head (the test answers), /echo defers and
    /// streams the body back with both backpressures, /late defers in the
    /// consumer's end. Bodyless requests: `now`.
    static func app(_ log: DeferBodyLog) -> Application {
        .streaming(head: { request, response in
            let target = request.targetString
            let conn = ConnPtr(response.engineHandle)
            if target == "/late" {
                return BodyConsumer(chunk: { bytes, _ in log.received(bytes.count); return bytes.count },
                                    end: { how, consumer in
                    if how == .complete, let r = consumer.response, let d = ConnPtr(r.engineHandle).deferAnswer() {
                        log.took(d)
                    }
                    log.ended(how)
                })
            }
            guard let d = conn.deferAnswer() else {
                response.send(status: 500, body: "no defer\n")
                return nil
            }
            if target == "/echo" {
                let stream = SwiftResponseStream(d)
                _ = stream.streamHead(status: 200)
                let consumer = BodyConsumer(chunk: { bytes, consumer in
                    log.received(bytes.count)
                    let rc = stream.streamWrite(bytes)
                    log.echoMaxLevel = max(log.echoMaxLevel, d.postedTotal.load(ordering: .sequentiallyConsistent)
                                            + d.loopPart.load(ordering: .sequentiallyConsistent))
                    if rc < 0 { log.echoErrors += 1 }
                    if rc == 1 {
                        log.echoWaits += 1
                        _ = consumer.pause()
                        log.echoWaited()
                    }
                    return bytes.count
                }, end: { how, _ in
                    stream.streamOnWritable(nil)
                    if how == .complete { _ = stream.streamEnd() }
                    log.ended(how)
                })
                stream.streamOnWritable {
                    log.echoResumes += 1
                    _ = consumer.resume()   // the loop thread; refused once the body ended
                }
                return consumer
            }
            log.took(d)
            return BodyConsumer(chunk: { bytes, _ in log.received(bytes.count); return bytes.count },
                                end: { how, _ in log.ended(how) })
        }, request: { _, response in
            response.send(status: 200, body: "now")
        })
    }

    static var modes: [EngineMode] { EngineMode.all.filter { $0.engine == .swift } }

    private func waitHandle(_ log: DeferBodyLog, after before: Int) -> DeferredAnswer? {
        _ = waitUntil { log.handleCount > before }
        return log.handleCount > before ? log.lastHandle : nil
    }

    private func waitEnd(_ log: DeferBodyLog, after before: Int) -> BodyEnd? {
        _ = waitUntil { log.ends.count > before }
        return log.ends.count > before ? log.ends.last : nil
    }

    private func keepAlive(_ s: TestSocket, _ mode: EngineMode) throws {
        try s.send("GET /now HTTP/1.1\r\nHost: t\r\n\r\n")
        let r = try s.readResponse()
        XCTAssertEqual(r.status, 200, "[\(mode)] keep-alive: the next request answered")
        XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "now", "[\(mode)]")
    }

    func testAnsweredAfterTheBodyCompleted() throws {
        for mode in Self.modes {
            let log = DeferBodyLog()
            try withServer(mode, Self.app(log)) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
                let d = try XCTUnwrap(waitHandle(log, after: 0), "[\(mode)] deferred in the head")
                let interim = try s.readResponse(expectBody: false)
                XCTAssertEqual(interim.status, 100, "[\(mode)] 100 Continue while the answer is deferred")
                try s.send("0123456789")
                XCTAssertEqual(waitEnd(log, after: 0), .complete, "[\(mode)]")
                XCTAssertEqual(log.bodyBytes, 10, "[\(mode)]")
                XCTAssertFalse(s.waitReadable(timeout: .milliseconds(200)), "[\(mode)] no 500 at the body's end")
                XCTAssertTrue(d.complete(OffloadAnswer(status: 200, body: "got 10")), "[\(mode)] the deferred answer")
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)]")
                XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "got 10", "[\(mode)]")
                XCTAssertNil(r.header("Connection"), "[\(mode)] keeps the connection")
                try keepAlive(s, mode)
            }
        }
    }

    func testAnsweredBeforeTheBodyArrived() throws {
        for mode in Self.modes {
            let log = DeferBodyLog()
            try withServer(mode, Self.app(log)) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234")
                let d = try XCTUnwrap(waitHandle(log, after: 0), "[\(mode)]")
                XCTAssertTrue(d.complete(OffloadAnswer(status: 201, body: "early")), "[\(mode)]")
                XCTAssertFalse(d.complete(OffloadAnswer(status: 200, body: "x")), "[\(mode)] a second answer")
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 201, "[\(mode)]")
                XCTAssertTrue(log.ends.isEmpty, "[\(mode)] the body has not ended")
                try s.send("56789")
                XCTAssertEqual(waitEnd(log, after: 0), .complete, "[\(mode)] the body is read to its end")
                XCTAssertEqual(log.bodyBytes, 10, "[\(mode)]")
                try keepAlive(s, mode)
            }
        }
    }

    func testEchoWhileTheBodyArrives() throws {
        for mode in Self.modes {
            let log = DeferBodyLog()
            try withServer(mode, Self.app(log)) { server in
                let s = try TestSocket(port: server.port)
                var small: Int32 = 64 * 1024
                setsockopt(s.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
                // The server's send buffer small too: otherwise the kernel holds the whole echo.
                let serverFd = try XCTUnwrap(serverSideDescriptor(of: s.fd), "[\(mode)] the server's socket")
                setsockopt(serverFd, SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
                let sender = TestThread {
                    try? s.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: \(Self.echoBytes)\r\n\r\n")
                    var block = [UInt8](repeating: 0, count: 8192)
                    var at = 0
                    while at < Self.echoBytes {
                        for i in 0..<block.count { block[i] = Self.pattern(at + i) }
                        guard (try? s.send(block)) != nil else { return }
                        at += block.count
                    }
                }
                // Nothing is read until the server's output has backed up to the
                // high mark (4 MiB is far more than both socket buffers and the
                // mark hold); a reader that kept pace would never make it wait.
                let until = DispatchTime.now().uptimeNanoseconds + 10_000_000_000
                while !log.echoHasWaited && DispatchTime.now().uptimeNanoseconds < until { usleep(1000) }
                XCTAssertTrue(log.echoHasWaited, "[\(mode)] the server's output backed up while the client read nothing")
                let got = try readEchoSlowly(s)
                XCTAssertTrue(sender.join(), "[\(mode)] the body was sent")
                XCTAssertEqual(got, Self.echoBytes, "[\(mode)] every byte echoed in order")
                XCTAssertEqual(waitEnd(log, after: 0), .complete, "[\(mode)]")
                XCTAssertEqual(log.echoErrors, 0, "[\(mode)] no write refused")
                XCTAssertGreaterThan(log.echoWaits, 0, "[\(mode)] the producer was told to wait")
                XCTAssertGreaterThan(log.echoResumes, 0, "[\(mode)] onWritable resumed the body")
                // The high mark, the write that crossed it (a receive block), chunk framing.
                XCTAssertLessThanOrEqual(log.echoMaxLevel, Self.echoHigh + 16384 + 256, "[\(mode)] the level stayed bounded")
                try keepAlive(s, mode)
            }
        }
    }

    func testClientLeavesMidBody() throws {
        for mode in Self.modes {
            let log = DeferBodyLog()
            try withServer(mode, Self.app(log)) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhalf")
                let d = try XCTUnwrap(waitHandle(log, after: 0), "[\(mode)]")
                let stream = SwiftResponseStream(d)
                XCTAssertEqual(stream.streamHead(status: 200), 0, "[\(mode)]")
                XCTAssertEqual(Array("partial".utf8).withUnsafeBytes { stream.streamWrite($0) }, 0, "[\(mode)]")
                XCTAssertTrue(s.waitReadable(), "[\(mode)] what was written arrives")
                s.reset()
                XCTAssertEqual(waitEnd(log, after: 0), .clientGone, "[\(mode)]")
                XCTAssertEqual(Array("more".utf8).withUnsafeBytes { stream.streamWrite($0) }, -ECONNRESET,
                               "[\(mode)] a later write refused")
                XCTAssertEqual(stream.streamEnd(), -ECONNRESET, "[\(mode)] a later end refused")

                // A half-close mid-body, the handle not yet headed.
                let h = try TestSocket(port: server.port)
                try h.send("POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhalf")
                let d2 = try XCTUnwrap(waitHandle(log, after: 1), "[\(mode)]")
                h.shutdownWrite()
                XCTAssertEqual(waitEnd(log, after: 1), .clientGone, "[\(mode)] after a half-close")
                XCTAssertFalse(d2.complete(OffloadAnswer(status: 200, body: "late")), "[\(mode)] the answer refused")
                XCTAssertTrue(h.serverCloses(within: .seconds(5)), "[\(mode)] closed, unanswered")
            }
        }
    }

    func testBodyTooLargeWithTheHandleHeld() throws {
        let chunk = "50\r\n" + String(repeating: "a", count: 80) + "\r\n"
        for mode in Self.modes {
            let log = DeferBodyLog()
            try withServer(mode, Self.app(log), configure: { $0.maxStreamedBody = 100 }) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /hold HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
                let d = try XCTUnwrap(waitHandle(log, after: 0), "[\(mode)]")
                try s.send(chunk + chunk)
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 413, "[\(mode)] 413 in the deferred answer's place")
                XCTAssertEqual(waitEnd(log, after: 0), .tooLarge, "[\(mode)]")
                XCTAssertFalse(d.complete(OffloadAnswer(status: 200, body: "x")), "[\(mode)] the handle refused")
                XCTAssertEqual(d.state.load(ordering: .acquiring), DeferState.orphan, "[\(mode)]")
                XCTAssertTrue(s.serverCloses(within: .seconds(5)), "[\(mode)] closed after the 413")

                // Headed already: closed after what was written.
                let t = try TestSocket(port: server.port)
                try t.send("POST /hold HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
                let d2 = try XCTUnwrap(waitHandle(log, after: 1), "[\(mode)]")
                let stream = SwiftResponseStream(d2)
                XCTAssertEqual(stream.streamHead(status: 200), 0, "[\(mode)]")
                XCTAssertEqual(Array("partial".utf8).withUnsafeBytes { stream.streamWrite($0) }, 0, "[\(mode)]")
                XCTAssertTrue(t.waitReadable(), "[\(mode)] the head and a chunk arrive")
                try t.send(chunk + chunk)
                XCTAssertEqual(waitEnd(log, after: 1), .tooLarge, "[\(mode)]")
                XCTAssertEqual(Array("more".utf8).withUnsafeBytes { stream.streamWrite($0) }, -ECONNRESET,
                               "[\(mode)] a later write refused")
                let rest = String(decoding: try t.readUntilEOF(), as: UTF8.self)
                XCTAssertTrue(rest.contains("partial") && !rest.contains("0\r\n\r\n") && !rest.contains("413"),
                              "[\(mode)] closed after what was written: \(rest)")
            }
        }
    }

    func testStalledBodyWithTheHandleHeld() throws {
        for mode in Self.modes {
            let log = DeferBodyLog()
            try withServer(mode, Self.app(log), configure: { $0.idleTimeout = 1 }) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234")
                let d = try XCTUnwrap(waitHandle(log, after: 0), "[\(mode)]")
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 408, "[\(mode)] 408 for the stalled body")
                XCTAssertEqual(waitEnd(log, after: 0), .timedOut, "[\(mode)]")
                XCTAssertFalse(d.complete(OffloadAnswer(status: 200, body: "x")), "[\(mode)] the handle refused")
                XCTAssertEqual(d.state.load(ordering: .acquiring), DeferState.timedOut, "[\(mode)]")
            }
        }
    }

    func testPipelinedRequestWaitsBehindTheDeferredStream() throws {
        for mode in Self.modes {
            let log = DeferBodyLog()
            try withServer(mode, Self.app(log)) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /now HTTP/1.1\r\nHost: t\r\n\r\n")
                let d = try XCTUnwrap(waitHandle(log, after: 0), "[\(mode)]")
                let stream = SwiftResponseStream(d)
                XCTAssertEqual(stream.streamHead(status: 200), 0, "[\(mode)]")
                XCTAssertEqual(Array("ab".utf8).withUnsafeBytes { stream.streamWrite($0) }, 0, "[\(mode)]")
                XCTAssertEqual(waitEnd(log, after: 0), .complete, "[\(mode)] the body ended before the answer")
                var seen = [UInt8]()
                var buf = [UInt8](repeating: 0, count: 65536)
                while !String(decoding: seen, as: UTF8.self).contains("2\r\nab\r\n") {
                    let n = try buf.withUnsafeMutableBytes { try s.recvRaw($0) }
                    if n == 0 { break }
                    seen += buf[0..<n]
                }
                XCTAssertTrue(String(decoding: seen, as: UTF8.self).hasSuffix("2\r\nab\r\n"), "[\(mode)] the first chunk")
                XCTAssertFalse(s.waitReadable(timeout: .milliseconds(300)), "[\(mode)] nothing of /now while the stream is open")
                XCTAssertEqual(Array("cd".utf8).withUnsafeBytes { stream.streamWrite($0) }, 0, "[\(mode)]")
                XCTAssertEqual(stream.streamEnd(), 0, "[\(mode)]")
                var rest = [UInt8]()
                while !String(decoding: rest, as: UTF8.self).hasSuffix("now") {
                    let n = try buf.withUnsafeMutableBytes { try s.recvRaw($0) }
                    if n == 0 { break }
                    rest += buf[0..<n]
                }
                let text = String(decoding: rest, as: UTF8.self)
                XCTAssertTrue(text.hasPrefix("2\r\ncd\r\n0\r\n\r\nHTTP/1.1 200"), "[\(mode)] the stream's end, then /now: \(text)")
                try keepAlive(s, mode)
            }
        }
    }

    func testDeferredInTheConsumersEnd() throws {
        for mode in Self.modes {
            let log = DeferBodyLog()
            try withServer(mode, Self.app(log)) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /late HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
                let d = try XCTUnwrap(waitHandle(log, after: 0), "[\(mode)] deferred in end(.complete)")
                XCTAssertFalse(s.waitReadable(timeout: .milliseconds(200)), "[\(mode)] no 500")
                XCTAssertTrue(d.complete(OffloadAnswer(status: 200, body: "late")), "[\(mode)]")
                let r = try s.readResponse()
                XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "late", "[\(mode)]")
                try keepAlive(s, mode)
            }
        }
    }

    /// Reads the chunked echo in small, slow reads; the body bytes that matched.
    private func readEchoSlowly(_ s: TestSocket) throws -> Int {
        var data = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        func more() throws -> Bool {
            usleep(200)
            let n = try buf.withUnsafeMutableBytes { try s.recvRaw($0) }
            data += buf[0..<n]
            return n > 0
        }
        func find(_ p: [UInt8], from: Int) -> Int? {
            guard data.count >= from + p.count else { return nil }
            for i in from...(data.count - p.count) where data[i] == p[0] && Array(data[i..<i + p.count]) == p { return i }
            return nil
        }
        var headEnd: Int?
        while true {
            headEnd = find(Array("\r\n\r\n".utf8), from: 0)
            if headEnd != nil { break }
            if try !more() { return 0 }
        }
        var at = headEnd! + 4
        var got = 0
        while true {
            var crlf: Int?
            while true {
                crlf = find([13, 10], from: at)
                if crlf != nil { break }
                if try !more() { return got }
            }
            let size = Int(String(decoding: data[at..<crlf!], as: UTF8.self), radix: 16) ?? -1
            if size <= 0 { return got }
            at = crlf! + 2
            while data.count < at + size + 2 { if try !more() { return got } }
            for i in 0..<size where data[at + i] != Self.pattern(got + i) {
                XCTFail("echo byte \(got + i) differs")
                return got
            }
            got += size
            at += size + 2
            if at > 1 << 20 {   // keep the buffer small
                data.removeFirst(at)
                at = 0
            }
        }
    }
}

/// The server's end of a loopback connection (the server runs in this
/// process), found by its peer address.
func serverSideDescriptor(of client: Int32) -> Int32? {
    var mine = sockaddr_in()
    var ml = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &mine) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(client, $0, &ml) }
    }
    guard ok == 0 else { return nil }
    var found: Int32?
    _ = waitUntil {
        for fd in Int32(3)..<4096 where fd != client {
            var peer = sockaddr_in()
            var pl = socklen_t(MemoryLayout<sockaddr_in>.size)
            let rc = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &pl) }
            }
            if rc == 0 && pl == MemoryLayout<sockaddr_in>.size && peer.sin_port == mine.sin_port
                && peer.sin_addr.s_addr == mine.sin_addr.s_addr {
                found = fd
                return true
            }
        }
        return false
    }
    return found
}
