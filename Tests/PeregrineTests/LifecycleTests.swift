// How connections end: lingering close after an error answer, timeouts on
// stalled bodies and stalled readers, no false 408 for a slow reader of
// pipelined answers, connection identity, the writer's Connection rule.
import Foundation
import Glibc
import Peregrine
import Synchronization
import XCTest

final class LifecycleTests: XCTestCase {
    /// A client still uploading a refused body gets the 413 and then a clean
    /// end of stream (FIN, not a reset), and its upload is not cut off with
    /// EPIPE: the server shuts its write side and discards the rest.
    func testErrorAnswerReachesClientStillUploading() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: { $0.limits.maxBody = 1024 }) { server in
                let client = try TestSocket(port: server.port)
                defer { client.close() }
                let upload = 512 * 1024
                try client.send("POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: \(upload)\r\n\r\n")
                let uploadError = Mutex<String?>(nil)
                onThreads(1) { _ in
                    let piece = [UInt8](repeating: 0x61, count: 16 * 1024)
                    do {
                        for _ in 0..<(upload / piece.count) { try client.send(piece) }
                    } catch {
                        uploadError.withLock { $0 = "\(error)" }
                    }
                }
                let response = try client.readResponse()
                XCTAssertEqual(response.status, 413, "[\(mode)] \(response)")
                XCTAssertEqual(response.header("Connection"), "close", "[\(mode)]")
                var tail = [UInt8](repeating: 0, count: 4096)
                let n = try tail.withUnsafeMutableBytes { try client.recvRaw($0) }
                XCTAssertEqual(n, 0, "[\(mode)] expected a clean end of stream after the 413")
                XCTAssertNil(uploadError.withLock { $0 }, "[\(mode)] the upload was cut off instead of discarded")
            }
        }
    }

    /// A body that stops arriving is answered 408 once idleTimeout passes
    /// without progress: not before 1 s, and within the coarse clock's 1 to 3 s.
    func testStalledBodyGets408() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: { $0.idleTimeout = 1 }) { server in
                let client = try TestSocket(port: server.port)
                defer { client.close() }
                try client.send("POST /stall HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789")
                let start = ContinuousClock.now
                let response = try client.readResponse()
                XCTAssertEqual(response.status, 408, "[\(mode)] \(response)")
                let took = ContinuousClock.now - start
                XCTAssertGreaterThanOrEqual(took, .milliseconds(900), "[\(mode)] 408 before the timeout")
                XCTAssertLessThan(took, .milliseconds(3500), "[\(mode)] 408 came \(took) after the body stalled (idle timeout 1 s)")
            }
        }
    }

    /// A client that asks for a lot and never reads is dropped once idleTimeout
    /// passes without the output moving: memory is not held forever. The
    /// idle clock is coarse (one sweep per second, TimeoutTests), so the drop
    /// comes 1 to 3 s after the output stalls; it must come within 4 s.
    func testClientThatStopsReadingIsDropped() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: { $0.idleTimeout = 1 }) { server in
                guard mode.servesConcurrently else {
                    // One client at a time: a client that asks for 4 MiB and
                    // never reads holds the server in a blocking send until the
                    // write timeout drops it; then the next client is served.
                    let stalled = try TestSocket(port: server.port)
                    defer { stalled.close() }
                    try stalled.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
                    XCTAssertTrue(stalled.waitUntilServerHasRead(), "[\(mode)] the stalled client's request was not taken")
                    let start = ContinuousClock.now
                    let next = try fetch(port: server.port, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                    XCTAssertEqual(next.bodyString, "Hello, World!", "[\(mode)] next client served after the stalled one")
                    XCTAssertLessThan(ContinuousClock.now - start, .seconds(4), "[\(mode)] the stalled reader was not dropped in time")
                    XCTAssertTrue(stalled.serverCloses(within: .seconds(1)), "[\(mode)] the stalled reader's connection is still open")
                    let received = try stalled.readUntilEOF()
                    XCTAssertLessThan(received.count, TestApps.bigBodySize,
                                      "[\(mode)] the stalled reader got the whole answer: the server never waited on it")
                    return
                }
                let client = try TestSocket(port: server.port)
                defer { client.close() }
                let requests = 6   // 24 MiB: more than the socket buffers of both ends hold
                let start = ContinuousClock.now
                try client.send(String(repeating: "GET /big HTTP/1.1\r\nHost: h\r\n\r\n", count: requests))
                // Not reading: the output stalls at once, and the server must drop the client.
                if client.serverCloses(within: .seconds(6)) {
                    let took = ContinuousClock.now - start
                    XCTAssertGreaterThanOrEqual(took, .milliseconds(900), "[\(mode)] dropped before the idle timeout")
                    XCTAssertLessThan(took, .seconds(4), "[\(mode)] dropped \(took) after the output stalled (idle timeout 1 s)")
                } else {
                    XCTFail("[\(mode)] a reader that stalled for 6 s is still connected (server end: \(String(describing: client.serverEnd)))")
                }
                let received = try client.readUntilEOF()
                XCTAssertLessThan(received.count, requests * TestApps.bigBodySize,
                                  "[\(mode)] the stalled reader got everything: it was never timed out")
            }
        }
    }

    /// A slow but steady reader of pipelined answers is paused by backpressure
    /// with complete requests still buffered. It is waiting on its own reading,
    /// not sending a slow head: no 408, every answer arrives.
    func testSlowReaderOfPipelinedAnswersGetsNo408() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: { $0.headerTimeout = 1; $0.idleTimeout = 10 }) { server in
                guard mode.keepsAlive else { return }   // pipelined: one answer per connection on blocking (HTTPTests)
                let client = try TestSocket(port: server.port)
                defer { client.close() }
                try client.send(String(repeating: "GET /big HTTP/1.1\r\nHost: h\r\n\r\n", count: 5) + "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                let start = ContinuousClock.now
                for i in 0..<5 {
                    usleep(600_000)   // the subject: a slow reader, 5 × 0.6 s, well past the 1 s header timeout
                    let r = try client.readResponse()
                    XCTAssertEqual(r.status, 200, "[\(mode)] response \(i)")
                    XCTAssertEqual(r.body.count, TestApps.bigBodySize, "[\(mode)] response \(i)")
                }
                let last = try client.readResponse()
                XCTAssertEqual(last.status, 200, "[\(mode)] \(last)")
                XCTAssertGreaterThan(ContinuousClock.now - start, .seconds(2), "[\(mode)] the test must outlast the header timeout")
            }
        }
    }

    /// Connection.id is unique for the life of the server, across loops.
    func testConnectionIdsAreUniqueAcrossLoops() throws {
        let app: Application = .raw { connection, bytes in
            var id = connection.id
            _ = withUnsafeBytes(of: &id) { connection.write($0) }
            return bytes.count
        }
        try forEachEngine { mode in
            try withServer(mode, app, configure: { $0.threads = mode.runsSeveralLoops ? 2 : 1 }) { server in
                var ids = Set<UInt64>()
                var sockets = [TestSocket]()
                for _ in 0..<40 {
                    // One client at a time: each must leave before the next is served.
                    if !mode.servesConcurrently { sockets.last?.close() }
                    let s = try TestSocket(port: server.port)
                    sockets.append(s)
                    try s.send("?")
                    var raw = [UInt8](repeating: 0, count: 8)
                    var got = 0
                    while got < 8 {
                        let n = try raw.withUnsafeMutableBytes { try s.recvRaw(UnsafeMutableRawBufferPointer(rebasing: $0[got...])) }
                        XCTAssertGreaterThan(n, 0, "[\(mode)] closed early")
                        if n == 0 { break }
                        got += n
                    }
                    ids.insert(raw.withUnsafeBytes { $0.load(as: UInt64.self) })
                }
                XCTAssertEqual(ids.count, 40, "[\(mode)] connection ids repeat across loops: \(ids.sorted())")
                if mode.runsSeveralLoops {
                    // Loop i hands out i, i+2, ...: both parities mean both loops took connections.
                    XCTAssertEqual(Set(ids.map { $0 % 2 }).count, 2, "[\(mode)] the 40 connections did not reach both loops: \(ids.sorted())")
                }
                sockets.forEach { $0.close() }
            }
        }
    }

    /// Keep-alive is the writer's decision: an application may ask to close,
    /// never to keep alive.
    func testApplicationMayOnlyAskToClose() throws {
        let app: Application = .http { request, response in
            response.begin(status: 200)
            let keepAlive = response.header("Connection", "keep-alive")
            let close = request.targetString == "/close" ? response.header("Connection", "close") : false
            response.header("X-Result", "keep-alive=\(keepAlive) close=\(close)")
            response.end()
        }
        try forEachEngine { mode in
            try withServer(mode, app) { server in
                let client = try TestSocket(port: server.port)
                defer { client.close() }
                try client.send("GET /keep HTTP/1.0\r\nHost: h\r\n\r\n")   // 1.0 without keep-alive: the writer closes
                let r = try client.readResponse()
                XCTAssertEqual(r.header("X-Result"), "keep-alive=false close=false", "[\(mode)]")
                XCTAssertEqual(r.header("Connection"), "close", "[\(mode)] \(r)")
                XCTAssertEqual(r.headerCount("Connection"), 1, "[\(mode)] \(r)")
                let second = try TestSocket(port: server.port)
                defer { second.close() }
                try second.send("GET /close HTTP/1.1\r\nHost: h\r\n\r\n")
                let c = try second.readResponse()
                XCTAssertEqual(c.header("X-Result"), "keep-alive=false close=true", "[\(mode)]")
                XCTAssertEqual(c.headerCount("Connection"), 1, "[\(mode)] \(c)")
                XCTAssertTrue(try second.readUntilEOF().isEmpty, "[\(mode)] the application's close was not honored")
            }
        }
    }
}
