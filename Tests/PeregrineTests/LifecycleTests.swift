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
        try forEachTrigger { trigger in
            try withServer(trigger, TestApps.inspect, configure: { $0.limits.maxBody = 1024 }) { server in
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
                XCTAssertEqual(response.status, 413, "[\(trigger)] \(response)")
                XCTAssertEqual(response.header("Connection"), "close", "[\(trigger)]")
                var tail = [UInt8](repeating: 0, count: 4096)
                let n = try tail.withUnsafeMutableBytes { try client.recvRaw($0) }
                XCTAssertEqual(n, 0, "[\(trigger)] expected a clean end of stream after the 413")
                XCTAssertNil(uploadError.withLock { $0 }, "[\(trigger)] the upload was cut off instead of discarded")
            }
        }
    }

    /// A body that stops arriving is answered 408 once idleTimeout passes
    /// without progress.
    func testStalledBodyGets408() throws {
        try forEachTrigger { trigger in
            try withServer(trigger, TestApps.inspect, configure: { $0.idleTimeout = 1 }) { server in
                let client = try TestSocket(port: server.port)
                defer { client.close() }
                try client.send("POST /stall HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789")
                let start = ContinuousClock.now
                let response = try client.readResponse()
                XCTAssertEqual(response.status, 408, "[\(trigger)] \(response)")
                XCTAssertGreaterThanOrEqual(ContinuousClock.now - start, .milliseconds(900), "[\(trigger)] 408 before the timeout")
            }
        }
    }

    /// A client that asks for a lot and never reads is dropped once idleTimeout
    /// passes without the output moving: memory is not held forever.
    func testClientThatStopsReadingIsDropped() throws {
        try forEachTrigger { trigger in
            try withServer(trigger, TestApps.inspect, configure: { $0.idleTimeout = 1 }) { server in
                let client = try TestSocket(port: server.port)
                defer { client.close() }
                let requests = 6   // 24 MiB: more than the socket buffers of both ends hold
                try client.send(String(repeating: "GET /big HTTP/1.1\r\nHost: h\r\n\r\n", count: requests))
                usleep(3_500_000)
                let received = try client.readUntilEOF()
                XCTAssertLessThan(received.count, requests * TestApps.bigBodySize,
                                  "[\(trigger)] a reader that stalled for 3.5 s got everything: it was never timed out")
            }
        }
    }

    /// A slow but steady reader of pipelined answers is paused by backpressure
    /// with complete requests still buffered. It is waiting on its own reading,
    /// not sending a slow head: no 408, every answer arrives.
    func testSlowReaderOfPipelinedAnswersGetsNo408() throws {
        try forEachTrigger { trigger in
            try withServer(trigger, TestApps.inspect, configure: { $0.headerTimeout = 1; $0.idleTimeout = 10 }) { server in
                let client = try TestSocket(port: server.port)
                defer { client.close() }
                try client.send(String(repeating: "GET /big HTTP/1.1\r\nHost: h\r\n\r\n", count: 5) + "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                let start = ContinuousClock.now
                for i in 0..<5 {
                    usleep(600_000)   // 5 × 0.6 s: well past the 1 s header timeout
                    let r = try client.readResponse()
                    XCTAssertEqual(r.status, 200, "[\(trigger)] response \(i)")
                    XCTAssertEqual(r.body.count, TestApps.bigBodySize, "[\(trigger)] response \(i)")
                }
                let last = try client.readResponse()
                XCTAssertEqual(last.status, 200, "[\(trigger)] \(last)")
                XCTAssertGreaterThan(ContinuousClock.now - start, .seconds(2), "[\(trigger)] the test must outlast the header timeout")
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
        try forEachTrigger { trigger in
            try withServer(trigger, app, configure: { $0.threads = 2 }) { server in
                var ids = Set<UInt64>()
                var sockets = [TestSocket]()
                for _ in 0..<40 {
                    let s = try TestSocket(port: server.port)
                    sockets.append(s)
                    try s.send("?")
                    var raw = [UInt8](repeating: 0, count: 8)
                    var got = 0
                    while got < 8 {
                        let n = try raw.withUnsafeMutableBytes { try s.recvRaw(UnsafeMutableRawBufferPointer(rebasing: $0[got...])) }
                        XCTAssertGreaterThan(n, 0, "[\(trigger)] closed early")
                        if n == 0 { break }
                        got += n
                    }
                    ids.insert(raw.withUnsafeBytes { $0.load(as: UInt64.self) })
                }
                XCTAssertEqual(ids.count, 40, "[\(trigger)] connection ids repeat across loops: \(ids.sorted())")
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
        try forEachTrigger { trigger in
            try withServer(trigger, app) { server in
                let client = try TestSocket(port: server.port)
                defer { client.close() }
                try client.send("GET /keep HTTP/1.0\r\nHost: h\r\n\r\n")   // 1.0 without keep-alive: the writer closes
                let r = try client.readResponse()
                XCTAssertEqual(r.header("X-Result"), "keep-alive=false close=false", "[\(trigger)]")
                XCTAssertEqual(r.header("Connection"), "close", "[\(trigger)] \(r)")
                XCTAssertEqual(r.headerCount("Connection"), 1, "[\(trigger)] \(r)")
                let second = try TestSocket(port: server.port)
                defer { second.close() }
                try second.send("GET /close HTTP/1.1\r\nHost: h\r\n\r\n")
                let c = try second.readResponse()
                XCTAssertEqual(c.header("X-Result"), "keep-alive=false close=true", "[\(trigger)]")
                XCTAssertEqual(c.headerCount("Connection"), 1, "[\(trigger)] \(c)")
                XCTAssertTrue(try second.readUntilEOF().isEmpty, "[\(trigger)] the application's close was not honored")
            }
        }
    }
}
