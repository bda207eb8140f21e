// Answers given over time under the access log (`logRequests`) and metrics
// (`metricsFactory`) on every engine: an offloaded handler's stream, an
// inline `.http` handler that defers its answer and streams it from another
// thread (the stream app's way), an async handler writing in parts. Each
// answer is recorded once, when complete, with the status and bytes sent.
import Foundation
import HTTPTypes
import MetricsTestKit
import Peregrine
import PeregrineCore
import XCTest

final class WrappedStreamTests: XCTestCase {
    private static let chunks = ["one\n", "two\n", "three\n"]
    private static let body = chunks.joined()

    /// Writes the three chunks and ends; for `/leave`, writes until the
    /// client is gone (bounded, 10 s) after signalling `headed`.
    private static func produce(_ s: ResponseStream, path: Substring, headed: DispatchSemaphore) {
        s.head(status: 200, headers: [("Content-Type", "text/plain")])
        if path == "/leave" {
            s.write("first")
            headed.signal()
            let chunk = [UInt8](repeating: 0x61, count: 1024)
            let deadline = DispatchTime.now() + 10
            while DispatchTime.now() < deadline && s.write(chunk).isAccepted {
                usleep(1000)   // a producer's pace, not synchronisation
            }
            return   // dropped without end: the client left
        }
        for chunk in chunks { s.write(chunk) }
        s.end()
    }

    /// What each case serves, by kind: `/three` streams three chunks,
    /// `/leave` streams until the client leaves. `released` gets an entry
    /// once the handler dropped its stream.
    private static func application(_ kind: String, headed: DispatchSemaphore, released: LockedList<String>) -> Application {
        switch kind {
        case "offloaded":
            return .offloaded { request, responder in
                do {
                    guard let s = try? responder.stream() else { responder.send(status: 501, body: "no stream"); return }
                    produce(s, path: request.path, headed: headed)
                }
                released.append(request.target)
            }
        case "inline":
            return .http { request, response in
                let path = Substring(request.targetString)
                guard let engine = response.deferAnswer() else {
                    response.send(status: 503, contentType: "text/plain", body: "not deferred")
                    return
                }
                let s = ResponseStream(engine: engine)
                let t = Thread {
                    produce(s, path: path, headed: headed)
                    released.append(String(path))   // `s` is not used after this thread
                }
                t.start()
            }
        default:
            return .async { request, _, writer in
                try await writer.writeHead(HTTPResponse(status: .ok, headerFields: [.contentType: "text/plain"]))
                for chunk in chunks { try await writer.write(chunk) }
                try await writer.finish()
                released.append(request.path ?? "")
            }
        }
    }

    /// Serves `kind` in `mode` under the access log and a test metrics
    /// backend, runs `client`, waits (bounded) until the handler dropped its
    /// stream and a line was logged, stops the server (nothing more can be
    /// reported), then checks: one access line with status 200, one
    /// request counted and one duration sample (GET, 200). Returns the line.
    private func observeOnce(_ kind: String, _ mode: EngineMode, headed: DispatchSemaphore = DispatchSemaphore(value: 0),
                             _ client: (Server) throws -> Void) throws -> CollectingLogHandler.Event? {
        let log = CollectingLogHandler()
        let metrics = TestMetrics()
        let released = LockedList<String>()
        func accessLines() -> [CollectingLogHandler.Event] { log.events.all.filter { $0.metadata["event"] == "access" } }
        try withServer(mode, Self.application(kind, headed: headed, released: released), configure: { c in
            c.logRequests = true
            c.logger = log.logger
            c.metricsFactory = metrics
        }) { server in
            try client(server)
            XCTAssertTrue(waitUntil(timeout: .seconds(15)) { !released.all.isEmpty && !accessLines().isEmpty },
                          "[\(kind) \(mode)] handler released: \(released.all), access lines: \(accessLines().map(\.message))")
        }
        let lines = accessLines()
        XCTAssertEqual(lines.count, 1, "[\(kind) \(mode)] \(lines.map(\.message))")
        XCTAssertEqual(lines.first?.metadata["status"], "200", "[\(kind) \(mode)] \(lines.map(\.message))")
        XCTAssertEqual(metrics.counterTotal(label: ServerMetrics.requestsLabel), 1, "[\(kind) \(mode)] requests counted")
        XCTAssertEqual(metrics.counterTotal(label: ServerMetrics.requestsLabel, dimensions: [("status", "200")]), 1,
                       "[\(kind) \(mode)]")
        XCTAssertEqual(try metrics.expectTimer(ServerMetrics.durationLabel, [("method", "GET"), ("status", "200")]).values.count, 1,
                       "[\(kind) \(mode)]")
        XCTAssertEqual(try metrics.expectMeter(ServerMetrics.activeRequestsLabel).lastValue, 0, "[\(kind) \(mode)] active requests")
        return lines.first
    }

    /// The client gets the three chunks; the line has the body's bytes.
    private func checkWholeStream(_ kind: String) throws {
        for mode in EngineMode.all {
            let line = try observeOnce(kind, mode) { server in
                let r = try fetch(port: server.port, "GET /three HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(r.status, 200, "[\(kind) \(mode)]")
                XCTAssertEqual(r.bodyString, Self.body, "[\(kind) \(mode)]")
            }
            XCTAssertEqual(line?.metadata["bytes"], String(Self.body.utf8.count), "[\(kind) \(mode)] \(line?.message ?? "no line")")
            XCTAssertEqual(line?.metadata["target"], "/three", "[\(kind) \(mode)] \(line?.message ?? "no line")")
        }
    }

    func testOffloadedStreamIsLoggedAndMeasuredOnceWhenItEnds() throws { try checkWholeStream("offloaded") }

    func testInlineDeferredStreamIsLoggedAndMeasuredOnceWhenItEnds() throws { try checkWholeStream("inline") }

    func testAsyncStreamIsLoggedAndMeasuredOnceWhenItEnds() throws { try checkWholeStream("async") }

    /// The client resets the connection mid-stream: recorded once, with
    /// the 200 that was sent and at least the bytes before the reset.
    private func checkClientLeaving(_ kind: String) throws {
        for mode in EngineMode.all {
            let headed = DispatchSemaphore(value: 0)
            let line = try observeOnce(kind, mode, headed: headed) { server in
                let socket = try TestSocket(port: server.port)
                try socket.send("GET /leave HTTP/1.1\r\nHost: t\r\n\r\n")
                XCTAssertEqual(headed.wait(timeout: .now() + 10), .success, "[\(kind) \(mode)] never headed")
                socket.reset()
            }
            XCTAssertGreaterThanOrEqual(Int(line?.metadata["bytes"] ?? "") ?? -1, 5, "[\(kind) \(mode)] \(line?.message ?? "no line")")
        }
    }

    func testOffloadedStreamWhoseClientLeftIsLoggedOnce() throws { try checkClientLeaving("offloaded") }

    func testInlineDeferredStreamWhoseClientLeftIsLoggedOnce() throws { try checkClientLeaving("inline") }
}
