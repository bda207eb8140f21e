// The example router (Sources/TodoExample) and small routers served by
// Peregrine through the adapter, over real loopback sockets: routing and
// parameters, Codable JSON through curl, 404, thrown errors, Hummingbird's
// logging and metrics middleware, keep-alive across all of it.
import Foundation
import Hummingbird
import InMemoryLogging
import Logging
import Metrics
import MetricsTestKit
import PeregrineHummingbird
import TodoExample
import XCTest

/// One metrics backend for the whole test process (MetricsSystem bootstraps once).
let testMetrics: TestMetrics = {
    let m = TestMetrics()
    MetricsSystem.bootstrap(m)
    return m
}()

/// curl: (status, body).
func curlRequest(_ args: [String]) throws -> (Int, [UInt8]) {
    let marker = Array("\n--status:".utf8)
    let (rc, out, err) = try curl(args + ["--write-out", "\n--status:%{http_code}"])
    guard rc == 0 else { throw ClientError.malformed("curl \(args) exit \(rc): \(err)") }
    guard let at = out.lastIndex(of: marker[0]), Array(out[at..<min(out.count, at + marker.count)]) == marker,
          let status = Int(String(decoding: out[(at + marker.count)...], as: UTF8.self)) else {
        throw ClientError.malformed("curl output without status: \(String(decoding: out.suffix(200), as: UTF8.self))")
    }
    return (status, Array(out[..<at]))
}

struct Boom: Error {}

