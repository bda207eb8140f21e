// Configuration validation and Server's lifecycle (issue 14, points 1, 2, 9):
// every out-of-range field is refused with an error naming it, on every
// engine and by the CLI; start() twice throws; stop() and shutdown() from
// several threads at once all return with the server stopped; run() gives
// back the signal mask it changed.
import Foundation
import Glibc
import Peregrine
import PeregrineSwiftEpoll
import XCTest

final class ConfigurationTests: XCTestCase {
    typealias Bounds = Configuration.Bounds

    /// One refused value: what to set, and the error it must give.
    struct Refusal {
        let field: ConfigurationField
        let value: String
        let allowed: String
        let set: @Sendable (inout Configuration) -> Void
    }

    static func range(_ r: ClosedRange<Int>, _ unit: String = "") -> String { "\(r.lowerBound)...\(r.upperBound)\(unit)" }

    /// Every numeric field below and above its range, with Int.min and
    /// Int.max where a C conversion to Int32 would have trapped.
    static let refusals: [Refusal] = {
        var r: [Refusal] = []
        func add(_ field: ConfigurationField, _ values: [Int], _ bounds: ClosedRange<Int>, unit: String = "",
                 _ set: @escaping @Sendable (inout Configuration, Int) -> Void) {
            for v in values {
                r.append(Refusal(field: field, value: String(v), allowed: range(bounds, unit)) { set(&$0, v) })
            }
        }
        let seconds = " (seconds; 0 = off)"
        add(.port, [70000, 65536, -1, Int.min, Int.max], Bounds.port) { $0.port = $1 }
        add(.threads, [0, 1025, Int.min, Int.max], Bounds.threads) { $0.threads = $1 }
        add(.backlog, [0, -1, Int(Int32.max) + 1, Int.max], Bounds.backlog) { $0.backlog = $1 }
        add(.maxThreads, [0, Int.min, Int.max], Bounds.maxThreads) { $0.maxThreads = $1 }
        add(.maxRequestLine, [0, -1, (1 << 20) + 1, Int.max], Bounds.maxRequestLine) { $0.limits.maxRequestLine = $1 }
        add(.maxHeaderBytes, [0, Int.min, Int.max], Bounds.maxHeaderBytes) { $0.limits.maxHeaderBytes = $1 }
        add(.maxHeaders, [0, -1, 65_537, Int.max], Bounds.maxHeaders) { $0.limits.maxHeaders = $1 }
        add(.maxBody, [-1, Int.min, Int.max], Bounds.maxBody) { $0.limits.maxBody = $1 }
        add(.maxOutputPerConnection, [-1, Int.max], Bounds.maxOutputPerConnection) { $0.maxOutputPerConnection = $1 }
        add(.headerTimeout, [-1, 86_401, Int.min, Int.max], Bounds.timeoutSeconds, unit: seconds) { $0.headerTimeout = $1 }
        add(.idleTimeout, [-1, 86_401, Int.max], Bounds.timeoutSeconds, unit: seconds) { $0.idleTimeout = $1 }
        add(.offloadThreads, [0, 1025, Int.max], Bounds.offloadThreads) { $0.offloadThreads = $1 }
        add(.offloadQueue, [-1, (1 << 20) + 1, Int.max], Bounds.offloadQueue) { $0.offloadQueue = $1 }
        for (d, text) in [(Duration.seconds(-1), "-1 s"), (.milliseconds(-500), "-0.5 s"), (.seconds(86_401), "86401 s"),
                          (.seconds(Int64.max), "\(Int64.max) s")] {
            r.append(Refusal(field: .shutdownDeadline, value: text, allowed: "0...86400 s") { $0.shutdownDeadline = d })
        }
        let nameRule = "1...117 bytes without control characters"
        r.append(Refusal(field: .serverName, value: "\"\" (0 bytes)", allowed: nameRule) { $0.serverName = "" })
        r.append(Refusal(field: .serverName, value: "\"a\\r\\nX: y\" (7 bytes)", allowed: nameRule) { $0.serverName = "a\r\nX: y" })
        r.append(Refusal(field: .serverName, value: "\"a\\0b\" (3 bytes)", allowed: nameRule) { $0.serverName = "a\0b" })
        r.append(Refusal(field: .serverName, value: "\"\(String(repeating: "n", count: 40))\" (118 bytes)", allowed: nameRule) {
            $0.serverName = String(repeating: "n", count: 118)
        })
        return r
    }()

