// The server in the Swift server ecosystem: run by a swift-service-lifecycle
// ServiceGroup, logging through swift-log, counting through swift-metrics,
// and the CLI's Prometheus endpoint scraped by curl.
import Foundation
import Glibc
import Logging
import MetricsTestKit
import Peregrine
import ServiceLifecycle
import Synchronization
import XCTest

/// Collects every log event (a real LogHandler; the server cannot tell).
final class CollectingLogHandler: LogHandler, @unchecked Sendable {
    // @unchecked: `events` is a LockedList; the rest is set before use.
    struct Event: Sendable {
        let level: Logger.Level
        let message: String
        let metadata: [String: String]
    }
    let events = LockedList<Event>()
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider? = nil
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields: [String: String] = [:]
        for (key, value) in event.metadata ?? [:] { fields[key] = "\(value)" }
        events.append(Event(level: event.level, message: "\(event.message)", metadata: fields))
    }

    var logger: Logger {
        Logger(label: "peregrine-test") { _ in self }
    }
}

/// Polls `condition` until it holds or `seconds` pass: waits on what the
/// server does, bounded.
private func eventually(_ seconds: Double, _ condition: () -> Bool) -> Bool {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if condition() { return true }
        usleep(5_000)
    }
    return condition()
}

/// `operation`'s result, or a failure once `seconds` pass.
private func within<T: Sendable>(_ seconds: Double, _ what: String,
                                 _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))   // the bound, not a synchronisation
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw TimeoutError(what: what, seconds: seconds)
        }
        return value
    }
}

private struct TimeoutError: Error, CustomStringConvertible {
    let what: String
    let seconds: Double
    var description: String { "\(what) did not finish within \(seconds) s" }
}

final class EcosystemTests: XCTestCase {
    private func configuration(_ mode: EngineMode) -> Configuration {
        var c = Configuration()
        c.host = "127.0.0.1"
        c.port = 0
        mode.apply(to: &c)
        return c
    }

    /// A route that holds its request until told (`/slow`), and `/` answering at once.
    private final class Gate: Sendable {
        let entered = Atomic<Bool>(false)
        let released = Atomic<Bool>(false)
        var application: Application {
            .http { request, response in
                if request.targetString == "/slow" {
                    self.entered.store(true, ordering: .releasing)
                    // Bounded: a test that fails never leaves a loop thread stuck.
                    let end = Date().addingTimeInterval(30)
                    while !self.released.load(ordering: .acquiring) && Date() < end { usleep(1_000) }
                    response.send(status: 200, body: "slow done")
                } else {
                    response.send(status: 200, body: "ok")
                }
            }
        }
    }

    // MARK: lifecycle

    /// A ServiceGroup runs the server; graceful shutdown with a request in
    /// flight: the request is answered, run() returns, the port is closed.
    func testServiceGroupGracefulShutdownAnswersTheRequestInFlight() async throws {
        for mode in EngineMode.all {
            let gate = Gate()
            let log = CollectingLogHandler()
            var c = configuration(mode)
            c.shutdownDeadline = .seconds(30)
            c.logger = log.logger
            let server = Server(configuration: c, application: gate.application)
            let group = ServiceGroup(services: [server], logger: log.logger)
            let running = Task { try await group.run() }
            XCTAssertTrue(eventually(30) { server.port > 0 }, "[\(mode)] the server did not start")
            let port = server.port
            let client = try TestSocket(port: port)
            try client.send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
            XCTAssertTrue(eventually(30) { gate.entered.load(ordering: .acquiring) }, "[\(mode)] /slow never ran")

            await group.triggerGracefulShutdown()
            XCTAssertTrue(eventually(30) { log.events.all.contains { $0.message.hasPrefix("shutting down") } },
                          "[\(mode)] graceful shutdown did not reach the server")
            gate.released.store(true, ordering: .releasing)
            let response = try client.readResponse()
            XCTAssertEqual(response.status, 200, "[\(mode)]")
            XCTAssertEqual(String(decoding: response.body, as: UTF8.self), "slow done", "[\(mode)]")
            try await within(30, "[\(mode)] ServiceGroup.run after graceful shutdown") { try await running.value }
            XCTAssertThrowsError(try TestSocket(port: port), "[\(mode)] still accepting after run() returned")
        }
    }

