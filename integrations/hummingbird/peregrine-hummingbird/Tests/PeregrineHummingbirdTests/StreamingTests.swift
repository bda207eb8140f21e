// Request and response bodies streamed through the adapter: a 10 MiB body
// echoed back as it arrives, backpressure on an unread body, a response
// written over time (chunks leave before the handler finishes) with
// trailers, and a large streamed response.
import Foundation
import Hummingbird
import PeregrineHummingbird
import Synchronization
import XCTest

/// What the echo handler saw of the request body.
final class ChunkLog: Sendable {
    private let state = Mutex<(count: Int, bytes: Int, largest: Int)>((0, 0, 0))
    func record(_ n: Int) { state.withLock { $0.count += 1; $0.bytes += n; $0.largest = max($0.largest, n) } }
    var snapshot: (count: Int, bytes: Int, largest: Int) { state.withLock { $0 } }
}

/// 0, 1, ..., 250, 0, 1...: a pattern that shows a lost, repeated or reordered chunk.
func pattern(_ count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 % 251) } }

final class StreamingTests: XCTestCase {
    /// `POST /echo`: the body back as it comes, chunk by chunk.
    func echoRouter(_ log: ChunkLog) -> Router<PeregrineRequestContext> {
        let router = Router(context: PeregrineRequestContext.self)
        router.post("/echo") { request, _ in
            Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: ResponseBody { writer in
                for try await chunk in request.body {
                    log.record(chunk.readableBytes)
                    try await writer.write(chunk)
                }
                try await writer.finish(nil)
            })
        }
        return router
    }

    func testTenMiBRequestBodyEchoedBackThroughCurl() async throws {
        let size = 10 << 20
        let payload = Data(pattern(size))
        for mode in EngineMode.underTest {
            for framing in ["Content-Length", "chunked"] {
                let log = ChunkLog()
                try await withServer(mode, echoRouter(log)) { port in
                    let (rc, out, err) = try await blocking {
                        var args = ["-H", "Content-Type: application/octet-stream", "-H", "Expect:", "--data-binary", "@-"]
                        if framing == "chunked" { args += ["-H", "Transfer-Encoding: chunked"] }
                        return try curl(args + ["http://127.0.0.1:\(port)/echo"], input: payload)
                    }
                    XCTAssertEqual(rc, 0, "[\(mode) \(framing)] curl: \(err)")
                    XCTAssertEqual(out.count, size, "[\(mode) \(framing)] echoed length")
                    XCTAssertTrue(out.elementsEqual(payload), "[\(mode) \(framing)] echoed bytes differ")
                    let seen = log.snapshot
                    XCTAssertEqual(seen.bytes, size, "[\(mode) \(framing)] bytes the handler read")
                    // Streamed: many chunks, none the whole body.
                    XCTAssertGreaterThan(seen.count, 10, "[\(mode) \(framing)] chunks: \(seen)")
                    XCTAssertLessThan(seen.largest, size / 4, "[\(mode) \(framing)] largest chunk: \(seen)")
                }
            }
        }
    }

    func testUnreadBodyHoldsTheClientBack() async throws {
        // 32 MiB: several times what loopback's socket buffers hold between the two ends.
        let size = 32 << 20
        for mode in EngineMode.underTest {
            let gate = Gate()
            let router = Router(context: PeregrineRequestContext.self)
            router.post("/count") { request, _ in
                var iterator = request.body.makeAsyncIterator()
                var total = 0
                if let first = try await iterator.next() { total += first.readableBytes }
                await gate.pass()   // holds the body unread
                while let chunk = try await iterator.next() { total += chunk.readableBytes }
                return "\(total)"
            }
            try await withServer(mode, router) { port in
                try await blocking {
                    let c = try TestConnection(port: port, timeoutSeconds: 2)
                    let body = pattern(size)
                    let first = 64 << 10
                    try c.send(Array("POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: \(size)\r\n\r\n".utf8) + body[..<first])
                    XCTAssertTrue(gate.waitForArrival(), "[\(mode)] the handler read its first chunk")
                    // The handler reads no more: sending stalls (2 s without progress) well short of the body.
                    let sent = c.sendUntilStalled(body, from: first)
                    XCTAssertLessThan(sent, size / 2, "[\(mode)] the server took \(sent) bytes of an unread body")
                    print("[\(mode)] sent before the stall: \(sent) of \(size) bytes")
                    gate.open()
                    XCTAssertEqual(c.sendUntilStalled(body, from: sent), size, "[\(mode)] the rest, once the handler reads")
                    let r = try c.readResponse()
                    XCTAssertEqual(r.status, 200, "[\(mode)] \(r)")
                    XCTAssertEqual(r.bodyString, "\(size)", "[\(mode)] the handler read the whole body")
                }
            }
        }
    }

    func testResponseStreamsBeforeTheHandlerEnds() async throws {
        for mode in EngineMode.underTest {
            let gate = Gate()
            let router = Router(context: PeregrineRequestContext.self)
            router.get("/stream") { _, _ in
                Response(status: .ok, headers: [.contentType: "text/plain"], body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(string: "first\n"))
                    await gate.pass()
                    for i in 1...4 { try await writer.write(ByteBuffer(string: "chunk \(i)\n")) }
                    try await writer.finish([.init("X-Chunks")!: "5"])
                })
            }
            try await withServer(mode, router) { port in
                try await blocking {
                    let c = try TestConnection(port: port)
                    try c.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
                    let head = try c.readHead()
                    XCTAssertEqual(head.status, 200, "[\(mode)] \(head)")
                    XCTAssertEqual(head.header("Transfer-Encoding"), "chunked", "[\(mode)]")
                    var trailers: [(name: String, value: String)] = []
                    // The handler waits at the gate: this chunk left before it went on.
                    XCTAssertEqual(try c.readChunk(trailers: &trailers), Array("first\n".utf8), "[\(mode)]")
                    XCTAssertEqual(gate.arrived, 1, "[\(mode)]")
                    gate.open()
                    var rest: [UInt8] = []
                    while let chunk = try c.readChunk(trailers: &trailers) { rest += chunk }
                    XCTAssertEqual(String(decoding: rest, as: UTF8.self), "chunk 1\nchunk 2\nchunk 3\nchunk 4\n", "[\(mode)]")
                    XCTAssertEqual(trailers.first { $0.name.lowercased() == "x-chunks" }?.value, "5", "[\(mode)] trailers: \(trailers)")
                    // Keep-alive after a streamed answer.
                    try c.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
                    gate.open()
                    XCTAssertEqual(try c.readResponse().bodyString, "first\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n", "[\(mode)]")
                }
            }
        }
    }

    func testLargeStreamedResponse() async throws {
        let pieces = 512, pieceSize = 32 << 10   // 16 MiB in 32 KiB writes: far above the high mark
        let payload = pattern(pieces * pieceSize)
        for mode in EngineMode.underTest {
            let router = Router(context: PeregrineRequestContext.self)
            router.get("/big") { _, _ in
                Response(status: .ok, headers: [.contentLength: "\(payload.count)"], body: ResponseBody { writer in
                    for i in 0..<pieces {
                        try await writer.write(ByteBuffer(bytes: payload[(i * pieceSize)..<((i + 1) * pieceSize)]))
                    }
                    try await writer.finish(nil)
                })
            }
            try await withServer(mode, router) { port in
                try await blocking {
                    let c = try TestConnection(port: port)
                    let r = try c.exchange("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
                    XCTAssertEqual(r.status, 200, "[\(mode)]")
                    XCTAssertEqual(r.header("Content-Length"), "\(payload.count)", "[\(mode)] the length the handler gave")
                    XCTAssertEqual(r.body.count, payload.count, "[\(mode)]")
                    XCTAssertTrue(r.body == payload, "[\(mode)] bytes differ")
                }
            }
        }
    }
}

extension TestConnection {
    /// Sends `bytes[from...]` until done or a send makes no progress for the
    /// socket's send timeout; returns the offset reached.
    func sendUntilStalled(_ bytes: [UInt8], from: Int) -> Int {
        var off = from
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, min(bytes.count - off, 1 << 20), Int32(MSG_NOSIGNAL)) }
            if n > 0 { off += n; continue }
            if n < 0 && errno == EINTR { continue }
            return off   // EAGAIN: the timeout passed without progress
        }
        return off
    }
}
