// Answering later: .offloaded handlers on the offload pool, .async handlers
// as tasks. On the event engines (epoll, libev, swift) the loop goes on
// serving while a handler works; answers are posted back to the connection's
// loop and leave in request order; an answer for a closed connection is
// dropped. The threaded engine runs such handlers inline on the connection's
// own thread (blocking is allowed there); the blocking engine runs them
// inline too, so it serves nobody else meanwhile (one client at a time).
import Foundation
import Peregrine
import HTTPTypes
import XCTest

final class OffloadTests: XCTestCase {
    /// `/hello` inline on the loop; anything else sleeps `?ms=N` on the pool.
    private let sleepApp = BuiltinApp.sleep.application(sleepMilliseconds: 300)

    private func isEvent(_ mode: EngineMode) -> Bool { mode.engine == .epoll || mode.engine == .libev || mode.engine == .swift }

    private func ms(since start: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6
    }

    /// While 4 clients wait on a slow offloaded handler, a client on another
    /// connection is answered at once. The 4 handlers are held at a gate
    /// until the other client has its answer.
    func testSlowHandlersDoNotDelayOtherClients() throws {
        try forEachEngine { mode in
            // blocking: one client at a time.
            guard isEvent(mode) || mode.engine == .threaded else { return }
            let gate = HandlerGate()
            try withServer(mode, gate.application, configure: { $0.offloadThreads = 4 }) { server in
                var slow: [TestSocket] = []
                for i in 0..<4 {
                    let s = try TestSocket(port: server.port)
                    try s.send("GET /slow\(i) HTTP/1.1\r\nHost: t\r\n\r\n")
                    slow.append(s)
                }
                XCTAssertTrue(gate.waitUntilStarted(4), "[\(mode)] the four slow handlers did not start")
                let start = DispatchTime.now()
                let r = try fetch(port: server.port, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                let took = ms(since: start)
                XCTAssertEqual(r.status, 200, "[\(mode)]")
                XCTAssertEqual(r.bodyString, "Hello, World!", "[\(mode)]")
                XCTAssertLessThan(took, 50, "[\(mode)] hello waited \(took) ms behind the slow handlers")
                XCTAssertEqual(gate.finishedHandlers, 0, "[\(mode)] the slow handlers were still running meanwhile")
                gate.open()
                for (i, s) in slow.enumerated() {
                    let a = try s.readResponse()
                    XCTAssertEqual(a.status, 200, "[\(mode)]")
                    XCTAssertEqual(a.bodyString, "gated /slow\(i)", "[\(mode)]")
                }
            }
        }
    }

    /// A request head that stalls while the server owes an offloaded answer
    /// and earlier output waits on the client: the head timer's 408 must not
    /// overtake the owed answer (it would pair with the wrong request). The
    /// answers arrive as big, late, then the 408 for the stalled head.
    func testNo408OvertakesAnOwedAnswer() throws {
        let bigSize = 16 << 20   // more than the kernel buffers hold: output stays queued
        let answered = DispatchSemaphore(value: 0)
        let app: Application = .offloaded({ _, responder in
            // The time passing is the subject: past the 1 s header deadline of
            // the next head, even on the coarse clock's late side (1 + 2 s).
            usleep(3_500_000)
            responder.send(body: "late")
            answered.signal()
        }, inline: { request, response in
            guard request.targetString == "/big" else { return false }
            response.begin(status: 200)
            response.header("Content-Length", String(bigSize))
            let piece = [UInt8](repeating: UInt8(ascii: "b"), count: 65536)
            piece.withUnsafeBytes { p in for _ in 0..<(bigSize / piece.count) { response.write(p) } }
            response.end()
            return true
        })
        try forEachEngine { mode in
            guard isEvent(mode) else { return }   // threaded and blocking run the handler inline: nothing is read meanwhile
            try withServer(mode, app, configure: { $0.headerTimeout = 1; $0.maxOutputPerConnection = 64 << 20 }) { server in
                let s = try TestSocket(port: server.port)
                try s.send("GET /big HTTP/1.1\r\nHost: t\r\n\r\nGET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /next HTTP/1.1\r\nHo")
                // Not reading: the owed answer completes while the big one is still queued.
                XCTAssertEqual(answered.wait(timeout: .now() + 15), .success, "[\(mode)] the slow handler did not answer")
                let big = try s.readResponse()
                XCTAssertEqual(big.body.count, bigSize, "[\(mode)]")
                let late = try s.readResponse()
                XCTAssertEqual(late.status, 200, "[\(mode)] a 408 overtook the owed answer: \(late)")
                XCTAssertEqual(late.bodyString, "late", "[\(mode)]")
                let timedOut = try s.readResponse()
                XCTAssertEqual(timedOut.status, 408, "[\(mode)] the stalled head is timed out after the owed answer: \(timedOut)")
            }
        }
    }

    /// Graceful shutdown while an offloaded answer is owed: the connection is
    /// work in flight, not idle, so its answer still arrives (with
    /// `Connection: close`) before the server lets it go.
    func testShutdownWaitsForOwedAnswers() throws {
        try forEachEngine { mode in
            let gate = HandlerGate()
            let server = try startServer(mode, gate.application)
            let s = try TestSocket(port: server.port)
            try s.send("GET /owed HTTP/1.1\r\nHost: t\r\n\r\n")
            XCTAssertTrue(gate.waitUntilStarted(1), "[\(mode)] the handler did not start")
            let start = DispatchTime.now()
            let shutdown = TestThread { server.shutdown(deadline: .seconds(5)) }
            // The drain has begun (the listener is closed) while the answer is owed.
            XCTAssertTrue(waitUntil { connectionRefused(port: server.port) }, "[\(mode)] shutdown did not stop accepting")
            XCTAssertEqual(gate.finishedHandlers, 0, "[\(mode)] answered before the drain began")
            gate.open()
            let r = try s.readResponse()
            XCTAssertEqual(r.bodyString, "gated /owed", "[\(mode)] the owed answer was lost in the drain: \(r)")
            XCTAssertEqual(r.header("Connection")?.lowercased(), "close", "[\(mode)] answered during a drain")
            XCTAssertEqual(try s.expectClose(), [], "[\(mode)]")
            XCTAssertTrue(shutdown.join(timeout: .seconds(5)), "[\(mode)] shutdown did not return")
            XCTAssertLessThan(ms(since: start), 3000, "[\(mode)] shutdown waited for its deadline instead of the answer")
        }
    }

    /// Pipelined: a slow request, then a fast one, then one answered inline:
    /// the answers arrive in request order, and the slow and the fast ran
    /// side by side (event engines).
    func testPipelinedAnswersStayInOrder() throws {
        try forEachEngine { mode in
            guard mode.keepsAlive else { return }
            try withServer(mode, sleepApp) { server in
                let s = try TestSocket(port: server.port)
                let start = DispatchTime.now()
                try s.send("GET /?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n"
                           + "GET /?ms=100 HTTP/1.1\r\nHost: t\r\n\r\n"
                           + "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
                           + "HEAD /?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n")
                let first = try s.readResponse()
                let second = try s.readResponse()
                let third = try s.readResponse()
                let fourth = try s.readResponse(expectBody: false)
                let took = ms(since: start)
                XCTAssertEqual(first.bodyString, "slept 300 ms", "[\(mode)]")
                XCTAssertEqual(second.bodyString, "slept 100 ms", "[\(mode)]")
                XCTAssertEqual(third.bodyString, "Hello, World!", "[\(mode)]")
                XCTAssertEqual(fourth.status, 200, "[\(mode)]")
                XCTAssertEqual(fourth.header("Content-Length"), "10", "[\(mode)] HEAD keeps the length of the body it does not get")
                if isEvent(mode) {
                    XCTAssertLessThan(took, 390, "[\(mode)] the fast request did not run beside the slow one")
                }
                // The connection goes on serving after the deferred answers.
                try s.send("GET /?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n")
                XCTAssertEqual(try s.readResponse().bodyString, "slept 1 ms", "[\(mode)]")
            }
        }
    }

    /// 200 pipelined requests on one connection, finishing out of order on
    /// the pool: more than the 64 answers a connection may owe, so reading
    /// pauses and resumes; every answer comes back, in order.
    func testDeepPipelineOfDeferredAnswers() throws {
        let app: Application = .offloaded({ request, responder in
            let i = Int(request.query ?? "0") ?? 0
            usleep(UInt32((i * 7) % 5) * 300)   // later requests often finish first
            responder.send(body: request.target)
        }, inline: { request, response in
            // Every fifth answered inline, held behind the deferred ones.
            let target = request.targetString
            guard let q = target.split(separator: "?").last, let i = Int(q), i % 5 == 4 else { return false }
            response.send(body: target)
            return true
        })
        try forEachEngine { mode in
            guard mode.keepsAlive else { return }
            try withServer(mode, app) { server in
                let s = try TestSocket(port: server.port)
                var wire = ""
                for i in 0..<200 { wire += "GET /?\(i) HTTP/1.1\r\nHost: t\r\n\r\n" }
                try s.send(wire)
                var wrong = 0
                for i in 0..<200 {
                    let r = try s.readResponse()
                    if r.bodyString != "/?\(i)" {
                        wrong += 1
                        if wrong < 4 { XCTFail("[\(mode)] answer \(i): \(r)") }
                    }
                }
                XCTAssertEqual(wrong, 0, "[\(mode)]")
                XCTAssertTrue(s.looksOpen, "[\(mode)]")
            }
        }
    }

    /// Clients that close (or reset) before their answers are ready: the late
    /// answers are no-ops (they land on no other connection, not even one that
    /// reuses the descriptor) and the server goes on serving. A late answer kept
    /// instead of freed is a leak only LeakSanitizer sees (`make test-asan`
    /// runs with detect_leaks=0).
    func testClientGoneBeforeAnswer() throws {
        try forEachEngine { mode in
            let gate = HandlerGate()
            let clients = 6
            // A worker per held handler (the default pool of 4 would queue the rest).
            try withServer(mode, gate.application, configure: { $0.offloadThreads = clients }) { server in
                var gone: [ConnectionEnds] = []
                for i in 0..<clients {
                    let s = try TestSocket(port: server.port)
                    // Pipelined behind it, an inline answer the server must hold, then drop.
                    let pipelined = mode.keepsAlive ? "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n" : ""
                    try s.send("GET /late\(i) HTTP/1.1\r\nHost: t\r\n\r\n" + pipelined)
                    XCTAssertTrue(gate.waitUntilStarted(i + 1), "[\(mode)] handler \(i) did not start")
                    if let ends = s.ends { gone.append(ends) }
                    if i % 2 == 0 { s.close() } else { s.reset() }
                    if !mode.servesConcurrently {
                        // One client at a time: its handler must end before the next is served.
                        gate.open(1)
                        XCTAssertTrue(gate.waitUntilFinished(i + 1), "[\(mode)] handler \(i) did not finish")
                    }
                }
                if isEvent(mode) {
                    // A reset is noticed while the answer is owed: the loop lets
                    // the connection go and its descriptor is free for reuse.
                    // (A FIN alone is a half-close: the client may still want
                    // the answer, so the server may hold that one until then.)
                    for (i, ends) in gone.enumerated() where i % 2 == 1 {
                        XCTAssertTrue(waitUntil { ends.serverClosed },
                                      "[\(mode)] the server kept reset client \(i)'s connection while its answer was owed")
                    }
                }
                // New keep-alive connections, likely on the descriptors just freed.
                let others = try (0..<(mode.servesConcurrently ? clients : 0)).map { _ in try TestSocket(port: server.port) }
                for (i, o) in others.enumerated() {
                    try o.send("GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
                    XCTAssertEqual(try o.readResponse().bodyString, "Hello, World!", "[\(mode)] new connection \(i)")
                }
                gate.open()
                XCTAssertTrue(gate.waitUntilFinished(clients), "[\(mode)] the late handlers did not finish")
                for (i, ends) in gone.enumerated() {
                    XCTAssertTrue(waitUntil { ends.serverClosed },
                                  "[\(mode)] the server never let client \(i)'s connection go after its late answer")
                }
                // A late answer that went astray would be read here instead of the
                // connection's own answer, or arrive on it unasked.
                for (i, o) in others.enumerated() {
                    try o.send("GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
                    let r = try o.readResponse()
                    XCTAssertEqual(r.bodyString, "Hello, World!", "[\(mode)] a late answer reached new connection \(i): \(r)")
                    XCTAssertFalse(o.waitReadable(timeout: .milliseconds(100)),
                                   "[\(mode)] unasked bytes on new connection \(i): \(o.pending.count) buffered")
                }
                let r = try fetch(port: server.port, "GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(r.bodyString, "gated /after", "[\(mode)]")
                let h = try fetch(port: server.port, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(h.bodyString, "Hello, World!", "[\(mode)]")
            }
        }
    }

    /// The server stops while answers are outstanding: stop() closes the
    /// connections without waiting for the handlers, the pool finishes its
    /// running jobs, and their late answers are dropped (nothing is written
    /// after stop).
    func testStopWithAnswersOutstanding() throws {
        try forEachEngine { mode in
            guard mode.servesConcurrently else { return }
            let gate = HandlerGate()
            let server = try startServer(mode, gate.application)
            var sockets: [TestSocket] = []
            for i in 0..<3 {
                let s = try TestSocket(port: server.port)
                try s.send("GET /owed\(i) HTTP/1.1\r\nHost: t\r\n\r\n")
                sockets.append(s)
            }
            XCTAssertTrue(gate.waitUntilStarted(3), "[\(mode)] the three handlers did not start")
            let stopping = TestThread { server.stop() }
            for (i, s) in sockets.enumerated() {
                XCTAssertTrue(s.serverCloses(within: .seconds(5)),
                              "[\(mode)] connection \(i) still open while stop() waits on its handler")
            }
            XCTAssertEqual(gate.finishedHandlers, 0, "[\(mode)] the handlers were held at the gate meanwhile")
            gate.open()
            XCTAssertTrue(stopping.join(timeout: .seconds(10)), "[\(mode)] stop() did not return once the handlers finished")
            XCTAssertEqual(gate.finishedHandlers, 3, "[\(mode)] stop() returned before the pool finished its running jobs")
            for (i, s) in sockets.enumerated() {
                let after = (try? s.readUntilEOF()) ?? []
                XCTAssertTrue(after.isEmpty, "[\(mode)] connection \(i) got \(after.count) bytes after stop: \(String(decoding: after, as: UTF8.self).debugDescription)")
            }
        }
    }

    /// Pool and queue full: the next request is answered 503 at once, the
    /// others are served when their turn comes.
    func testQueueFullAnswers503() throws {
        try forEachEngine { mode in
            guard isEvent(mode) else { return }   // the others have no pool
            let gate = HandlerGate()
            try withServer(mode, gate.application, configure: { $0.offloadThreads = 1; $0.offloadQueue = 1 }) { server in
                let a = try TestSocket(port: server.port)
                try a.send("GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
                XCTAssertTrue(gate.waitUntilStarted(1), "[\(mode)] a is not on the worker")
                let b = try TestSocket(port: server.port)
                try b.send("GET /b HTTP/1.1\r\nHost: t\r\n\r\n")
                XCTAssertTrue(b.waitUntilServerHasRead(), "[\(mode)] b was not taken (queued)")
                let start = DispatchTime.now()
                let c = try fetch(port: server.port, "GET /c HTTP/1.1\r\nHost: t\r\n\r\n")
                XCTAssertEqual(c.status, 503, "[\(mode)]")
                XCTAssertEqual(c.header("Retry-After"), "1", "[\(mode)]")
                XCTAssertLessThan(ms(since: start), 100, "[\(mode)] 503 should come at once")
                XCTAssertEqual(gate.started, 1, "[\(mode)] b ran before its turn")
                gate.open()
                XCTAssertEqual(try a.readResponse().bodyString, "gated /a", "[\(mode)]")
                XCTAssertEqual(try b.readResponse().bodyString, "gated /b", "[\(mode)]")
            }
        }
    }

    /// `.async` handlers: answers from tasks, in request order; a handler
    /// that forgets its responder gets a 500 instead of a hung connection.
    func testAsyncHandlersAndForgottenResponder() throws {
        let app: Application = .async { request, _, writer in
            let path = request.path ?? ""
            let ms = Int(path.split(separator: "=").last ?? "0") ?? 0
            try? await Task.sleep(nanoseconds: UInt64(ms) * 1_000_000)   // the subject: a slow async handler
            var head = HTTPResponse(status: .ok)
            head.headerFields[HTTPField.Name("X-Target")!] = path
            try await writer.respond(head, body: "async \(ms)")
        }
        try forEachEngine { mode in
            guard mode.keepsAlive else { return }
            try withServer(mode, app) { server in
                let s = try TestSocket(port: server.port)
                try s.send("GET /?ms=200 HTTP/1.1\r\nHost: t\r\n\r\nGET /?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n")
                let first = try s.readResponse()
                let second = try s.readResponse()
                XCTAssertEqual(first.bodyString, "async 200", "[\(mode)]")
                XCTAssertEqual(first.header("X-Target"), "/?ms=200", "[\(mode)]")
                XCTAssertEqual(second.bodyString, "async 1", "[\(mode)]")
            }
        }
        let forgetful: Application = .offloaded({ _, _ in })
        try forEachEngine { mode in
            guard isEvent(mode) || mode.engine == .threaded else { return }
            try withServer(mode, forgetful) { server in
                let r = try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(r.status, 500, "[\(mode)]")
            }
        }
    }
}