    private func configuration(_ mode: EngineMode) -> Configuration {
        var c = Configuration()
        c.host = "127.0.0.1"
        c.port = 0
        mode.apply(to: &c)
        return c
    }

    /// `start()` throws `expected`, and nothing was started.
    private func assertStartRefused(_ mode: EngineMode, _ c: Configuration, _ expected: ConfigurationError,
                                    file: StaticString = #filePath, line: UInt = #line) {
        let server = Server(configuration: c, application: TestApps.inspect)
        XCTAssertThrowsError(try server.start(), "[\(mode)] \(expected.field) \(expected.value)", file: file, line: line) { error in
            guard let error = error as? ConfigurationError else {
                return XCTFail("[\(mode)] not a ConfigurationError: \(error)", file: file, line: line)
            }
            XCTAssertEqual(error, expected, "[\(mode)]", file: file, line: line)
            XCTAssertEqual(error.description, "invalid \(expected.field.rawValue) \(expected.value): allowed \(expected.allowed)",
                           "[\(mode)]", file: file, line: line)
        }
        XCTAssertEqual(server.port, 0, "[\(mode)] a refused configuration bound a port", file: file, line: line)
        server.stop()   // a no-op on a server that never started
    }

    /// Each out-of-range field gives a ConfigurationError naming the field,
    /// the value and the allowed range, on every engine; never a trap.
    func testEachOutOfRangeFieldThrowsErrorNamingIt() {
        forEachEngine { mode in
            for refusal in Self.refusals {
                var c = configuration(mode)
                refusal.set(&c)
                assertStartRefused(mode, c, ConfigurationError(field: refusal.field, value: refusal.value, allowed: refusal.allowed))
            }
        }
    }

    /// The example of the issue, spelled out: port 70000 throws, it does not trap.
    func testPort70000Throws() {
        forEachEngine { mode in
            var c = configuration(mode)
            c.port = 70000
            assertStartRefused(mode, c, ConfigurationError(field: .port, value: "70000", allowed: "0...65535"))
        }
    }

