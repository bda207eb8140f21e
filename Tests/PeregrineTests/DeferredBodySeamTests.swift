// The public seam for deferring the answer to a streamed body, on every
// event engine: the head handler of a `.streaming` application calls
// `Response.deferAnswer()` and returns a consumer; the body streams while
// the answer is owed (the C engines: prg_defer then prg_body_stream in
// on_head; the Swift engine: deferAnswer in the head). The engine-level
// cases are in DeferredBodyTests (Swift engine) and test_defer_body.c.
import Foundation
import Peregrine
import XCTest

final class DeferredBodySeamTests: XCTestCase {
    /// Modes that can defer (the blocking engines answer inline).
    static var modes: [EngineMode] { EngineMode.all.filter { $0.engine != .blocking && $0.engine != .threaded } }

    /// /hold: deferred in the head; the test answers. /echo: deferred,
    /// streams the body back as it arrives (pausing it while the stream
    /// says wait).
    static func app(_ handles: Box<[any DeferredAnswerEngine]>, _ ends: Box<[BodyEnd]>) -> Application {
        .streaming(head: { request, response in
            guard let d = response.deferAnswer() else {
                response.send(status: 500, body: "no defer\n")
                return nil
            }
            if request.targetString == "/echo" {
                _ = d.streamHead(status: 200)
                let consumer = BodyConsumer(chunk: { bytes, consumer in
                    if d.streamWrite(bytes) == 1 { _ = consumer.pause() }
                    return bytes.count
                }, end: { how, _ in
                    d.streamOnWritable(nil)
                    if how == .complete { _ = d.streamEnd() }
                    ends.append(how)
                })
                d.streamOnWritable { _ = consumer.resume() }   // the loop's thread
                return consumer
            }
            handles.append(d)
            return BodyConsumer(chunk: { bytes, _ in bytes.count }, end: { how, _ in ends.append(how) })
        }, request: { _, response in
            response.send(status: 200, body: "now")
        })
    }

    func testDeferredInTheHeadAnsweredAfterTheBody() throws {
        for mode in Self.modes {
            let handles = Box<[any DeferredAnswerEngine]>([]), ends = Box<[BodyEnd]>([])
            try withServer(mode, Self.app(handles, ends)) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
                XCTAssertTrue(waitUntil { ends.value.count == 1 }, "[\(mode)] the body streamed while the answer is owed")
                XCTAssertEqual(ends.value.first, .complete, "[\(mode)]")
                XCTAssertFalse(s.waitReadable(timeout: .milliseconds(200)), "[\(mode)] no 500 at the body's end")
                let d = try XCTUnwrap(handles.value.first, "[\(mode)]")
                XCTAssertTrue(d.complete(OffloadAnswer(status: 200, body: "got it")), "[\(mode)]")
                let r = try s.readResponse()
                XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "got it", "[\(mode)]")
                XCTAssertNil(r.header("Connection"), "[\(mode)] keeps the connection")
                try s.send("GET /now HTTP/1.1\r\nHost: t\r\n\r\n")
                XCTAssertEqual(String(decoding: try s.readResponse().body, as: UTF8.self), "now", "[\(mode)] keep-alive")
            }
        }
    }

    func testEchoOfOneMiB() throws {
        let size = 1 << 20
        let body = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ ($0 >> 10)) }
        for mode in Self.modes {
            let handles = Box<[any DeferredAnswerEngine]>([]), ends = Box<[BodyEnd]>([])
            try withServer(mode, Self.app(handles, ends)) { server in
                let s = try TestSocket(port: server.port)
                let sender = TestThread {
                    try? s.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: \(size)\r\n\r\n")
                    try? s.send(body)
                }
                let r = try s.readResponse()
                XCTAssertTrue(sender.join(), "[\(mode)]")
                XCTAssertEqual(r.status, 200, "[\(mode)]")
                XCTAssertEqual(r.body.count, size, "[\(mode)] every byte echoed")
                XCTAssertTrue(r.body == body, "[\(mode)] in order")
                XCTAssertTrue(waitUntil { ends.value == [.complete] }, "[\(mode)]")
            }
        }
    }
}

/// A value shared between a handler and the test thread.
final class Box<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var v: T
    init(_ v: T) { self.v = v }
    var value: T { lock.lock(); defer { lock.unlock() }; return v }
    func append<E>(_ e: E) where T == [E] { lock.lock(); v.append(e); lock.unlock() }
}
