// What async handlers reuse from one request to the next (the loop's last
// request head, handler tasks parked between requests, the one-call answer)
// must not show: every request sees its own head, a head a handler kept
// stays as it was, a cancelled handler leaves the next ones uncancelled, and
// a whole answer has the bytes the begin/header/write path gives.
import Foundation
import HTTPTypes
import Peregrine
import XCTest

final class AsyncReuseTests: XCTestCase {
    private func loops(_ mode: EngineMode) -> Bool { mode.engine == .epoll || mode.engine == .libev || mode.engine == .swift }

    /// The head, as the handler saw it, in one header.
    private static func describe(_ request: HTTPRequest) -> String {
        let fields = request.headerFields.map { "\($0.name.rawName)=\($0.value)" }.joined(separator: ",")
        return "\(request.method.rawValue) \(request.authority ?? "none") \(request.path ?? "none") [\(fields)]"
    }

    /// Requests in turn on one connection with other methods, hosts, paths
    /// and fields each see their own head; the head a handler kept is
    /// unchanged by the requests after it.
    func testEveryRequestSeesItsOwnHeadAndAKeptHeadStays() throws {
        let kept = LockedList<HTTPRequest>()
        let app: Application = .async { request, _, writer in
            if request.path == "/keep" { kept.append(request) }
            var fields = HTTPFields()
            fields[HTTPField.Name("X-Head")!] = Self.describe(request)
            try await writer.respond(HTTPResponse(status: .ok, headerFields: fields), body: "ok")
        }
        try forEachEngine { mode in
            kept.clear()
            try withServer(mode, app) { server in
                let session = try Session(mode, port: server.port)
                let conversation: [(String, String)] = [
                    ("GET /keep HTTP/1.1\r\nHost: a.test\r\nX-A: 1\r\n\r\n", "GET a.test /keep [X-A=1]"),
                    ("POST /two HTTP/1.1\r\nHost: b.test:81\r\nContent-Length: 0\r\n\r\n",
                     "POST b.test:81 /two [Content-Length=0]"),
                    ("GET /three HTTP/1.1\r\nHost: b.test:81\r\n\r\n", "GET b.test:81 /three []"),
                    ("DELETE /three HTTP/1.1\r\nHost: b.test:81\r\nX-B: 2\r\nX-C: 3\r\n\r\n",
                     "DELETE b.test:81 /three [X-B=2,X-C=3]"),
                    ("GET /three HTTP/1.1\r\nHost: b.test:81\r\n\r\n", "GET b.test:81 /three []"),
                ]
                for (request, seen) in conversation {
                    try session.send(request)
                    let r = try session.readResponse()
                    XCTAssertEqual(r.status, 200, "[\(mode)] \(r)")
                    XCTAssertEqual(r.header("X-Head"), seen, "[\(mode)] \(request.debugDescription)")
                }
                let noHost = try fetch(port: server.port, "GET /four HTTP/1.0\r\n\r\n")
                XCTAssertEqual(noHost.header("X-Head"), "GET none /four []", "[\(mode)] a request without Host")
            }
            XCTAssertEqual(kept.all.count, 1, "[\(mode)]")
            if let head = kept.all.first {
                XCTAssertEqual(Self.describe(head), "GET a.test /keep [X-A=1]", "[\(mode)] the kept head changed")
                XCTAssertEqual(head.scheme, "http", "[\(mode)]")
            }
        }
    }

    /// A handler cancelled by its client leaving does not leave the requests
    /// after it cancelled (handler tasks are kept between requests; a
    /// cancelled one must not be).
    func testACancelledHandlerLeavesTheNextOnesUncancelled() throws {
        let started = DispatchSemaphore(value: 0)
        let cancelled = DispatchSemaphore(value: 0)
        let app: Application = .async { request, _, writer in
            if request.path == "/wait" {
                started.signal()
                do {
                    try await Task.sleep(for: .seconds(30))
                } catch {
                    cancelled.signal()
                    throw error
                }
            }
            var fields = HTTPFields()
            fields[HTTPField.Name("X-Cancelled")!] = Task.isCancelled ? "yes" : "no"
            try await writer.respond(HTTPResponse(status: .ok, headerFields: fields), body: "ok")
        }
        try forEachEngine { mode in
            guard loops(mode) else { return }
            try withServer(mode, app) { server in
                for _ in 0..<3 {   // handler tasks now wait parked
                    XCTAssertEqual(try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                        .header("X-Cancelled"), "no", "[\(mode)]")
                }
                let s = try TestSocket(port: server.port)
                try s.send("GET /wait HTTP/1.1\r\nHost: t\r\n\r\n")
                XCTAssertEqual(started.wait(timeout: .now() + 5), .success, "[\(mode)] handler did not start")
                s.close()
                XCTAssertEqual(cancelled.wait(timeout: .now() + 5), .success, "[\(mode)] the task was not cancelled")
                let session = try Session(mode, port: server.port)
                for _ in 0..<5 {
                    try session.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                    let r = try session.readResponse()
                    XCTAssertEqual(r.status, 200, "[\(mode)] \(r)")
                    XCTAssertEqual(r.header("X-Cancelled"), "no", "[\(mode)] a later request started cancelled")
                }
            }
        }
    }

    /// An answer given whole with only a Content-Type field (sent in one
    /// engine call) has the head a closure handler's `send` gives, and to
    /// HEAD its length without a body; a field spelled otherwise keeps its
    /// spelling.
    func testWholeAnswerHasTheClosureHandlersHead() throws {
        let closure: Application = .http { _, response in
            response.send(status: 200, contentType: "text/plain", body: "Hello, World!")
        }
        let spelled = HTTPField.Name("content-type")!
        let async: Application = .async { request, _, writer in
            var fields = HTTPFields()
            if request.path == "/spelled" { fields[spelled] = "text/plain" } else { fields[.contentType] = "text/plain" }
            try await writer.respond(HTTPResponse(status: .ok, headerFields: fields), body: Array("Hello, World!".utf8))
        }
        func withoutDate(_ head: String) -> String {
            head.components(separatedBy: "\r\n").filter { !$0.hasPrefix("Date:") }.joined(separator: "\r\n")
        }
        try forEachEngine { mode in
            try withServer(mode, closure) { closureServer in
                try withServer(mode, async) { asyncServer in
                    let get = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                    let want = try fetch(port: closureServer.port, get)
                    let got = try fetch(port: asyncServer.port, get)
                    XCTAssertEqual(got.status, 200, "[\(mode)] \(got)")
                    XCTAssertEqual(withoutDate(got.rawHead), withoutDate(want.rawHead), "[\(mode)]")
                    XCTAssertEqual(got.bodyString, "Hello, World!", "[\(mode)]")

                    let head = try fetch(port: asyncServer.port, "HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    XCTAssertEqual(head.status, 200, "[\(mode)] \(head)")
                    XCTAssertEqual(head.header("Content-Length"), "13", "[\(mode)]")
                    XCTAssertEqual(head.body, [], "[\(mode)]")

                    let other = try fetch(port: asyncServer.port, "GET /spelled HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    XCTAssertTrue(other.rawHead.contains("\r\ncontent-type: text/plain\r\n"), "[\(mode)] \(other.rawHead.debugDescription)")
                    XCTAssertEqual(other.header("Content-Length"), "13", "[\(mode)]")
                    XCTAssertEqual(other.bodyString, "Hello, World!", "[\(mode)]")
                }
            }
        }
    }
}
