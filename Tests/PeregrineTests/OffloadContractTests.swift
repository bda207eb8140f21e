// The contract of answers given later, on every engine mode: an answer is
// taken once (a second is refused), an inline route that began an answer and
// then declined gets 500 without the handler running, an answer later than
// Configuration.handlerTimeout is replaced by 503 and refused when it comes,
// and .async handlers run at most Configuration.asyncLimit tasks at a time.
// Every engine defers these answers, so the timeout applies everywhere; the
// task limit is per event loop, and the blocking and threaded engines (no
// loop: handlers run on the global executor) are not bound by it.
import Foundation
import Peregrine
import HTTPTypes
import Synchronization
import XCTest

/// Lets async handlers wait until the test opens it.
private final class AsyncGate: @unchecked Sendable {
    // @unchecked: opened and waiters are guarded by lock.
    private let lock = NSLock()
    private var opened = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func wait() async {
        await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
            lock.lock()
            if opened {
                lock.unlock()
                k.resume()
            } else {
                waiters.append(k)
                lock.unlock()
            }
        }
    }

    func open() {
        lock.lock()
        opened = true
        let ready = waiters
        waiters = []
        lock.unlock()
        for k in ready { k.resume() }
    }
}

final class OffloadContractTests: XCTestCase {
    private func hasLoops(_ mode: EngineMode) -> Bool { mode.engine == .epoll || mode.engine == .libev || mode.engine == .swift }

    private func seconds(since start: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
    }

    /// handlerTimeout and asyncLimit out of range: start() refuses, naming
    /// the field, on every engine; the ends of the ranges start.
    func testHandlerTimeoutAndAsyncLimitAreValidated() throws {
        typealias Bounds = Configuration.Bounds
        let refusals: [(ConfigurationField, String, String, (inout Configuration) -> Void)] = [
            (.handlerTimeout, "-1", "0...86400 (seconds; 0 = off)", { $0.handlerTimeout = -1 }),
            (.handlerTimeout, "86401", "0...86400 (seconds; 0 = off)", { $0.handlerTimeout = 86_401 }),
            (.asyncLimit, "0", "1...1048576", { $0.asyncLimit = 0 }),
            (.asyncLimit, String(Int.max), "1...1048576", { $0.asyncLimit = Int.max }),
        ]
        try forEachEngine { mode in
            for (field, value, allowed, set) in refusals {
                var c = Configuration()
                c.host = "127.0.0.1"
                c.port = 0
                mode.apply(to: &c)
                set(&c)
                let server = Server(configuration: c, application: .async { _, _, writer in try await writer.respond(HTTPResponse(status: .ok), body: "x") })
                XCTAssertThrowsError(try server.start(), "[\(mode)] \(field) \(value)") { error in
                    XCTAssertEqual(error as? ConfigurationError,
                                   ConfigurationError(field: field, value: value, allowed: allowed), "[\(mode)]")
                }
            }
            for (timeout, limit) in [(Bounds.timeoutSeconds.lowerBound, Bounds.asyncLimit.lowerBound),
                                     (Bounds.timeoutSeconds.upperBound, Bounds.asyncLimit.upperBound)] {
                try withServer(mode, .async { _, _, writer in try await writer.respond(HTTPResponse(status: .ok), body: "ok") },
                               configure: { $0.handlerTimeout = timeout; $0.asyncLimit = limit }) { server in
                    let r = try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    XCTAssertEqual(r.bodyString, "ok", "[\(mode)] handlerTimeout \(timeout), asyncLimit \(limit)")
                }
            }
        }
    }

