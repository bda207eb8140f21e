// Async handlers (`Application.async`): swift-http-types heads, the body as
// an AsyncSequence, the ResponseWriter, on every engine.
import Foundation
import HTTPTypes
import Logging
import Peregrine
import ServiceLifecycle
import Synchronization
import XCTest

final class AsyncHandlerTests: XCTestCase {
    private func loops(_ mode: EngineMode) -> Bool { mode.engine == .epoll || mode.engine == .libev || mode.engine == .swift }

    /// The head arrives as an HTTPRequest: method, path, Host as the
    /// authority, the other fields in order; an answer given without
    /// suspending gets its Content-Length.
    func testRequestHeadIsAnHTTPRequestAndAnInlineAnswerHasItsLength() throws {
        let app: Application = .async { request, _, writer in
            var fields = HTTPFields()
            fields[.contentType] = "text/plain"
            fields[HTTPField.Name("X-Method")!] = request.method.rawValue
            fields[HTTPField.Name("X-Authority")!] = request.authority ?? "none"
            fields[HTTPField.Name("X-Scheme")!] = request.scheme ?? "none"
            let names = request.headerFields.map { $0.name.rawName }.joined(separator: ",")
            fields[HTTPField.Name("X-Fields")!] = names
            try await writer.respond(HTTPResponse(status: .created, headerFields: fields), body: request.path ?? "")
        }
        try forEachEngine { mode in
            try withServer(mode, app) { server in
                let r = try fetch(port: server.port,
                                  "PUT /a/b?c=d HTTP/1.1\r\nHost: example.test:8080\r\nX-One: 1\r\nAccept: */*\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(r.status, 201, "[\(mode)] \(r)")
                XCTAssertEqual(r.bodyString, "/a/b?c=d", "[\(mode)]")
                XCTAssertEqual(r.header("Content-Length"), "8", "[\(mode)]")
                XCTAssertEqual(r.header("X-Method"), "PUT", "[\(mode)]")
                XCTAssertEqual(r.header("X-Authority"), "example.test:8080", "[\(mode)]")
                XCTAssertEqual(r.header("X-Scheme"), "http", "[\(mode)]")
                XCTAssertEqual(r.header("X-Fields"), "X-One,Accept,Connection", "[\(mode)]")
            }
        }
    }

    /// Heads made once and shared by every answer, heads made per request,
    /// and a shared head changed between requests each answer as given, in
    /// any order on one kept-alive connection (the loop remembers the last
    /// head and what it read from it, and reuses writers answered inline);
    /// a writer a handler keeps after it returned (strongly or weakly) still
    /// tells its own status: it never serves another request.
    func testSharedChangedAndKeptHeadsAndWritersAnswerAsGiven() throws {
        let plain = HTTPResponse(status: .ok, headerFields: [.contentType: "text/plain"])
        let json = HTTPResponse(status: .created, headerFields: [.contentType: "application/json"])
        let changing = Mutex(HTTPResponse(status: .accepted))
        let kept = LockedList<ResponseWriter>()
        let weaklyKept = LockedList<WeakWriter>()
        let app: Application = .async { request, _, writer in
            switch request.path ?? "" {
            case "/plain": try await writer.respond(plain, body: "p")
            case "/json": try await writer.respond(json, body: "{}")
            case "/changing":
                let head = changing.withLock { h -> HTTPResponse in
                    let now = h
                    h.status = h.status.code == 202 ? .nonAuthoritativeInformation : .accepted
                    h.headerFields[.contentType] = h.status.code == 202 ? "text/a" : "text/b"
                    return now
                }
                try await writer.respond(head, body: "c")
            case "/weak":
                weaklyKept.append(WeakWriter(writer))
                try await writer.respond(HTTPResponse(status: .gone), body: "w")
            case "/fielded":
                try await writer.respond(HTTPResponse(status: .ok, headerFields: [.contentType: "text/x", .cacheControl: "no-store"]), body: "f")
            default:
                kept.append(writer)
                try await writer.respond(HTTPResponse(status: .notFound), body: "k")
            }
        }
        let order: [(String, Int, String?, String)] = [
            ("/plain", 200, "text/plain", "p"), ("/json", 201, "application/json", "{}"), ("/plain", 200, "text/plain", "p"),
            ("/changing", 202, nil, "c"), ("/changing", 203, "text/b", "c"), ("/changing", 202, "text/a", "c"),
            ("/kept", 404, nil, "k"), ("/fielded", 200, "text/x", "f"), ("/kept", 404, nil, "k"), ("/plain", 200, "text/plain", "p"),
            ("/weak", 410, nil, "w"), ("/plain", 200, "text/plain", "p"), ("/json", 201, "application/json", "{}"),
        ]
        try forEachEngine { mode in
            guard mode.keepsAlive else { return }
            changing.withLock { $0 = HTTPResponse(status: .accepted) }
            try withServer(mode, app) { server in
                let s = try TestSocket(port: server.port)
                for (path, status, type, body) in order {
                    try s.send("GET \(path) HTTP/1.1\r\nHost: t\r\n\r\n")
                    let r = try s.readResponse()
                    XCTAssertEqual(r.status, status, "[\(mode)] \(path)")
                    XCTAssertEqual(r.header("Content-Type"), type, "[\(mode)] \(path)")
                    XCTAssertEqual(r.bodyString, body, "[\(mode)] \(path)")
                    XCTAssertEqual(r.header("Content-Length"), String(body.utf8.count), "[\(mode)] \(path)")
                }
            }
        }
        XCTAssertFalse(kept.all.isEmpty)
        XCTAssertEqual(kept.all.map { $0.status }, Array(repeating: Int?(404), count: kept.all.count), "a kept writer's status")
        XCTAssertFalse(weaklyKept.all.isEmpty)
        for box in weaklyKept.all {
            if let writer = box.writer { XCTAssertEqual(writer.status, 410, "a weakly kept writer served another request") }
        }
    }

    /// What an app holds is let go once its server stopped, for every kind
    /// of app: no loop, pool, parked task or reused writer (which holds the
    /// handler) outlives the server.
    func testStoppedServerLetsGoOfItsApp() throws {
        let kinds: [(String, @Sendable (AppState) -> Application)] = [
            ("http", { state in .http { _, response in response.send(status: 200, contentType: "text/plain", body: state.greeting) } }),
            ("offloaded", { state in .offloaded { _, responder in responder.send(body: state.greeting) } }),
            ("async", { state in .async { _, _, writer in try await writer.respond(HTTPResponse(status: .ok), body: state.greeting) } }),
            ("async, suspending", { state in .async { _, _, writer in
                try await Task.sleep(for: .milliseconds(1))
                try await writer.respond(HTTPResponse(status: .ok), body: state.greeting)
            } }),
        ]
        try forEachEngine { mode in
            for (kind, make) in kinds {
                let watch = WeakBox()
                try serveThenStop(mode, watch, make)
                // Engines without a loop run async handlers on the global
                // executor: the task that wrote the last answer may still be
                // returning when stop() does. Bounded: a leak never ends.
                let until = ContinuousClock.now + .seconds(2)
                while watch.object != nil && ContinuousClock.now < until { usleep(1000) }
                XCTAssertNil(watch.object, "[\(mode)] \(kind): the app's state outlived its stopped server")
            }
        }
    }

    /// Serves three requests with an app that holds a fresh object, stops
    /// the server, and lets go of everything it made (`watch` keeps the
    /// object weakly).
    private func serveThenStop(_ mode: EngineMode, _ watch: WeakBox, _ make: (AppState) -> Application) throws {
        let state = AppState()
        watch.object = state
        try withServer(mode, make(state)) { server in
            for _ in 0..<3 {
                let r = try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(r.bodyString, "hi", "[\(mode)]")
            }
        }
    }

    final class AppState: Sendable { let greeting = "hi" }
    final class WeakBox: @unchecked Sendable { weak var object: AppState? }

    /// A weak reference a handler keeps to its writer.
    final class WeakWriter: @unchecked Sendable {
        weak var writer: ResponseWriter?
        init(_ writer: ResponseWriter) { self.writer = writer }
    }

    /// A handler that awaits other work is answered later, in request order
    /// with the requests pipelined behind it, on a kept-alive connection.
    func testSuspendedHandlersAnswerInRequestOrder() throws {
        let app: Application = .async { request, _, writer in
            let path = request.path ?? ""
            if path == "/slow" { try await Task.sleep(for: .milliseconds(150)) }
            try await writer.respond(HTTPResponse(status: .ok), body: "answer \(path)")
        }
        try forEachEngine { mode in
            guard mode.keepsAlive else { return }
            try withServer(mode, app) { server in
                let s = try TestSocket(port: server.port)
                try s.send("GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
                let first = try s.readResponse()
                let second = try s.readResponse()
                XCTAssertEqual(first.bodyString, "answer /slow", "[\(mode)]")
                XCTAssertEqual(first.header("Content-Length"), "12", "[\(mode)] a one-shot answer after a pause keeps its length")
                XCTAssertEqual(second.bodyString, "answer /fast", "[\(mode)]")
                try s.send("GET /again HTTP/1.1\r\nHost: t\r\n\r\n")
                XCTAssertEqual(try s.readResponse().bodyString, "answer /again", "[\(mode)] keep-alive after a deferred answer")
            }
        }
    }

    /// On the engines with loops a handler runs on the loop thread and
    /// resumes there after an await: no thread hop.
    func testHandlerResumesOnTheLoopThread() throws {
        let threads = LockedList<String>()
        let app: Application = .async { _, _, writer in
            let before = pthread_self()
            try await Task.sleep(for: .milliseconds(5))
            let after = pthread_self()
            threads.append(pthread_equal(before, after) != 0 ? "same" : "moved")
            try await writer.respond(HTTPResponse(status: .ok), body: "ok")
        }
        let modes = EngineMode.all.filter(loops)
        // Blocking and threaded run a handler on its connection's thread, no loop to resume on.
        if modes.isEmpty { throw XCTSkip("no event-loop engine (epoll, libev, swift) in PEREGRINE_TEST_ENGINES") }
        for mode in modes {
            try withServer(mode, app) { server in
                for _ in 0..<5 {
                    let r = try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    XCTAssertEqual(r.bodyString, "ok", "[\(mode)]")
                }
            }
        }
        XCTAssertFalse(threads.all.isEmpty)
        XCTAssertEqual(threads.all.filter { $0 != "same" }.count, 0, "a handler resumed on another thread")
    }

    /// Thrown before the head: 500. Thrown after it: the connection closes
    /// after what was written (the client sees a truncated chunked body).
    /// Returning without an answer: 500.
    func testThrownErrorsAndMissingAnswers() throws {
        struct Boom: Error {}
        let app: Application = .async { request, _, writer in
            switch request.path {
            case "/throw": throw Boom()
            case "/throw-later":
                try await Task.sleep(for: .milliseconds(5))
                throw Boom()
            case "/nothing": return
            case "/after-head":
                try await writer.writeHead(HTTPResponse(status: .ok))
                try await writer.write(Array("partial".utf8))
                try await Task.sleep(for: .milliseconds(5))
                throw Boom()
            default:
                try await writer.respond(HTTPResponse(status: .ok), body: "fine")
            }
        }
        try forEachEngine { mode in
            try withServer(mode, app) { server in
                for path in ["/throw", "/throw-later", "/nothing"] {
                    let r = try fetch(port: server.port, "GET \(path) HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    XCTAssertEqual(r.status, 500, "[\(mode)] \(path)")
                }
                XCTAssertEqual(try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").bodyString, "fine")
                let s = try TestSocket(port: server.port)
                try s.send("GET /after-head HTTP/1.1\r\nHost: t\r\n\r\n")
                let raw = String(decoding: try s.readUntilEOF(), as: UTF8.self)
                XCTAssertTrue(raw.hasPrefix("HTTP/1.1 200"), "[\(mode)] \(raw)")
                XCTAssertTrue(raw.contains("partial"), "[\(mode)] \(raw)")
                XCTAssertFalse(raw.hasSuffix("0\r\n\r\n"), "[\(mode)] a truncated body must not look complete: \(raw)")
            }
        }
    }

    /// A streamed answer: many writes, chunked, with trailers.
    func testStreamedAnswerWithTrailers() throws {
        let app: Application = .async { _, _, writer in
            try await writer.writeHead(HTTPResponse(status: .ok, headerFields: [.contentType: "text/plain"]))
            for i in 0..<20 {
                try await writer.write("part \(i)\n")
                if i % 5 == 0 { await Task.yield() }
            }
            var trailers = HTTPFields()
            trailers[HTTPField.Name("X-Checksum")!] = "20"
            try await writer.finish(trailers: trailers)
        }
        let expected = (0..<20).map { "part \($0)\n" }.joined()
        try forEachEngine { mode in
            try withServer(mode, app) { server in
                let r = try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(r.status, 200, "[\(mode)]")
                XCTAssertEqual(r.bodyString, expected, "[\(mode)]")
                XCTAssertEqual(r.header("Transfer-Encoding"), "chunked", "[\(mode)]")
            }
        }
    }

    /// The writer suspends above the stream's high mark: with a client that
    /// reads nothing, the handler stops far short of the whole body; it all
    /// arrives once the client reads.
    func testWriterSuspendsAtTheHighWatermark() throws {
        let total = 32 << 20
        let chunk = [UInt8](repeating: UInt8(ascii: "x"), count: 64 << 10)
        let written = Atomic<Int>(0)
        let app: Application = .async { _, _, writer in
            try await writer.writeHead(HTTPResponse(status: .ok, headerFields: [.contentLength: String(total)]))
            while written.load(ordering: .relaxed) < total {
                try await writer.write(chunk)
                written.add(chunk.count, ordering: .relaxed)
            }
            try await writer.finish()
        }
        try forEachEngine { mode in
            written.store(0, ordering: .relaxed)
            try withServer(mode, app) { server in
                let s = try TestSocket(port: server.port)
                try s.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                // Wait until the handler stops making progress (it is suspended).
                var last = -1
                XCTAssertTrue(waitUntil(timeout: .seconds(10)) {
                    let now = written.load(ordering: .relaxed)
                    defer { last = now }
                    if now == last && now > 0 { usleep(100_000); return written.load(ordering: .relaxed) == now }
                    return false
                }, "[\(mode)] the writer never settled")
                let stalled = written.load(ordering: .relaxed)
                XCTAssertLessThan(stalled, 16 << 20, "[\(mode)] the writer did not wait for the client")
                let r = try s.readResponse()
                XCTAssertEqual(r.body.count, total, "[\(mode)]")
            }
        }
    }

    /// The client leaving cancels the handler's task.
    func testClientLeavingCancelsTheTask() throws {
        let cancelled = DispatchSemaphore(value: 0)
        let started = DispatchSemaphore(value: 0)
        let app: Application = .async { _, _, writer in
            started.signal()
            do {
                try await Task.sleep(for: .seconds(30))
            } catch is CancellationError {
                cancelled.signal()
                throw CancellationError()
            }
            try await writer.respond(HTTPResponse(status: .ok), body: "late")
        }
        try forEachEngine { mode in
            try withServer(mode, app) { server in
                for reset in [false, true] {   // a close (FIN) and a reset (RST)
                    let s = try TestSocket(port: server.port)
                    try s.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                    XCTAssertEqual(started.wait(timeout: .now() + 5), .success, "[\(mode)] handler did not start")
                    if reset { s.reset() } else { s.close() }
                    XCTAssertEqual(cancelled.wait(timeout: .now() + 5), .success, "[\(mode)] reset \(reset): the task was not cancelled")
                }
            }
        }
    }

    /// A body within --max-body is read through the AsyncSequence and echoed.
    func testBodyIsReadAsAnAsyncSequence() throws {
        let app: Application = .async { request, body, writer in
            let bytes = try await body.collect(upTo: 4 << 20)
            try await writer.respond(HTTPResponse(status: .ok), body: Array("\(request.method) \(bytes.count) ".utf8) + bytes.prefix(16))
        }
        let payload = (0..<(512 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try forEachEngine { mode in
            try withServer(mode, app, configure: { $0.limits.maxBody = 1 << 20 }) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: \(payload.count)\r\nConnection: close\r\n\r\n")
                try s.send(payload)
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)] \(r)")
                XCTAssertEqual(Array(r.body), Array("POST \(payload.count) ".utf8) + payload.prefix(16), "[\(mode)]")
            }
        }
    }

    /// At most `asyncLimit` handlers in flight per loop; `--app hello-async`
    /// answers through the same path.
    func testHelloAsyncBuiltinApp() throws {
        try forEachEngine { mode in
            try withServer(mode, BuiltinApp.helloAsync.application) { server in
                let r = try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(r.status, 200, "[\(mode)]")
                XCTAssertEqual(r.bodyString, "Hello, World!", "[\(mode)]")
                XCTAssertEqual(r.header("Content-Type"), "text/plain", "[\(mode)]")
            }
        }
    }

    /// --log: an async handler's line carries the client, the status and
    /// the body bytes it wrote.
    func testAccessLogCountsAnAsyncHandlersBytes() throws {
        let app: Application = .async { _, _, writer in
            try await Task.sleep(for: .milliseconds(2))
            try await writer.respond(HTTPResponse(status: .accepted), body: "twelve bytes")
        }
        try forEachEngine { mode in
            let log = CollectingLogHandler()
            try withServer(mode, app, configure: { $0.logger = log.logger; $0.logRequests = true }) { server in
                XCTAssertEqual(try fetch(port: server.port, "GET /q?a=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").status, 202)
                XCTAssertTrue(waitUntil { log.events.all.contains { $0.metadata["event"] == "access" } }, "[\(mode)] no access line")
                guard let access = log.events.all.first(where: { $0.metadata["event"] == "access" }) else { return }
                XCTAssertEqual(access.metadata["client"], "127.0.0.1", "[\(mode)]")
                XCTAssertEqual(access.metadata["target"], "/q?a=1", "[\(mode)]")
                XCTAssertEqual(access.metadata["status"], "202", "[\(mode)]")
                XCTAssertEqual(access.metadata["bytes"], "12", "[\(mode)]")
            }
        }
    }

    /// A body streams to the handler as it arrives and is echoed as it is
    /// read (both directions under backpressure): 8 MiB, beyond --max-body,
    /// on the engines with loops; the others buffer it (--max-body raised).
    func testStreamedBodyIsEchoedAsItArrives() throws {
        let app: Application = .async { _, body, writer in
            try await writer.writeHead(HTTPResponse(status: .ok, headerFields: [.contentType: "application/octet-stream"]))
            for try await chunk in body { try await writer.write(chunk) }
            try await writer.finish()
        }
        let payload = (0..<(8 << 20)).map { UInt8(truncatingIfNeeded: ($0 &* 2654435761) >> 13) }
        try forEachEngine { mode in
            try withServer(mode, app, configure: { c in
                if !self.loops(mode) { c.limits.maxBody = 16 << 20 } else { c.limits.maxBody = 1 << 20 }
            }) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: \(payload.count)\r\nConnection: close\r\n\r\n")
                let sent = DispatchSemaphore(value: 0)
                let failure = LockedList<String>()
                let sender = Thread {
                    do { try s.send(payload) } catch { failure.append("\(error)") }
                    sent.signal()
                }
                sender.start()
                let r = try s.readResponse()
                XCTAssertEqual(sent.wait(timeout: .now() + 30), .success, "[\(mode)] the upload did not finish")
                XCTAssertEqual(failure.all, [], "[\(mode)]")
                XCTAssertEqual(r.status, 200, "[\(mode)]")
                XCTAssertEqual(r.body.count, payload.count, "[\(mode)]")
                XCTAssertTrue(r.body == payload, "[\(mode)] the echo differs")
            }
        }
    }

    /// A client that leaves mid-upload ends the body with an error the
    /// handler sees, and its task is cancelled.
    func testClientLeavingMidUploadFailsTheBodyAndCancels() throws {
        let outcome = LockedList<String>()
        let reading = DispatchSemaphore(value: 0)
        let app: Application = .async { _, body, writer in
            var got = 0
            do {
                for try await chunk in body {
                    got += chunk.count
                    if got > 0 { reading.signal() }
                }
                outcome.append("complete")
            } catch let error as RequestBodyError {
                outcome.append("\(error)")
                throw error
            }
            try await writer.respond(HTTPResponse(status: .ok), body: "got \(got)")
        }
        try forEachEngine { mode in
            guard loops(mode) else { return }
            outcome.clear()
            try withServer(mode, app) { server in
                let s = try TestSocket(port: server.port)
                try s.send("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
                try s.send([UInt8](repeating: 7, count: 5000))
                XCTAssertEqual(reading.wait(timeout: .now() + 5), .success, "[\(mode)] the handler read nothing")
                s.reset()
                XCTAssertTrue(waitUntil { !outcome.all.isEmpty }, "[\(mode)] the body never ended")
                XCTAssertEqual(outcome.all.first, "request body ended early: client gone", "[\(mode)]")
            }
        }
    }

    /// Run by a ServiceGroup: a graceful shutdown with an async handler
    /// suspended in flight answers it, then run() returns and the port closes.
    func testServiceGroupShutdownAnswersAnAsyncHandlerInFlight() async throws {
        for mode in EngineMode.all {
            let entered = Atomic<Bool>(false)
            let release = Atomic<Bool>(false)
            let app: Application = .async { _, _, writer in
                entered.store(true, ordering: .releasing)
                while !release.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(2)) }
                try await writer.respond(HTTPResponse(status: .ok), body: "finished")
            }
            var c = Configuration()
            c.host = "127.0.0.1"
            c.port = 0
            c.shutdownDeadline = .seconds(30)
            mode.apply(to: &c)
            let log = CollectingLogHandler()
            c.logger = log.logger
            let server = Server(configuration: c, application: app)
            let group = ServiceGroup(services: [server], logger: log.logger)
            let running = Task { try await group.run() }
            XCTAssertTrue(waitUntil(timeout: .seconds(30)) { server.port > 0 }, "[\(mode)] the server did not start")
            let port = server.port
            let client = try TestSocket(port: port)
            try client.send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
            XCTAssertTrue(waitUntil(timeout: .seconds(30)) { entered.load(ordering: .acquiring) }, "[\(mode)] the handler never ran")
            await group.triggerGracefulShutdown()
            XCTAssertTrue(waitUntil(timeout: .seconds(30)) { log.events.all.contains { $0.message.hasPrefix("shutting down") } },
                          "[\(mode)] graceful shutdown did not reach the server")
            release.store(true, ordering: .releasing)
            let response = try client.readResponse()
            XCTAssertEqual(response.status, 200, "[\(mode)]")
            XCTAssertEqual(response.bodyString, "finished", "[\(mode)]")
            try await running.value
            XCTAssertThrowsError(try TestSocket(port: port), "[\(mode)] still accepting after run() returned")
        }
    }
}
