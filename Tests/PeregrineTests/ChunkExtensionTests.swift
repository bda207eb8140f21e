// The chunk-size line over real sockets, on every engine: extensions that
// follow RFC 9112 7.1.1 are read past and the body decoded; a line that breaks
// the grammar, or is longer than maxRequestLine, is answered 400 and closed,
// and the server goes on. (Every rule, byte by byte and split at every
// offset, is in Tests/ParserCases/cases.txt; this is the end-to-end check.)
import Peregrine
import XCTest

final class ChunkExtensionTests: XCTestCase {
    static let head = "POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"

    /// The decoded body is `hello world`.
    static let valid: [(String, String)] = [
        ("name only, BWS before ';'", "5 ;a\r\nhello\r\n6\t;b\r\n world\r\n0\r\n\r\n"),
        ("token values, BWS around '='", "5;a = 1;b=two\r\nhello\r\n6; c\t=\td\r\n world\r\n0;last\r\n\r\n"),
        ("quoted values with quoted-pairs", "5;q=\"a; b=\\\"c\\\\\"\r\nhello\r\n6;e=\"\" ;f\r\n world\r\n0\r\n\r\n"),
    ]

    static let invalid: [(String, String)] = [
        ("empty name", "5;\r\nhello\r\n0\r\n\r\n"),
        ("BWS before the CRLF", "5;a \r\nhello\r\n0\r\n\r\n"),
        ("'=' without a value", "5;a=\r\nhello\r\n0\r\n\r\n"),
        ("value not a token", "5;a=b/c\r\nhello\r\n0\r\n\r\n"),
        ("unterminated quoted-string", "5;a=\"b\r\nhello\r\n0\r\n\r\n"),
        ("control byte in an extension", "5;a\u{1}\r\nhello\r\n0\r\n\r\n"),
        ("extension on the last chunk with BWS before the CRLF", "5\r\nhello\r\n0;x\t\r\n\r\n"),
        ("chunk-size line over maxRequestLine", "5;" + String(repeating: "e", count: 300) + "\r\nhello\r\n0\r\n\r\n"),
    ]

    func testValidExtensionsAreReadPast() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: BadInputTests.configure) { server in
                for (name, body) in Self.valid {
                    let what = "[\(mode)] \(name)"
                    let r = try fetch(port: server.port, Self.head + body)
                    XCTAssertEqual(r.status, 200, "\(what): \(r)")
                    XCTAssertEqual(r.fields["body-length"], "11", what)
                    XCTAssertTrue(r.bodyString.hasSuffix("body=\nhello world"), "\(what): \(r.bodyString)")
                }
            }
        }
    }

    func testMalformedChunkLinesAre400ThenClose() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: BadInputTests.configure) { server in
                for (name, body) in Self.invalid {
                    let what = "[\(mode)] \(name)"
                    do {
                        let s = try TestSocket(port: server.port)
                        try s.send(Self.head + body)
                        let r = try s.readResponse()
                        XCTAssertEqual(r.status, 400, "\(what): \(r)")
                        XCTAssertEqual(r.header("Connection")?.lowercased(), "close", what)
                        XCTAssertEqual(try s.expectClose().count, 0, "\(what): nothing after the error answer")
                    } catch {
                        XCTFail("\(what): \(error)")
                    }
                    let after = try fetch(port: server.port, "GET /healthy HTTP/1.1\r\nHost: h\r\n\r\n")
                    XCTAssertEqual(after.status, 200, "\(what): a new connection afterwards: \(after)")
                }
            }
        }
    }
}