    /// A handler that answers twice: the first answer reaches the client,
    /// the second is refused (`send` returns false) and nothing of it is
    /// sent (the next request on the connection gets its own answer).
    func testSecondAnswerIsRefused() throws {
        try forEachEngine { mode in
            let results = LockedList<Bool>()
            let done = DispatchSemaphore(value: 0)
            let app: Application = .offloaded({ request, responder in
                let first = responder.send(body: "first \(request.target)")
                let second = responder.send(body: "second")
                results.append(first)
                results.append(second)
                done.signal()
            }, inline: nil)
            try withServer(mode, app) { server in
                let s = try TestSocket(port: server.port)
                let rounds = mode.keepsAlive ? 2 : 1
                for i in 0..<rounds {
                    try s.send("GET /\(i) HTTP/1.1\r\nHost: t\r\n\r\n")
                    let r = try s.readResponse()
                    XCTAssertEqual(r.status, 200, "[\(mode)]")
                    XCTAssertEqual(r.bodyString, "first /\(i)", "[\(mode)] a refused answer reached the client")
                    XCTAssertEqual(done.wait(timeout: .now() + 5), .success, "[\(mode)]")
                }
                XCTAssertEqual(results.all, Array(repeating: [true, false], count: rounds).flatMap { $0 }, "[\(mode)]")
            }
        }
    }

