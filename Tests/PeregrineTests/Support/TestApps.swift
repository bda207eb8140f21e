// Applications and server helpers the integration tests share.
import Foundation
import Peregrine
import Synchronization
import XCTest

/// A thread-safe maximum.
final class MaxBox: Sendable {
    private let value = Atomic<Int>(0)
    func record(_ v: Int) {
        var cur = value.load(ordering: .relaxed)
        while v > cur {
            let (exchanged, original) = value.compareExchange(expected: cur, desired: v, ordering: .relaxed)
            if exchanged { return }
            cur = original
        }
    }
    var max: Int { value.load(ordering: .relaxed) }
}

/// A thread-safe list. NSLock (a pthread mutex), not Synchronization.Mutex:
/// on Linux that one waits on a raw futex, which ThreadSanitizer cannot see,
/// so `make test-tsan` reported its protected accesses as races.
final class LockedList<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []
    func append(_ t: T) { lock.lock(); items.append(t); lock.unlock() }
    var all: [T] { lock.lock(); defer { lock.unlock() }; return items }
    func clear() { lock.lock(); items.removeAll(); lock.unlock() }
}

enum TestApps {
    static let bigBodySize = 4 << 20

    /// The "inspect" app plus a few special routes:
    ///   /hello         Hello, World!
    ///   /stream        begin/header/write/end without Content-Length
    ///   /big           4 MiB body (Content-Length), written in 64 KiB pieces
    ///   /inject        tries a header value with CRLF and reports what header() returned
    ///   /noanswer      returns without answering (the core must answer 500)
    ///   /short         declares Content-Length 10 and writes 5 bytes
    ///   /close-header  sets its own Connection: close
    ///   anything else  describes the request:
    ///     method=…\ntarget=…\nversion=1.x\nkeepalive=0|1\nheaders=N\n
    ///     h:<lowercased name>=<value> for Host, Content-Length, Transfer-Encoding,
    ///     Connection, Expect, X-Test\nbody-length=N\nbody=\n<body bytes>
    static let inspect: Application = .http { request, response in
        let target = request.targetString
        switch target {
        case "/hello":
            response.send(status: 200, contentType: "text/plain", body: "Hello, World!")
        case "/stream":
            response.begin(status: 200)
            response.header("Content-Type", "text/plain")
            response.write("part1 ")
            response.write("part2 ")
            response.write("part3")
            response.end()
        case "/big":
            response.begin(status: 200)
            response.header("Content-Type", "application/octet-stream")
            response.header("Content-Length", String(bigBodySize))
            let piece = [UInt8](repeating: UInt8(ascii: "x"), count: 65536)
            piece.withUnsafeBytes { p in
                for _ in 0..<(bigBodySize / piece.count) { response.write(p) }
            }
            response.end()
        case "/inject":
            response.begin(status: 200)
            let injected = response.header("X-Injected", "a\r\nEvil: yes")
            let lfOnly = response.header("X-Injected-LF", "a\nEvil2: yes")
            let nul = response.header("X-Injected-NUL", "a\0b")
            let badName = response.header("Bad Name", "v")
            let good = response.header("X-Good", "fine")
            let body = "injected=\(injected)\nlf=\(lfOnly)\nnul=\(nul)\nbadname=\(badName)\ngood=\(good)\n"
            response.header("Content-Length", String(body.utf8.count))
            response.write(body)
            response.end()
        case "/noanswer":
            return
        case "/short":
            // Declares 10 bytes, writes 5: the core must close the connection.
            response.begin(status: 200)
            response.header("Content-Length", "10")
            response.write("12345")
            response.end()
        case "/close-header":
            response.begin(status: 200)
            response.header("Connection", "close")
            response.header("Content-Length", "3")
            response.write("bye")
            response.end()
        default:
            var text = "method=\(request.methodString)\n"
            text += "target=\(target)\n"
            text += "version=1.\(request.versionMinor)\n"
            text += "keepalive=\(request.keepAlive ? 1 : 0)\n"
            text += "headers=\(request.headerCount)\n"
            for name in ["Host", "Content-Length", "Transfer-Encoding", "Connection", "Expect", "X-Test"] {
                if let v = request.header(named: name) { text += "h:\(name.lowercased())=\(v)\n" }
            }
            text += "body-length=\(request.body.count)\n"
            text += "body=\n"
            var out = Array(text.utf8)
            out.append(contentsOf: request.body)
            _ = out.withUnsafeBytes { response.send(status: 200, contentType: "text/plain", bytes: $0) }
        }
    }
}

/// One engine in one mode: what the shared suite runs every case against.
struct EngineMode: CustomStringConvertible, Sendable {
    var engine: Engine
    var trigger = Trigger.level
    var libevBackend = LibevBackend.epoll

    var description: String {
        switch engine {
        case .epoll, .swift: "\(engine.rawValue)/\(trigger.rawValue)"
        case .libev: "libev/\(libevBackend.rawValue)"
        case .blocking, .threaded: engine.rawValue
        }
    }

    /// The blocking engine answers one request per connection and closes it
    /// (`Connection: close`): keep-alive and pipelining are not its model.
    var keepsAlive: Bool { engine != .blocking }
    /// The blocking engine serves one client at a time: a second client waits
    /// in the backlog until the first is done.
    var servesConcurrently: Bool { engine != .blocking }
    /// Engines that run several event loops (`threads`); blocking and
    /// threaded have one accepting thread by design.
    var runsSeveralLoops: Bool { engine == .epoll || engine == .libev || engine == .swift }