    /// Cancelling the task that runs `Server.run()` stops the server.
    func testCancellationStopsTheServer() async throws {
        for mode in EngineMode.all {
            let server = Server(configuration: configuration(mode), application: .http { _, response in
                response.send(status: 200, body: "ok")
            })
            let running = Task { try await server.run() }
            XCTAssertTrue(eventually(30) { server.port > 0 }, "[\(mode)] the server did not start")
            let port = server.port
            XCTAssertEqual(try fetch(port: port, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").status, 200, "[\(mode)]")
            running.cancel()
            try await within(30, "[\(mode)] Server.run after cancellation") { try await running.value }
            XCTAssertThrowsError(try TestSocket(port: port), "[\(mode)] still accepting after cancellation")
        }
    }

    // MARK: logging

    /// The start-up line and an access-log line (address, method, target,
    /// status, duration) reach the configured Logger.
    func testLoggerGetsStartUpAndAccessLines() throws {
        for mode in EngineMode.all {
            let log = CollectingLogHandler()
            try withServer(mode, .http { request, response in
                response.send(status: request.targetString.hasPrefix("/missing") ? 404 : 200, body: "x")
            }, configure: { c in
                c.logger = log.logger
                c.logRequests = true
            }) { server in
                XCTAssertTrue(log.events.all.contains { $0.level == .info && $0.message == "listening on 127.0.0.1:\(server.port)" },
                              "[\(mode)] no start-up line: \(log.events.all.map(\.message))")
                XCTAssertEqual(try fetch(port: server.port, "GET /missing?q=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").status, 404)
                XCTAssertTrue(eventually(10) { log.events.all.contains { $0.metadata["event"] == "access" } }, "[\(mode)] no access line")
                guard let access = log.events.all.first(where: { $0.metadata["event"] == "access" }) else { return }
                XCTAssertEqual(access.metadata["client"], "127.0.0.1", "[\(mode)]")
                XCTAssertEqual(access.metadata["method"], "GET", "[\(mode)]")
                XCTAssertEqual(access.metadata["target"], "/missing?q=1", "[\(mode)]")
                XCTAssertEqual(access.metadata["status"], "404", "[\(mode)]")
                let duration = Double(access.metadata["duration_ms"] ?? "")
                XCTAssertNotNil(duration, "[\(mode)] duration_ms: \(access.metadata)")
                XCTAssertGreaterThanOrEqual(duration ?? -1, 0, "[\(mode)]")
                // A closure handler's body size is not counted (the zero-copy writer keeps no tally): "-".
                XCTAssertEqual(access.metadata["bytes"], "-", "[\(mode)]")
                XCTAssertEqual(access.message, "127.0.0.1 GET /missing?q=1 404 - \(access.metadata["duration_ms"] ?? "")ms", "[\(mode)]")
            }
        }
    }

    /// Out of descriptors: the shed message comes through the Logger (the C
    /// core's on_log, the Swift engine's logger), and the shed accepts are
    /// counted. The process's descriptor limit is lowered just above what it
    /// holds, for the length of the test.
    func testEMFILESheddingIsLoggedAndCounted() throws {
        // The engines that shed (accept and close) instead of waiting in accept.
        for mode in EngineMode.all where mode.runsSeveralLoops {
            let log = CollectingLogHandler()
            let metrics = TestMetrics()
            try withServer(mode, .http { _, response in response.send(status: 200, body: "ok") }, configure: { c in
                c.logger = log.logger
                c.metricsFactory = metrics
            }) { server in
                // The clients' sockets are made before the limit is lowered:
                // connecting them takes no descriptor, so only the server
                // competes for the few left (a client socket made during the
                // test could take the one the server frees to shed).
                var sockets: [Int32] = []
                defer { sockets.forEach { _ = Glibc.close($0) } }
                for _ in 0..<64 {
                    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                    XCTAssertGreaterThanOrEqual(fd, 0, "socket")
                    if fd >= 0 { sockets.append(fd) }
                }
                var saved = rlimit()
                XCTAssertEqual(getrlimit(Int32(RLIMIT_NOFILE.rawValue), &saved), 0)
                // The limit that leaves 24 free numbers below it (open
                // descriptors are sparse): fewer than the 64 clients.
                let open = Set(((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).compactMap { Int($0) })
                var limit = 0, free = 0
                while free < 24 {
                    if !open.contains(limit) { free += 1 }
                    limit += 1
                }
                var low = saved
                low.rlim_cur = rlim_t(limit)
                XCTAssertEqual(setrlimit(Int32(RLIMIT_NOFILE.rawValue), &low), 0, "lower RLIMIT_NOFILE")
                defer {
                    var restore = saved
                    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &restore)
                }
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_port = in_port_t(UInt16(server.port).bigEndian)
                address.sin_addr.s_addr = inet_addr("127.0.0.1")
                for fd in sockets {
                    let rc = withUnsafePointer(to: &address) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                    }
                    XCTAssertEqual(rc, 0, "[\(mode)] connect: errno \(errno)")
                }
                let shed = eventually(20) {
                    log.events.all.contains { $0.level == .warning && $0.message.contains("shedding new connections") }
                }
                XCTAssertTrue(shed, "[\(mode)] no shed message: \(log.events.all.map(\.message))")
                // The line is written before the shed connection is accepted and counted.
                XCTAssertTrue(eventually(20) { metrics.counterTotal(label: ServerMetrics.shedAcceptsLabel) > 0 },
                              "[\(mode)] shed accepts not counted")
            }
        }
    }

    /// A handler failure the engine answers for (offload queue full: 503)
    /// is logged as a warning through the Logger.
    func testOffloadQueueFullIsLoggedAsHandlerFailure() throws {
        // The event engines defer offloaded answers; the others run them inline.
        for mode in EngineMode.all where mode.runsSeveralLoops {
            let log = CollectingLogHandler()
            let gate = Gate()
            let app: Application = .offloaded({ request, responder in
                if request.target == "/slow" {
                    gate.entered.store(true, ordering: .releasing)
                    let end = Date().addingTimeInterval(30)
                    while !gate.released.load(ordering: .acquiring) && Date() < end { usleep(1_000) }
                }
                responder.send(status: 200, body: "done")
            })
            try withServer(mode, app, configure: { c in
                c.logger = log.logger
                c.offloadThreads = 1
                c.offloadQueue = 0
            }) { server in
                defer { gate.released.store(true, ordering: .releasing) }
                let busy = try TestSocket(port: server.port)
                try busy.send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertTrue(eventually(30) { gate.entered.load(ordering: .acquiring) }, "[\(mode)] /slow never ran")
                XCTAssertEqual(try fetch(port: server.port, "GET /refused HTTP/1.1\r\nHost: h\r\n\r\n").status, 503, "[\(mode)]")
                XCTAssertTrue(log.events.all.contains { $0.level == .warning && $0.message.contains("offload queue full: 503 for GET /refused") },
                              "[\(mode)] \(log.events.all.map(\.message))")
                gate.released.store(true, ordering: .releasing)
                XCTAssertEqual(try busy.readResponse().status, 200, "[\(mode)]")
            }
        }
    }

    // MARK: metrics

    /// Requests by status, duration by method and status, active requests,
    /// open connections and parse errors by status, into a test factory.
    func testMetricsCountRequestsConnectionsAndParseErrors() throws {
        for mode in EngineMode.all {
            let metrics = TestMetrics()
            let gate = Gate()
            let app: Application = .http { request, response in
                switch request.targetString {
                case "/missing": response.send(status: 404, body: "no")
                default: gate.application.handle(request, response)
                }
            }
            try withServer(mode, app, configure: { $0.metricsFactory = metrics }) { server in
                for _ in 0..<3 {
                    XCTAssertEqual(try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").status, 200)
                }
                XCTAssertEqual(try fetch(port: server.port, "POST /missing HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").status, 404)
                XCTAssertEqual(try fetch(port: server.port, "BAD\r\n\r\n").status, 400)
                XCTAssertEqual(metrics.counterTotal(label: ServerMetrics.requestsLabel, dimensions: [("status", "200")]), 3, "[\(mode)]")
                XCTAssertEqual(metrics.counterTotal(label: ServerMetrics.requestsLabel, dimensions: [("status", "404")]), 1, "[\(mode)]")
                XCTAssertEqual(metrics.counterTotal(label: ServerMetrics.parseErrorsLabel, dimensions: [("status", "400")]), 1, "[\(mode)]")
                XCTAssertEqual(try metrics.expectTimer(ServerMetrics.durationLabel, [("method", "GET"), ("status", "200")]).values.count, 3, "[\(mode)]")
                XCTAssertEqual(try metrics.expectTimer(ServerMetrics.durationLabel, [("method", "POST"), ("status", "404")]).values.count, 1, "[\(mode)]")

                // A request in flight on an open connection.
                let client = try TestSocket(port: server.port)
                try client.send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertTrue(eventually(30) { gate.entered.load(ordering: .acquiring) }, "[\(mode)] /slow never ran")
                let active = try metrics.expectMeter(ServerMetrics.activeRequestsLabel)
                let connections = try metrics.expectMeter(ServerMetrics.openConnectionsLabel)
                XCTAssertEqual(active.lastValue, 1, "[\(mode)] active requests")
                // The server closes the earlier connections after their answers
                // reached the client: wait for the last close to be counted.
                XCTAssertTrue(eventually(30) { connections.lastValue == 1 }, "[\(mode)] open connections: \(String(describing: connections.lastValue))")
                gate.released.store(true, ordering: .releasing)
                XCTAssertEqual(try client.readResponse().status, 200)
                XCTAssertEqual(active.lastValue, 0, "[\(mode)] active requests after the answer")
                client.close()
                XCTAssertTrue(eventually(10) { connections.lastValue == 0 }, "[\(mode)] open connections after close: \(String(describing: connections.lastValue))")
            }
        }
    }

    /// Without a backend bootstrapped or configured, nothing is measured.
    func testMetricsAreOffWithoutABackend() {
        XCTAssertNil(ServerMetrics(Configuration()))
        var c = Configuration()
        c.metricsFactory = TestMetrics()
        XCTAssertNotNil(ServerMetrics(c))
    }

    // MARK: the CLI

    private var cliPath: String {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [dir.appendingPathComponent("peregrine"), dir.deletingLastPathComponent().appendingPathComponent("peregrine")] {
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate.path }
        }
        return dir.appendingPathComponent("peregrine").path
    }

    /// `peregrine serve --metrics-port 0 --log`: curl scrapes the Prometheus
    /// text with the counters of the requests made; the access log on stdout
    /// is `ADDR METHOD TARGET STATUS DURATIONms`.
    func testCLIMetricsPortScrapedByCurl() throws {
        for mode in EngineMode.all {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: cliPath)
            process.arguments = ["serve", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--log"] + mode.cliArguments
            let errPipe = Pipe(), outPipe = Pipe()
            process.standardError = errPipe
            process.standardOutput = outPipe
            try process.run()
            defer { process.terminate(); process.waitUntilExit() }
            var stderrText = ""
            let started = eventually(30) {
                let data = errPipe.fileHandleForReading.availableData
                stderrText += String(decoding: data, as: UTF8.self)
                return stderrText.contains("peregrine: serving") || data.isEmpty
            }
            XCTAssertTrue(started && stderrText.contains("peregrine: serving"), "[\(mode)] \(stderrText)")
            guard let port = Self.port(after: "serving hello on 127.0.0.1:", in: stderrText),
                  let metricsPort = Self.port(after: "metrics at http://127.0.0.1:", in: stderrText) else {
                return XCTFail("[\(mode)] ports not printed: \(stderrText)")
            }
            for _ in 0..<3 {
                XCTAssertEqual(try fetch(port: port, "GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").status, 200)
            }
            XCTAssertEqual(try fetch(port: port, "BAD\r\n\r\n").status, 400)

            let curl = Process()
            curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            curl.arguments = ["-sS", "--max-time", "10", "-D", "-", "http://127.0.0.1:\(metricsPort)/metrics"]
            let curlOut = Pipe()
            curl.standardOutput = curlOut
            try curl.run()
            let scraped = String(decoding: curlOut.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            curl.waitUntilExit()
            XCTAssertEqual(curl.terminationStatus, 0, "[\(mode)] curl failed")
            XCTAssertTrue(scraped.hasPrefix("HTTP/1.1 200"), "[\(mode)] \(scraped)")
            XCTAssertTrue(scraped.lowercased().contains("content-type: text/plain; version=0.0.4"), "[\(mode)] \(scraped)")
            XCTAssertTrue(scraped.contains("# TYPE peregrine_requests_total counter"), "[\(mode)] \(scraped)")
            XCTAssertTrue(scraped.contains("peregrine_requests_total{status=\"200\"} 3\n"), "[\(mode)] \(scraped)")
            XCTAssertTrue(scraped.contains("peregrine_parse_errors_total{status=\"400\"} 1\n"), "[\(mode)] \(scraped)")
            XCTAssertTrue(scraped.contains("peregrine_request_duration_seconds_count{method=\"GET\",status=\"200\"} 3\n"), "[\(mode)] \(scraped)")
            XCTAssertTrue(scraped.contains("peregrine_active_requests 0"), "[\(mode)] \(scraped)")

            // The access log: three lines, the fields in order.
            process.terminate()
            process.waitUntilExit()
            let out = String(decoding: outPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            let lines = out.split(separator: "\n").map { $0.split(separator: " ") }
            XCTAssertEqual(lines.count, 3, "[\(mode)] \(out)")
            for line in lines {
                XCTAssertEqual(line.prefix(4).joined(separator: " "), "127.0.0.1 GET /x 200", "[\(mode)] \(out)")
                XCTAssertTrue(line.count == 6 && line[4] == "-" && line[5].hasSuffix("ms") && Double(line[5].dropLast(2)) != nil, "[\(mode)] \(out)")
            }
        }
    }

    private static func port(after prefix: String, in text: String) -> Int? {
        guard let range = text.range(of: prefix) else { return nil }
        return Int(text[range.upperBound...].prefix { $0.isNumber })
    }
}

extension Application {
    /// The `.http` handler (test helper for composing routes).
    fileprivate func handle(_ request: Request, _ response: Response) {
        if case .http(let handler) = self { handler(request, response) }
    }
}