    /// Triggers and thread counts only some engines have.
    func testEngineRulesNameTheField() throws {
        try forEachEngine { mode in
            for trigger in Trigger.allCases {
                var c = configuration(mode)
                c.trigger = trigger
                let allowed: [Trigger] = switch mode.engine {
                case .epoll: Trigger.allCases
                case .swift: [.level, .edge]
                case .libev, .blocking, .threaded: [.level]
                }
                if allowed.contains(trigger) {
                    let server = Server(configuration: c, application: TestApps.inspect)
                    try server.start()
                    server.stop()
                } else {
                    assertStartRefused(mode, c, ConfigurationError(
                        field: .trigger, value: trigger.rawValue,
                        allowed: "\(allowed.map(\.rawValue).joined(separator: ", ")) with the \(mode.engine.rawValue) engine"))
                }
            }
            var c = configuration(mode)
            c.threads = 2
            if mode.runsSeveralLoops {
                let server = Server(configuration: c, application: TestApps.inspect)
                try server.start()
                XCTAssertEqual(try fetch(port: server.port, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n").status, 200, "[\(mode)]")
                server.stop()
            } else {
                assertStartRefused(mode, c, ConfigurationError(
                    field: .threads, value: "2", allowed: "1 with the \(mode.engine.rawValue) engine (one accepting thread)"))
            }
        }
    }

    /// Every field at the top of its range starts and serves (the C core
    /// accepts what the validation allows), the Server line included.
    func testLargestAllowedValuesStartAndServe() throws {
        let name = String(repeating: "S", count: Bounds.serverNameBytes.upperBound)
        try forEachEngine { mode in
            var c = configuration(mode)
            c.backlog = Bounds.backlog.upperBound
            c.maxThreads = Bounds.maxThreads.upperBound
            c.limits = Limits(maxRequestLine: Bounds.maxRequestLine.upperBound, maxHeaderBytes: Bounds.maxHeaderBytes.upperBound,
                              maxHeaders: Bounds.maxHeaders.upperBound, maxBody: Bounds.maxBody.upperBound)
            c.maxOutputPerConnection = Bounds.maxOutputPerConnection.upperBound
            c.headerTimeout = Bounds.timeoutSeconds.upperBound
            c.idleTimeout = Bounds.timeoutSeconds.upperBound
            c.shutdownDeadline = Bounds.shutdownDeadline.upperBound
            c.offloadQueue = Bounds.offloadQueue.upperBound
            c.serverName = name
            XCTAssertNoThrow(try c.validate(), "[\(mode)]")
            let server = Server(configuration: c, application: TestApps.inspect)
            try server.start()
            defer { server.stop() }
            let r = try fetch(port: server.port, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
            XCTAssertEqual(r.status, 200, "[\(mode)]")
            XCTAssertEqual(r.header("Server"), name, "[\(mode)]")
        }
    }

    /// Every field at the bottom of its range starts, and the limits are the
    /// ones given: with a 1-byte head any request gets 431, with a 1-byte
    /// request line (and the default head) 414.
    func testSmallestAllowedValuesStart() throws {
        try forEachEngine { mode in
            var c = configuration(mode)
            c.backlog = Bounds.backlog.lowerBound
            c.maxThreads = Bounds.maxThreads.lowerBound
            c.limits = Limits(maxRequestLine: Bounds.maxRequestLine.lowerBound, maxHeaderBytes: Bounds.maxHeaderBytes.lowerBound,
                              maxHeaders: Bounds.maxHeaders.lowerBound, maxBody: Bounds.maxBody.lowerBound)
            c.maxOutputPerConnection = Bounds.maxOutputPerConnection.lowerBound
            c.headerTimeout = 0
            c.idleTimeout = 0
            c.shutdownDeadline = .zero
            c.offloadThreads = Bounds.offloadThreads.lowerBound
            c.offloadQueue = Bounds.offloadQueue.lowerBound
            c.serverName = "S"
            let server = Server(configuration: c, application: TestApps.inspect)
            try server.start()
            XCTAssertEqual(try fetch(port: server.port, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n").status, 431, "[\(mode)]")
            server.stop()
            c.limits.maxHeaderBytes = Limits().maxHeaderBytes
            let lineLimited = Server(configuration: c, application: TestApps.inspect)
            try lineLimited.start()
            defer { lineLimited.stop() }
            XCTAssertEqual(try fetch(port: lineLimited.port, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n").status, 414, "[\(mode)]")
        }
    }

    /// The Swift engine used on its own applies the same rules.
    func testSwiftEngineOnItsOwnValidates() throws {
        var c = Configuration()
        c.limits.maxBody = -1
        let server = SwiftEpollServer(configuration: c, application: TestApps.inspect)
        XCTAssertThrowsError(try server.start()) { error in
            XCTAssertEqual(error as? ConfigurationError,
                           ConfigurationError(field: .maxBody, value: "-1", allowed: Self.range(Bounds.maxBody)))
        }
        c = Configuration()
        c.host = "127.0.0.1"
        c.port = 0
        c.trigger = .oneshot
        XCTAssertThrowsError(try SwiftEpollServer(configuration: c, application: TestApps.inspect).start()) { error in
            XCTAssertEqual((error as? ConfigurationError)?.field, .trigger)
        }
        c.trigger = .edge
        let ok = SwiftEpollServer(configuration: c, application: TestApps.inspect)
        try ok.start()
        defer { ok.stop() }
        XCTAssertThrowsError(try ok.start()) { XCTAssertEqual($0 as? LifecycleError, .alreadyStarted) }
    }

    // MARK: - Lifecycle

    /// start() on a started server throws (never traps) and leaves it serving;
    /// after stop() it starts again.
    func testStartTwiceThrowsAndServerKeepsServing() throws {
        try forEachEngine { mode in
            let server = try startServer(mode, TestApps.inspect)
            let port = server.port
            XCTAssertThrowsError(try server.start(), "[\(mode)]") { error in
                XCTAssertEqual(error as? LifecycleError, .alreadyStarted, "[\(mode)] \(error)")
            }
            XCTAssertEqual(server.port, port, "[\(mode)]")
            XCTAssertEqual(try fetch(port: port, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n").bodyString, "Hello, World!", "[\(mode)]")
            server.stop()
            try server.start()
            XCTAssertEqual(try fetch(port: server.port, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n").bodyString, "Hello, World!",
                           "[\(mode)] after a restart")
            server.shutdown(deadline: .seconds(5))
            XCTAssertTrue(Self.refused(port: server.port), "[\(mode)] still accepting after shutdown")
        }
    }

    /// stop() from another thread while shutdown() drains a request that
    /// would hold it for 30 s: the drain ends at once, both calls return,
    /// and the server is stopped (it can start again).
    func testStopFromAnotherThreadEndsShutdown() throws {
        try forEachEngine { mode in
            let server = try startServer(mode, TestApps.inspect)
            let port = server.port
            let client = try TestSocket(port: port)
            try client.send("POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789")
            let shutdownDone = DispatchSemaphore(value: 0)
            Thread {
                server.shutdown(deadline: .seconds(30))
                shutdownDone.signal()
            }.start()
            // The drain has begun once the listener refuses connections.
            XCTAssertTrue(waitUntilRefused(port: port, within: .seconds(10)), "[\(mode)] shutdown did not stop accepting")
            let start = ContinuousClock.now
            server.stop()
            XCTAssertEqual(shutdownDone.wait(timeout: .now() + 10), .success, "[\(mode)] shutdown did not return after stop")
            XCTAssertLessThan(ContinuousClock.now - start, .seconds(5), "[\(mode)]")
            try server.start()
            XCTAssertEqual(try fetch(port: server.port, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n").status, 200, "[\(mode)]")
            server.stop()
        }
    }

    /// stop() and shutdown() from four threads at once, many times over:
    /// every call returns with the server stopped (none returns while another
    /// is still releasing it), nothing is released twice.
    func testConcurrentStopsAndShutdownsAllReturnStopped() throws {
        try forEachEngine { mode in
            for round in 0..<8 {
                let server = try startServer(mode, TestApps.inspect)
                let port = server.port
                let clients = 4
                let go = DispatchSemaphore(value: 0)
                let returned = DispatchSemaphore(value: 0)
                let connecting = LockedList<String>()
                for i in 0..<clients {
                    Thread {
                        go.wait()
                        if i % 2 == 0 { server.stop() } else { server.shutdown(deadline: .seconds(5)) }
                        // Returned: the listener is closed, so the kernel refuses a connection.
                        connecting.append(Self.connecting(port: port))
                        returned.signal()
                    }.start()
                }
                for _ in 0..<clients { go.signal() }
                for _ in 0..<clients {
                    XCTAssertEqual(returned.wait(timeout: .now() + 15), .success, "[\(mode)] round \(round): a call did not return")
                }
                XCTAssertEqual(connecting.all, Array(repeating: "refused", count: clients),
                               "[\(mode)] round \(round): a call returned before the listener was closed")
                server.stop()   // and once more, after the fact: a no-op
            }
        }
    }

    /// Whether a connection to `port` is refused now (ECONNREFUSED: no listener).
    private static func refused(port: Int) -> Bool { connecting(port: port) == "refused" }

    /// What connecting to `port` does now: `refused`, `connected`, or the error.
    private static func connecting(port: Int) -> String {
        do {
            try TestSocket(port: port).close()
            return "connected"
        } catch ClientError.system(_, let e) where e == ECONNREFUSED {
            return "refused"
        } catch {
            return "\(error)"
        }
    }

    /// True once a connection to `port` is refused.
    private func waitUntilRefused(port: Int, within limit: Duration) -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if Self.refused(port: port) { return true }
            usleep(10_000)
        }
        return false
    }

    // MARK: - run() and the signal mask

    /// The signals blocked in the calling thread, of those run() touches and SIGUSR2.
    private static func blockedSignals() -> [Int32: Bool] {
        var mask = sigset_t()
        pthread_sigmask(SIG_BLOCK, nil, &mask)
        var out: [Int32: Bool] = [:]
        for sig in [SIGINT, SIGTERM, SIGUSR2] { out[sig] = sigismember(&mask, sig) == 1 }
        return out
    }

    /// run() on its own thread (with SIGUSR2 blocked there beforehand), then
    /// SIGTERM to that thread: run returns, and the thread's mask is the one
    /// it had before (SIGINT and SIGTERM unblocked again, SIGUSR2 still blocked).
    func testRunRestoresSignalMaskAfterSigterm() throws {
        try forEachEngine { mode in
            var c = configuration(mode)
            c.shutdownDeadline = .seconds(5)
            let server = Server(configuration: c, application: TestApps.inspect)
            let started = DispatchSemaphore(value: 0)
            let finished = DispatchSemaphore(value: 0)
            let runThread = LockedList<pthread_t>()
            let outcome = LockedList<String>()
            let masks = LockedList<[Int32: Bool]>()
            Thread {
                var usr2 = sigset_t()
                sigemptyset(&usr2)
                sigaddset(&usr2, SIGUSR2)
                pthread_sigmask(SIG_BLOCK, &usr2, nil)
                masks.append(Self.blockedSignals())
                do {
                    try server.run { _ in
                        runThread.append(pthread_self())
                        started.signal()
                    }
                    outcome.append("returned")
                } catch {
                    outcome.append("threw \(error)")
                }
                masks.append(Self.blockedSignals())
                finished.signal()
            }.start()
            guard started.wait(timeout: .now() + 10) == .success, let thread = runThread.all.first else {
                return XCTFail("[\(mode)] run did not start: \(outcome.all)")
            }
            XCTAssertEqual(try fetch(port: server.port, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n").status, 200, "[\(mode)]")
            // Blocked in that thread since before `started`: only its sigwait takes it.
            XCTAssertEqual(pthread_kill(thread, SIGTERM), 0, "[\(mode)]")
            guard finished.wait(timeout: .now() + 15) == .success else {
                server.stop()
                return XCTFail("[\(mode)] run did not return after SIGTERM")
            }
            XCTAssertEqual(outcome.all, ["returned"], "[\(mode)]")
            let (before, after) = (masks.all[0], masks.all[1])
            XCTAssertEqual(before[SIGUSR2], true, "[\(mode)]")
            XCTAssertEqual(after, before, "[\(mode)] run() did not restore the signal mask")
            XCTAssertTrue(Self.refused(port: server.port), "[\(mode)] still accepting after run returned")
        }
    }

    /// run() whose start() throws gives the mask back too.
    func testRunRestoresSignalMaskWhenStartThrows() {
        var c = Configuration()
        c.port = 70000
        let server = Server(configuration: c, application: TestApps.inspect)
        let before = Self.blockedSignals()
        XCTAssertThrowsError(try server.run()) { error in
            XCTAssertEqual((error as? ConfigurationError)?.field, .port, "\(error)")
        }
        XCTAssertEqual(Self.blockedSignals(), before)
    }

    // MARK: - CLI

    private var cliPath: String {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [dir.appendingPathComponent("peregrine"), dir.deletingLastPathComponent().appendingPathComponent("peregrine")] {
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate.path }
        }
        return dir.appendingPathComponent("peregrine").path
    }

    /// `peregrine serve` with an out-of-range flag exits with the usage
    /// status (64) before serving, and its message names the flag, the value
    /// and the allowed range (the library's rule, named as the flag).
    func testCLIRefusesOutOfRangeFlagsNamingThem() throws {
        let cases: [(args: [String], message: String)] = [
            (["--max-body=-1"], "invalid --max-body -1: allowed \(Self.range(Bounds.maxBody))"),
            (["--port", "70000"], "invalid --port 70000: allowed 0...65535"),
            (["--port", "9223372036854775807"], "invalid --port 9223372036854775807: allowed 0...65535"),
            (["--backlog", "0"], "invalid --backlog 0: allowed \(Self.range(Bounds.backlog))"),
            (["--max-headers", "0"], "invalid --max-headers 0: allowed \(Self.range(Bounds.maxHeaders))"),
            (["--header-timeout=-1"], "invalid --header-timeout -1: allowed 0...86400 (seconds; 0 = off)"),
            (["--shutdown-timeout=-1"], "invalid --shutdown-timeout -1.0 s: allowed 0...86400 s"),
            (["--shutdown-timeout", "1e300"], "invalid --shutdown-timeout 1e+300 s: allowed 0...86400 s"),
            (["--offload-threads", "0"], "invalid --offload-threads 0: allowed \(Self.range(Bounds.offloadThreads))"),
            (["--engine", "swift", "--trigger", "oneshot"], "invalid --trigger oneshot: allowed level, edge with the swift engine"),
            (["--engine", "threaded", "--threads", "2"], "invalid --threads 2: allowed 1 with the threaded engine (one accepting thread)"),
        ]
        for (args, message) in cases {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: cliPath)
            process.arguments = ["serve", "--host", "127.0.0.1"] + args
            let errPipe = Pipe()
            process.standardError = errPipe
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            // Read to EOF (the process exits), with a bound in case it serves instead.
            let killer = DispatchWorkItem { if process.isRunning { process.terminate() } }
            DispatchQueue.global().asyncAfter(deadline: .now() + 20, execute: killer)
            let stderr = String(decoding: errPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            killer.cancel()
            XCTAssertEqual(process.terminationReason, .exit, "\(args): \(stderr)")
            XCTAssertEqual(process.terminationStatus, 64, "\(args): \(stderr)")
            XCTAssertTrue(stderr.contains("Error: \(message)\n"), "\(args): expected \"\(message)\" in \(stderr)")
            XCTAssertFalse(stderr.contains("serving"), "\(args): \(stderr)")
        }
    }
}