    /// The same mode as `peregrine serve` flags.
    var cliArguments: [String] {
        ["--engine", engine.rawValue, "--trigger", trigger.rawValue]
            + (engine == .libev ? ["--libev-backend", libevBackend.rawValue] : [])
    }

    func apply(to c: inout Configuration) {
        c.engine = engine
        c.trigger = trigger
        c.libevBackend = libevBackend
    }

    /// Every engine and mode: epoll × 3 triggers, libev × 3 backends,
    /// swift × 2 triggers, blocking, threaded. `PEREGRINE_TEST_ENGINES`
    /// (comma-separated names or prefixes, e.g. `epoll,swift/edge`) narrows it.
    static let all: [EngineMode] = {
        let every = Trigger.allCases.map { EngineMode(engine: .epoll, trigger: $0) }
            + LibevBackend.allCases.map { EngineMode(engine: .libev, libevBackend: $0) }
            + [Trigger.level, .edge].map { EngineMode(engine: .swift, trigger: $0) }
            + [EngineMode(engine: .blocking), EngineMode(engine: .threaded)]
        guard let filter = ProcessInfo.processInfo.environment["PEREGRINE_TEST_ENGINES"], !filter.isEmpty else {
            return every
        }
        let wanted = filter.split(separator: ",").map(String.init)
        return every.filter { mode in wanted.contains { mode.description.hasPrefix($0) } }
    }()
}

/// Runs `body` once per engine and mode (`EngineMode.all`).
func forEachEngine(_ body: (EngineMode) throws -> Void) rethrows {
    for mode in EngineMode.all { try body(mode) }
}

/// Starts a server in `mode` on `host`, port 0; the caller stops it (for
/// tests that stop or shut it down themselves).
func startServer(_ mode: EngineMode, _ application: Application, host: String = "127.0.0.1",
                 configure: (inout Configuration) -> Void = { _ in }) throws -> Server {
    var c = Configuration()
    c.host = host
    c.port = 0
    mode.apply(to: &c)
    configure(&c)
    let s = Server(configuration: c, application: application)
    try s.start()
    return s
}

/// Starts a server on 127.0.0.1, port 0, runs `body`, stops it.
func withServer(_ mode: EngineMode, _ application: Application, host: String = "127.0.0.1",
                configure: (inout Configuration) -> Void = { _ in },
                _ body: (Server) throws -> Void) throws {
    let s = try startServer(mode, application, host: host, configure: configure)
    defer { s.stop() }
    XCTAssertGreaterThan(s.port, 0, "[\(mode)] server.port after start")
    try body(s)
}

/// Runs `work` on `count` separate threads and waits for all of them.
func onThreads(_ count: Int, _ work: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for i in 0..<count {
        group.enter()
        let t = Thread {
            work(i)
            group.leave()
        }
        t.stackSize = 1 << 20
        t.start()
    }
    group.wait()
}

/// Offloaded handlers that wait at a gate the test opens: the test knows
/// when they run (`waitUntilStarted`) and decides when they answer, instead
/// of sleeping and hoping the server got there.
///
/// `application`: `/hello` is answered inline on the loop; anything else
/// passes the gate, then answers `gated <target>`.
final class HandlerGate: @unchecked Sendable {
    // @unchecked: every field is read and written under `condition`.
    private let condition = NSCondition()
    private var startedCount = 0
    private var finishedCount = 0
    private var permits = 0

    /// No handler waits longer than this at a closed gate, so a failing test
    /// cannot leave stop() waiting forever on the pool.
    static let handlerSafetyTimeout: TimeInterval = 20

    /// Called by a handler: counts it as started, waits for a permit.
    func pass() {
        condition.lock()
        defer { condition.unlock() }
        startedCount += 1
        condition.broadcast()
        let giveUp = Date(timeIntervalSinceNow: Self.handlerSafetyTimeout)
        while permits == 0 {
            if !condition.wait(until: giveUp) { return }
        }
        permits -= 1
    }

    /// Called by a handler once it has answered.
    func finished() {
        condition.lock()
        finishedCount += 1
        condition.broadcast()
        condition.unlock()
    }

    /// Lets `count` handlers (waiting or still to come) through.
    func open(_ count: Int = 1 << 20) {
        condition.lock()
        permits += count
        condition.broadcast()
        condition.unlock()
    }

    var started: Int { condition.lock(); defer { condition.unlock() }; return startedCount }
    var finishedHandlers: Int { condition.lock(); defer { condition.unlock() }; return finishedCount }

    /// Waits until `count` handlers have started in all; false at the deadline.
    func waitUntilStarted(_ count: Int, timeout: TimeInterval = 5) -> Bool {
        waitFor(timeout) { startedCount >= count }
    }

    /// Waits until `count` handlers have answered in all; false at the deadline.
    func waitUntilFinished(_ count: Int, timeout: TimeInterval = 5) -> Bool {
        waitFor(timeout) { finishedCount >= count }
    }

    private func waitFor(_ timeout: TimeInterval, _ done: () -> Bool) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date(timeIntervalSinceNow: timeout)
        while !done() {
            if !condition.wait(until: deadline) { return done() }
        }
        return true
    }

    var application: Application {
        .offloaded({ [self] request, responder in
            pass()
            responder.send(body: "gated \(request.target)")
            finished()
        }, inline: { request, response in
            guard request.targetString == "/hello" else { return false }
            response.send(body: "Hello, World!")
            return true
        })
    }
}