final class RoutingTests: XCTestCase {
    func testRoutesAndParameters() async throws {
        for mode in EngineMode.underTest {
            let router = makeTodoRouter(context: PeregrineRequestContext.self, store: TodoStore(), logLevel: .trace)
            try await withServer(mode, router) { port in
                try await blocking {
                    let c = try TestConnection(port: port)
                    // One connection for all: keep-alive holds across routes, 404s and 400s.
                    let hello = try c.exchange("GET /hello/peregrine HTTP/1.1\r\nHost: x\r\n\r\n")
                    XCTAssertEqual(hello.status, 200, "[\(mode)] \(hello)")
                    XCTAssertEqual(hello.bodyString, "Hello, peregrine!", "[\(mode)]")
                    XCTAssertEqual(hello.header("Content-Type"), "text/plain; charset=utf-8", "[\(mode)]")

                    let escaped = try c.exchange("GET /hello/caf%C3%A9?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
                    // As on Hummingbird's own server: parameters stay percent-encoded, the query is not part of the path.
                    XCTAssertEqual(escaped.bodyString, "Hello, caf%C3%A9!", "[\(mode)] parameter as sent, query ignored")

                    let files = try c.exchange("GET /files/a/b/c.txt HTTP/1.1\r\nHost: x\r\n\r\n")
                    XCTAssertEqual(files.status, 200, "[\(mode)] \(files)")
                    XCTAssertEqual(files.bodyString, "a/b/c.txt", "[\(mode)] recursive wildcard")

                    let notInt = try c.exchange("GET /todos/abc HTTP/1.1\r\nHost: x\r\n\r\n")
                    XCTAssertEqual(notInt.status, 400, "[\(mode)] a parameter that is not an Int: \(notInt)")
                    XCTAssertTrue(notInt.bodyString.contains("can not be converted"), "[\(mode)] \(notInt.bodyString)")

                    let wrongMethod = try c.exchange("PUT /hello/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                    XCTAssertEqual(wrongMethod.status, 404, "[\(mode)] no PUT route: \(wrongMethod)")

                    let again = try c.exchange("GET /hello/again HTTP/1.1\r\nHost: x\r\n\r\n")
                    XCTAssertEqual(again.bodyString, "Hello, again!", "[\(mode)] the connection still serves")
                }
            }
        }
    }

    func testNotFound() async throws {
        for mode in EngineMode.underTest {
            let router = Router(context: PeregrineRequestContext.self)
            router.get("/here") { _, _ in "here" }
            try await withServer(mode, router) { port in
                try await blocking {
                    let c = try TestConnection(port: port)
                    for target in ["/", "/nowhere", "/here/below", "/%2e%2e/etc/passwd"] {
                        let r = try c.exchange("GET \(target) HTTP/1.1\r\nHost: x\r\n\r\n")
                        XCTAssertEqual(r.status, 404, "[\(mode)] \(target): \(r)")
                        XCTAssertEqual(r.header("Content-Length"), "0", "[\(mode)] \(target)")
                        XCTAssertEqual(r.body, [], "[\(mode)] \(target)")
                    }
                    XCTAssertEqual(try c.exchange("GET /here HTTP/1.1\r\nHost: x\r\n\r\n").bodyString, "here", "[\(mode)]")
                }
            }
        }
    }

    func testJSONBodiesThroughCurl() async throws {
        for mode in EngineMode.underTest {
            let router = makeTodoRouter(context: PeregrineRequestContext.self, store: TodoStore(), logLevel: .trace)
            try await withServer(mode, router) { port in
                try await blocking {
                    let base = "http://127.0.0.1:\(port)/todos"
                    let json = ["-H", "Content-Type: application/json"]
                    let (s1, b1) = try curlRequest(json + ["--data-binary", #"{"title":"write the adapter"}"#, base])
                    XCTAssertEqual(s1, 201, "[\(mode)] POST: \(String(decoding: b1, as: UTF8.self))")
                    XCTAssertEqual(try JSONDecoder().decode(Todo.self, from: Data(b1)), Todo(id: 1, title: "write the adapter", done: false), "[\(mode)]")
                    let (s2, _) = try curlRequest(json + ["--data-binary", #"{"title":"measure it"}"#, base])
                    XCTAssertEqual(s2, 201, "[\(mode)]")

                    let (s3, b3) = try curlRequest(json + ["-X", "PATCH", "--data-binary", #"{"done":true}"#, base + "/1"])
                    XCTAssertEqual(s3, 200, "[\(mode)] PATCH")
                    XCTAssertEqual(try JSONDecoder().decode(Todo.self, from: Data(b3)).done, true, "[\(mode)]")

                    let (s4, b4) = try curlRequest([base])
                    XCTAssertEqual(s4, 200, "[\(mode)] GET all")
                    XCTAssertEqual(try JSONDecoder().decode([Todo].self, from: Data(b4)),
                                   [Todo(id: 1, title: "write the adapter", done: true), Todo(id: 2, title: "measure it", done: false)], "[\(mode)]")

                    let (s5, _) = try curlRequest(["-X", "DELETE", base + "/2"])
                    XCTAssertEqual(s5, 204, "[\(mode)] DELETE")
                    let (s6, b6) = try curlRequest([base + "/2"])
                    XCTAssertEqual(s6, 404, "[\(mode)] GET deleted")
                    XCTAssertTrue(String(decoding: b6, as: UTF8.self).contains("no todo 2"), "[\(mode)] HTTPError message as JSON: \(String(decoding: b6, as: UTF8.self))")

                    // Bad JSON: Hummingbird's decoder answers 400; a missing field our handler's 400.
                    let (s7, _) = try curlRequest(json + ["--data-binary", "{not json", base])
                    XCTAssertEqual(s7, 400, "[\(mode)] malformed JSON")
                    let (s8, b8) = try curlRequest(json + ["--data-binary", "{}", base])
                    XCTAssertEqual(s8, 400, "[\(mode)] no title")
                    XCTAssertTrue(String(decoding: b8, as: UTF8.self).contains("title is required"), "[\(mode)]")

                    // Chunked request body (curl streams stdin chunked).
                    let (rc, out, err) = try curl(json + ["-H", "Transfer-Encoding: chunked", "--data-binary", "@-", base],
                                                  input: Data(#"{"title":"chunked"}"#.utf8))
                    XCTAssertEqual(rc, 0, "[\(mode)] \(err)")
                    XCTAssertEqual(try JSONDecoder().decode(Todo.self, from: Data(out)).title, "chunked", "[\(mode)]")
                }
            }
        }
    }

    func testThrownErrorGives500AndTheConnectionGoesOn() async throws {
        for mode in EngineMode.underTest {
            let router = Router(context: PeregrineRequestContext.self)
            router.get("/throw") { _, _ -> String in throw Boom() }
            router.get("/throw-later") { _, _ -> String in
                try await Task.sleep(for: .milliseconds(1))   // suspended first: the answer is deferred
                throw Boom()
            }
            router.get("/conflict") { _, _ -> String in throw HTTPError(.conflict, message: "taken") }
            router.get("/ok") { _, _ in "ok" }
            try await withServer(mode, router) { port in
                try await blocking {
                    let c = try TestConnection(port: port)
                    for target in ["/throw", "/throw-later"] {
                        let r = try c.exchange("GET \(target) HTTP/1.1\r\nHost: x\r\n\r\n")
                        XCTAssertEqual(r.status, 500, "[\(mode)] \(target): \(r)")
                        XCTAssertEqual(r.body, [], "[\(mode)] \(target): an empty 500, as Hummingbird's own server")
                    }
                    let conflict = try c.exchange("GET /conflict HTTP/1.1\r\nHost: x\r\n\r\n")
                    XCTAssertEqual(conflict.status, 409, "[\(mode)] an HTTPError keeps its status: \(conflict)")
                    XCTAssertTrue(conflict.bodyString.contains("taken"), "[\(mode)] \(conflict.bodyString)")
                    XCTAssertEqual(try c.exchange("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").bodyString, "ok",
                                   "[\(mode)] the connection serves on after the errors")
                }
            }
        }
    }

    func testErrorAfterTheBodyBeganClosesTheConnection() async throws {
        for mode in EngineMode.underTest {
            let router = Router(context: PeregrineRequestContext.self)
            router.get("/partial") { _, _ in
                Response(status: .ok, body: ResponseBody { writer in
                    try await Task.sleep(for: .milliseconds(1))   // the answer streams from here
                    try await writer.write(ByteBuffer(string: "partial"))
                    throw Boom()
                })
            }
            try await withServer(mode, router) { port in
                try await blocking {
                    let c = try TestConnection(port: port)
                    try c.send("GET /partial HTTP/1.1\r\nHost: x\r\n\r\n")
                    let head = try c.readHead()
                    XCTAssertEqual(head.status, 200, "[\(mode)] \(head)")
                    XCTAssertEqual(head.header("Transfer-Encoding"), "chunked", "[\(mode)]")
                    var trailers: [(name: String, value: String)] = []
                    XCTAssertEqual(try c.readChunk(trailers: &trailers), Array("partial".utf8), "[\(mode)]")
                    // No last chunk: the client can tell the body is incomplete.
                    XCTAssertThrowsError(try c.readChunk(trailers: &trailers), "[\(mode)] the connection closes mid-body") { error in
                        guard case ClientError.closed = error else { return XCTFail("[\(mode)] \(error)") }
                    }
                }
            }
        }
    }

    func testLogRequestsMiddlewareLogsThroughTheRequestLogger() async throws {
        for mode in EngineMode.underTest {
            let handler = InMemoryLogHandler()
            var logger = Logger(label: "hb-test") { _ in handler }
            logger.logLevel = .info
            let router = makeTodoRouter(context: PeregrineRequestContext.self, store: TodoStore(), logLevel: .info)
            router.get("/id") { _, context in context.id }
            try await withServer(mode, router, logger: logger) { port in
                let (hello, id) = try await blocking {
                    (try fetch(port: port, "/hello/log"), try fetch(port: port, "/id"))
                }
                XCTAssertEqual(hello.status, 200, "[\(mode)]")
                XCTAssertEqual(id.status, 200, "[\(mode)]")
                let entries = handler.entries.filter { $0.message == "Request" }
                let helloEntry = entries.first { $0.metadata["hb.request.path"]?.description == "/hello/log" }
                XCTAssertNotNil(helloEntry, "[\(mode)] LogRequestsMiddleware's line: \(handler.entries)")
                XCTAssertEqual(helloEntry?.metadata["hb.request.method"]?.description, "GET", "[\(mode)]")
                // Hummingbird's RequestID: a random high part (1-16 hex digits, unpadded) and a 16-digit counter.
                XCTAssertGreaterThan(helloEntry?.metadata["hb.request.id"]?.description.count ?? 0, 16, "[\(mode)] a request id, as Hummingbird's")
                let idEntry = entries.first { $0.metadata["hb.request.path"]?.description == "/id" }
                XCTAssertEqual(idEntry?.metadata["hb.request.id"]?.description, id.bodyString, "[\(mode)] context.id is the logged id")
            }
        }
    }

    func testMetricsMiddlewareCounts() async throws {
        let metrics = testMetrics
        for mode in EngineMode.underTest {
            let router = makeTodoRouter(context: PeregrineRequestContext.self, store: TodoStore(), logLevel: .trace)
            let route = "/hello/{name}"
            let dims = [("http.route", route), ("http.request.method", "GET"), ("http.response.status_code", "200")]
            let before = metrics.counterTotal(label: "hb.requests", dimensions: dims)
            try await withServer(mode, router) { port in
                try await blocking {
                    for i in 0..<3 { XCTAssertEqual(try fetch(port: port, "/hello/\(i)").status, 200, "[\(mode)]") }
                }
                // The counter moves after the body is written, in the handler's task: wait for it (bounded).
                let deadline = ContinuousClock.now + .seconds(5)
                while metrics.counterTotal(label: "hb.requests", dimensions: dims) < before + 3 && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(5))
                }
                XCTAssertEqual(metrics.counterTotal(label: "hb.requests", dimensions: dims), before + 3,
                               "[\(mode)] hb.requests for \(route): \(metrics.counters(label: "hb.requests").map { $0.dimensions })")
            }
        }
    }

    func testContextCarriesTheClientAddress() async throws {
        for mode in EngineMode.underTest {
            let router = Router(context: PeregrineRequestContext.self)
            router.get("/whoami") { _, context in context.remoteAddress.map { "\($0.host) \($0.port)" } ?? "unknown" }
            try await withServer(mode, router) { port in
                try await blocking {
                    let c = try TestConnection(port: port)
                    let r = try c.exchange("GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
                    XCTAssertEqual(r.bodyString, "127.0.0.1 \(c.localPort)", "[\(mode)] the client's address and port")
                }
            }
        }
    }

    func testHeadWithAutoGeneratedEndpoint() async throws {
        for mode in EngineMode.underTest {
            let router = Router(context: PeregrineRequestContext.self, options: .autoGenerateHeadEndpoints)
            router.get("/doc") { _, _ in "twelve bytes" }
            try await withServer(mode, router) { port in
                try await blocking {
                    let c = try TestConnection(port: port)
                    let head = try c.exchange("HEAD /doc HTTP/1.1\r\nHost: x\r\n\r\n")
                    XCTAssertEqual(head.status, 200, "[\(mode)] \(head)")
                    XCTAssertEqual(head.header("Content-Length"), "12", "[\(mode)] HEAD carries GET's length")
                    let get = try c.exchange("GET /doc HTTP/1.1\r\nHost: x\r\n\r\n")
                    XCTAssertEqual(get.bodyString, "twelve bytes", "[\(mode)] no body bytes were left over from HEAD")
                }
            }
        }
    }
}
