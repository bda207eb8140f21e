// The loop writes each async request's head over the last one and compares
// the parts with the last request's bytes as it keeps them: a part that
// comes back after being absent or different must be seen again, on a
// connection and across connections of the same loop.
import Foundation
import HTTPTypes
import Peregrine
import XCTest

final class AsyncHeadReuseTests: XCTestCase {
    private static func describe(_ request: HTTPRequest) -> String {
        let fields = request.headerFields.map { "\($0.name.rawName)=\($0.value)" }.joined(separator: ",")
        return "\(request.method.rawValue) \(request.authority.map { "<\($0)>" } ?? "none") \(request.path ?? "none") [\(fields)]"
    }

    /// Hosts that go, come back, turn empty; paths and methods that change
    /// and change back; fields that come and go: each request sees its own.
    func testPartsThatComeBackAreSeenAgain() throws {
        let app: Application = .async { request, _, writer in
            var fields = HTTPFields()
            fields[HTTPField.Name("X-Head")!] = Self.describe(request)
            try await writer.respond(HTTPResponse(status: .ok, headerFields: fields), body: "ok")
        }
        let conversation: [(String, String)] = [
            ("GET /a HTTP/1.1\r\nHost: h\r\n\r\n", "GET <h> /a []"),
            ("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "GET none /a [Connection=keep-alive]"),
            ("GET /a HTTP/1.1\r\nHost: h\r\n\r\n", "GET <h> /a []"),
            ("GET /a HTTP/1.1\r\nHost: \r\n\r\n", "GET <> /a []"),
            ("GET /a HTTP/1.1\r\nHost: \r\n\r\n", "GET <> /a []"),
            ("GET /a HTTP/1.1\r\nHost: h\r\n\r\n", "GET <h> /a []"),
            ("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", "POST <h> /a [Content-Length=0]"),
            ("GET /a HTTP/1.1\r\nHost: h\r\n\r\n", "GET <h> /a []"),
            ("GET /a/longer/path/than/before?q=1 HTTP/1.1\r\nHost: hh\r\n\r\n", "GET <hh> /a/longer/path/than/before?q=1 []"),
            ("GET /a HTTP/1.1\r\nHost: h\r\n\r\n", "GET <h> /a []"),
            ("GET /a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n", "GET <h> /a [X-A=1]"),
            ("GET /a HTTP/1.1\r\nHost: h\r\n\r\n", "GET <h> /a []"),
        ]
        try forEachEngine { mode in
            try withServer(mode, app) { server in
                let session = try Session(mode, port: server.port)
                for (request, seen) in conversation {
                    try session.send(request)
                    let r = try session.readResponse()
                    XCTAssertEqual(r.status, 200, "[\(mode)] \(r)")
                    XCTAssertEqual(r.header("X-Head"), seen, "[\(mode)] \(request.debugDescription)")
                }
                // A new connection on the same loop: its first request
                // against the last one's parts.
                let fresh = try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(fresh.header("X-Head"), "GET <h> / [Connection=close]", "[\(mode)]")
            }
        }
    }
}