    /// An inline route that began an answer (head and some body, small or
    /// spanning several buffers) and then returned false: the client gets a
    /// 500 with Connection: close and none of the begun answer, and the
    /// offloaded handler does not run.
    func testInlineRouteThatBeganAndDeclinedGets500() throws {
        for bodySize in [5, 100_000] {
            try forEachEngine { mode in
                let handlerRuns = MaxBox()
                let app: Application = .offloaded({ _, responder in
                    handlerRuns.record(1)
                    responder.send(body: "handler")
                }, inline: { request, response in
                    guard request.targetString == "/declines" else { return false }
                    response.begin(status: 200)
                    response.header("X-Begun", "yes")
                    response.write(String(repeating: "p", count: bodySize))
                    return false
                })
                try withServer(mode, app) { server in
                    let r = try fetch(port: server.port, "GET /declines HTTP/1.1\r\nHost: t\r\n\r\n")
                    XCTAssertEqual(r.status, 500, "[\(mode)] \(bodySize): \(r)")
                    XCTAssertEqual(r.header("Connection")?.lowercased(), "close", "[\(mode)] \(bodySize)")
                    XCTAssertNil(r.header("X-Begun"), "[\(mode)] \(bodySize): the begun answer leaked")
                    XCTAssertFalse(r.bodyString.contains("p"), "[\(mode)] \(bodySize): the begun body leaked")
                    XCTAssertEqual(handlerRuns.max, 0, "[\(mode)] \(bodySize): the handler ran behind the route")
                    // The server goes on serving.
                    let ok = try fetch(port: server.port, "GET /other HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    XCTAssertEqual(ok.bodyString, "handler", "[\(mode)]")
                }
            }
        }
    }

    /// An answer later than handlerTimeout (1 s): the client gets 503 in its
    /// place within the timeout's second, the late answer is refused when it
    /// comes (`send` returns false) and the connection goes on with the next
    /// request's own answer (the blocking engine: the connection closes
    /// after the 503).
    func testLateAnswerGets503AndIsDropped() throws {
        try forEachEngine { mode in
            let release = DispatchSemaphore(value: 0)
            let sent = LockedList<Bool>()
            let sentSignal = DispatchSemaphore(value: 0)
            let app: Application = .offloaded({ request, responder in
                if request.target == "/slow" {
                    _ = release.wait(timeout: .now() + 10)   // the test saw the 503
                    sent.append(responder.send(body: "late"))
                    sentSignal.signal()
                } else {
                    responder.send(body: "fast")
                }
            }, inline: nil)
            try withServer(mode, app, configure: { $0.handlerTimeout = 1 }) { server in
                let s = try TestSocket(port: server.port)
                let start = DispatchTime.now()
                try s.send("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
                let r = try s.readResponse()
                let took = seconds(since: start)
                XCTAssertEqual(r.status, 503, "[\(mode)] \(r)")
                XCTAssertGreaterThanOrEqual(took, 0.9, "[\(mode)] 503 before the timeout")
                XCTAssertLessThan(took, 3.5, "[\(mode)] 503 long after the 1 s timeout")
                release.signal()
                XCTAssertEqual(sentSignal.wait(timeout: .now() + 10), .success, "[\(mode)]")
                XCTAssertEqual(sent.all, [false], "[\(mode)] what send said about the late answer")
                if mode.keepsAlive {
                    try s.send("GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
                    let next = try s.readResponse()
                    XCTAssertEqual(next.bodyString, "fast", "[\(mode)] the dropped answer went out after all")
                }
            }
        }
    }

    /// asyncLimit 2: two handlers run; two more requests wait for a slot
    /// (their handlers not started); a fifth gets 503 + Retry-After. Once
    /// the two running answer, the waiting ones run, never more than two at
    /// once, and answers keep request order. Threaded: no loop, the
    /// handlers run on the global executor and the limit does not apply
    /// (answers still keep request order). Blocking: one client at a time,
    /// so nothing to bound.
    func testAsyncHandlersBeyondTheLimitWaitThen503() throws {
        try forEachEngine { mode in
            guard mode.servesConcurrently else { return }
            let gate = AsyncGate()
            let started = DispatchSemaphore(value: 0)
            let concurrent = MaxBox()
            let running = Atomic<Int>(0)
            let app: Application = .async { request, _, writer in
                concurrent.record(running.add(1, ordering: .relaxed).newValue)
                started.signal()
                if request.path == "/wait" { await gate.wait() }
                running.subtract(1, ordering: .relaxed)
                try await writer.respond(HTTPResponse(status: .ok), body: "async \(request.path ?? "")")
            }
            try withServer(mode, app, configure: { $0.asyncLimit = 2; $0.threads = 1 }) { server in   // the limit is per loop
                var first: [TestSocket] = []
                for _ in 0..<2 {
                    let s = try TestSocket(port: server.port)
                    try s.send("GET /wait HTTP/1.1\r\nHost: t\r\n\r\n")
                    first.append(s)
                    XCTAssertEqual(started.wait(timeout: .now() + 5), .success, "[\(mode)] handler task did not start")
                }
                // Pipelined on one connection: parsed in one batch, in order.
                let more = try TestSocket(port: server.port)
                try more.send("GET /wait HTTP/1.1\r\nHost: t\r\n\r\nGET /wait HTTP/1.1\r\nHost: t\r\n\r\nGET /fifth HTTP/1.1\r\nHost: t\r\n\r\n")
                // The loop read them (and parsed them in the same call; the
                // gate's resumptions run on that loop, after it).
                XCTAssertTrue(more.waitUntilServerHasRead(), "[\(mode)]")
                if hasLoops(mode) {
                    XCTAssertEqual(concurrent.max, 2, "[\(mode)] a handler started beyond the limit")
                    gate.open()
                    for s in first { XCTAssertEqual(try s.readResponse().bodyString, "async /wait", "[\(mode)]") }
                    XCTAssertEqual(try more.readResponse().bodyString, "async /wait", "[\(mode)] waiting handler 1")
                    XCTAssertEqual(try more.readResponse().bodyString, "async /wait", "[\(mode)] waiting handler 2")
                    let fifth = try more.readResponse()
                    XCTAssertEqual(fifth.status, 503, "[\(mode)] \(fifth)")
                    XCTAssertEqual(fifth.header("Retry-After"), "1", "[\(mode)]")
                    XCTAssertEqual(concurrent.max, 2, "[\(mode)] more than the limit ran at once")
                } else {
                    gate.open()
                    for s in first { XCTAssertEqual(try s.readResponse().bodyString, "async /wait", "[\(mode)]") }
                    XCTAssertEqual(try more.readResponse().bodyString, "async /wait", "[\(mode)]")
                    XCTAssertEqual(try more.readResponse().bodyString, "async /wait", "[\(mode)]")
                    XCTAssertEqual(try more.readResponse().bodyString, "async /fifth", "[\(mode)]")
                }
                // Slots free again: served.
                let after = try fetch(port: server.port, "GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(after.bodyString, "async /after", "[\(mode)]")
            }
        }
    }
}
