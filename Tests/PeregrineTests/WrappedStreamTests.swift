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

    private func accessLines(_ log: CollectingLogHandler) -> [CollectingLogHandler.Event] {
        log.events.all.filter { $0.metadata["event"] == "access" }
    }

    /// Polls (bounded) until `condition` holds.
    private func eventually(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if condition() { return true }
            usleep(2_000)
        }
        return condition()
    }

    /// The client gets the three chunks; one access-log line (200, the
    /// body's bytes) and one duration sample (GET, 200) per answer.
    private func checkWholeStream(_ kind: String) throws {
        for mode in EngineMode.all {
            let log = CollectingLogHandler()
            let metrics = TestMetrics()
            let released = LockedList<String>()
            let app = Self.application(kind, headed: DispatchSemaphore(value: 0), released: released)
            try withServer(mode, app, configure: { c in
                c.logRequests = true
                c.logger = log.logger
                c.metricsFactory = metrics
            }) { server in
                let r = try fetch(port: server.port, "GET /three HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(r.status, 200, "[\(kind) \(mode)]")
                XCTAssertEqual(r.bodyString, Self.body, "[\(kind) \(mode)]")
                XCTAssertTrue(eventually(10) { !released.all.isEmpty && !accessLines(log).isEmpty },
                              "[\(kind) \(mode)] handler released: \(released.all), access lines: \(accessLines(log).map(\.message))")
            }
            // Stopped: nothing more can be reported.
            let lines = accessLines(log)
            XCTAssertEqual(lines.count, 1, "[\(kind) \(mode)] \(lines.map(\.message))")
            if let line = lines.first {
                XCTAssertEqual(line.metadata["status"], "200", "[\(kind) \(mode)] \(line.message)")
                XCTAssertEqual(line.metadata["bytes"], String(Self.body.utf8.count), "[\(kind) \(mode)] \(line.message)")
                XCTAssertEqual(line.metadata["target"], "/three", "[\(kind) \(mode)] \(line.message)")
            }
            XCTAssertEqual(metrics.counterTotal(label: ServerMetrics.requestsLabel), 1, "[\(kind) \(mode)] requests counted")
            XCTAssertEqual(metrics.counterTotal(label: ServerMetrics.requestsLabel, dimensions: [("status", "200")]), 1,
                           "[\(kind) \(mode)]")
            XCTAssertEqual(try metrics.expectTimer(ServerMetrics.durationLabel, [("method", "GET"), ("status", "200")]).values.count, 1,
                           "[\(kind) \(mode)]")
            XCTAssertEqual(try metrics.expectMeter(ServerMetrics.activeRequestsLabel).lastValue, 0, "[\(kind) \(mode)] active requests")
        }
    }

    func testOffloadedStreamIsLoggedAndMeasuredOnceWhenItEnds() throws { try checkWholeStream("offloaded") }

    func testInlineDeferredStreamIsLoggedAndMeasuredOnceWhenItEnds() throws { try checkWholeStream("inline") }

    func testAsyncStreamIsLoggedAndMeasuredOnceWhenItEnds() throws { try checkWholeStream("async") }

    /// The client resets the connection mid-stream: one line and one
    /// sample, with the 200 that was sent and at least the bytes before
    /// the reset; the server goes on serving.
    private func checkClientLeaving(_ kind: String) throws {
        for mode in EngineMode.all {
            let log = CollectingLogHandler()
            let metrics = TestMetrics()
            let released = LockedList<String>()
            let headed = DispatchSemaphore(value: 0)
            let app = Self.application(kind, headed: headed, released: released)
            try withServer(mode, app, configure: { c in
                c.logRequests = true
                c.logger = log.logger
                c.metricsFactory = metrics
            }) { server in
                let socket = try TestSocket(port: server.port)
                try socket.send("GET /leave HTTP/1.1\r\nHost: t\r\n\r\n")
                XCTAssertEqual(headed.wait(timeout: .now() + 10), .success, "[\(kind) \(mode)] never headed")
                socket.reset()
                XCTAssertTrue(eventually(15) { !released.all.isEmpty && !accessLines(log).isEmpty },
                              "[\(kind) \(mode)] handler released: \(released.all), access lines: \(accessLines(log).map(\.message))")
            }
            let lines = accessLines(log)
            XCTAssertEqual(lines.count, 1, "[\(kind) \(mode)] \(lines.map(\.message))")
            if let line = lines.first {
                XCTAssertEqual(line.metadata["status"], "200", "[\(kind) \(mode)] \(line.message)")
                XCTAssertGreaterThanOrEqual(Int(line.metadata["bytes"] ?? "") ?? -1, 5, "[\(kind) \(mode)] \(line.message)")
            }
            XCTAssertEqual(try metrics.expectTimer(ServerMetrics.durationLabel, [("method", "GET"), ("status", "200")]).values.count, 1,
                           "[\(kind) \(mode)]")
            XCTAssertEqual(metrics.counterTotal(label: ServerMetrics.requestsLabel), 1, "[\(kind) \(mode)] requests counted")
        }
    }

    func testOffloadedStreamWhoseClientLeftIsLoggedOnce() throws { try checkClientLeaving("offloaded") }

    func testInlineDeferredStreamWhoseClientLeftIsLoggedOnce() throws { try checkClientLeaving("inline") }
}
