// The one-call answer's prebuilt head (csrc/response.c send_head, the Swift
// engine's LoopState.sendHead): each loop keeps the 200 head through
// "Content-Length: " for the last Content-Type it sent. A run of answers on
// one keep-alive connection whose type changes, repeats, shares a prefix, is
// refused (CR/LF) or is too long to keep must each carry their own type.
import Foundation
import Peregrine
import XCTest

final class SendHeadTests: XCTestCase {
    static let longType = "application/vnd.example.a-very-long-media-type-name+json; charset=utf-8" // > 64 bytes

    static let app: Application = .http { request, response in
        switch request.targetString {
        case "/plain": response.send(status: 200, contentType: "text/plain", body: "hello")
        case "/json": response.send(status: 200, contentType: "application/json", body: "{\"a\":1}")
        case "/prefix": response.send(status: 200, contentType: "text/plai", body: "x")
        case "/long": response.send(status: 200, contentType: longType, body: "long")
        case "/created": response.send(status: 201, contentType: "text/plain", body: "made")
        case "/head-bytes":
            _ = "abc".utf8CString.withUnsafeBytes { response.send(status: 200, contentType: "text/plain", bytes: $0) }
        case "/bad":
            // Refused before anything is written: the handler may still answer.
            if !response.send(status: 200, contentType: "text/plain\r\nX-Injected: 1", body: "no" as String) {
                response.send(status: 400, contentType: "text/x-refused", body: "refused")
            }
        default: response.send(status: 404, contentType: "text/plain", body: "none")
        }
    }

    func testContentTypeChangesOnOneConnectionEachAnswerCarriesItsOwn() throws {
        try forEachEngine { mode in
            guard mode.keepsAlive else { return }
            try withServer(mode, Self.app, configure: { $0.threads = 1 }) { server in
                let s = try TestSocket(port: server.port)
                let steps: [(String, Int, String, String)] = [
                    ("/plain", 200, "text/plain", "hello"), ("/plain", 200, "text/plain", "hello"),
                    ("/json", 200, "application/json", "{\"a\":1}"), ("/prefix", 200, "text/plai", "x"),
                    ("/plain", 200, "text/plain", "hello"), ("/long", 200, Self.longType, "long"),
                    ("/plain", 200, "text/plain", "hello"), ("/created", 201, "text/plain", "made"),
                    ("/bad", 400, "text/x-refused", "refused"), ("/plain", 200, "text/plain", "hello"),
                    ("/head-bytes", 200, "text/plain", "abc\0"), ("/missing", 404, "text/plain", "none"),
                    ("/plain", 200, "text/plain", "hello"),
                ]
                for (target, status, type, body) in steps {
                    try s.send("GET \(target) HTTP/1.1\r\nHost: h\r\n\r\n")
                    let r = try s.readResponse()
                    XCTAssertEqual(r.status, status, "[\(mode)] \(target): \(r)")
                    XCTAssertEqual(r.header("Content-Type"), type, "[\(mode)] \(target) Content-Type")
                    XCTAssertEqual(r.header("Content-Length"), String(body.utf8.count), "[\(mode)] \(target) length")
                    XCTAssertEqual(r.bodyString, body, "[\(mode)] \(target) body")
                    XCTAssertEqual(r.headerCount("Date"), 1, "[\(mode)] \(target) one Date")
                    XCTAssertEqual(r.headerCount("Server"), 1, "[\(mode)] \(target) one Server")
                    XCTAssertNil(r.header("X-Injected"), "[\(mode)] \(target) nothing injected")
                }
                // HEAD: the GET's head, Content-Length included, no body.
                try s.send("HEAD /plain HTTP/1.1\r\nHost: h\r\n\r\n")
                let h = try s.readResponse(expectBody: false)
                XCTAssertEqual(h.status, 200, "[\(mode)] HEAD")
                XCTAssertEqual(h.header("Content-Length"), "5", "[\(mode)] HEAD length")
                XCTAssertEqual(h.header("Content-Type"), "text/plain", "[\(mode)] HEAD type")
                try s.send("GET /json HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertEqual(try s.readResponse().bodyString, "{\"a\":1}", "[\(mode)] after HEAD: framing held")
                XCTAssertTrue(s.pending.isEmpty, "[\(mode)] no stray bytes")
            }
        }
    }
}
