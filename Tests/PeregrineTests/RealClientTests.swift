// curl and Python's http.client against the server.
import Foundation
import Peregrine
import XCTest

final class RealClientTests: XCTestCase {
    /// Runs a program, feeding `input` on stdin; returns (status, stdout, stderr).
    func run(_ path: String, _ args: [String], input: Data? = nil) throws -> (Int32, String, String) {
        guard FileManager.default.isExecutableFile(atPath: path) else { throw XCTSkip("\(path) is not installed") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = inp
        try p.run()
        if let input { inp.fileHandleForWriting.write(input) }
        try inp.fileHandleForWriting.close()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    // 12. curl
    func testCurl() throws {
        try forEachEngine { mode in
            try withServer(mode, BuiltinApp.hello.application) { server in
                let url = "http://127.0.0.1:\(server.port)/"
                let (rc, out, err) = try run("/usr/bin/curl", ["-s", "-i", "--max-time", "5", url])
                XCTAssertEqual(rc, 0, "[\(mode)] curl exit, stderr: \(err)")
                XCTAssertTrue(out.hasPrefix("HTTP/1.1 200"), "[\(mode)] curl output: \(out)")
                XCTAssertTrue(out.hasSuffix("\r\n\r\nHello, World!"), "[\(mode)] curl body: \(out.debugDescription)")
                XCTAssertTrue(out.lowercased().contains("server: peregrine\r\n"), "[\(mode)] Server header: \(out)")

                let (rc0, out0, err0) = try run("/usr/bin/curl", ["-s", "-i", "--http1.0", "--max-time", "5", url])
                XCTAssertEqual(rc0, 0, "[\(mode)] curl --http1.0 exit, stderr: \(err0)")
                XCTAssertTrue(out0.hasPrefix("HTTP/1.1 200"), "[\(mode)] curl --http1.0: \(out0)")
                XCTAssertTrue(out0.hasSuffix("Hello, World!"), "[\(mode)] curl --http1.0 body: \(out0.debugDescription)")

                // Several URLs on one curl: connection reuse.
                let (rc2, out2, err2) = try run("/usr/bin/curl", ["-s", "-v", "--max-time", "5", url, url, url])
                XCTAssertEqual(rc2, 0, "[\(mode)] curl x3, stderr: \(err2)")
                XCTAssertEqual(out2, "Hello, World!Hello, World!Hello, World!", "[\(mode)] curl x3 bodies")
                let reused = err2.contains("Re-using existing connection") || err2.contains("Reusing existing")
                if mode.keepsAlive {
                    XCTAssertTrue(reused, "[\(mode)] curl reused the connection: \(err2.suffix(400))")
                } else {
                    // One request per connection: curl sees Connection: close and reconnects.
                    XCTAssertFalse(reused, "[\(mode)] curl reused a connection the server closes: \(err2.suffix(400))")
                }
            }
            try withServer(mode, TestApps.inspect) { server in
                let payload = Data((0..<5000).map { UInt8(truncatingIfNeeded: $0 % 26 + 97) })
                let (rc, out, err) = try run("/usr/bin/curl", ["-s", "--max-time", "5", "-H", "Content-Type: application/octet-stream",
                                                                "--data-binary", "@-", "http://127.0.0.1:\(server.port)/post"], input: payload)
                XCTAssertEqual(rc, 0, "[\(mode)] curl POST, stderr: \(err)")
                XCTAssertTrue(out.contains("method=POST\n"), "[\(mode)] curl POST: \(out.prefix(300))")
                XCTAssertTrue(out.contains("body-length=5000\n"), "[\(mode)] curl POST length: \(out.prefix(300))")
                XCTAssertTrue(out.hasSuffix("body=\n" + String(decoding: payload, as: UTF8.self)), "[\(mode)] curl POST body")

                // curl -d @- (form encoding strips newlines) and chunked upload.
                let (rc2, out2, _) = try run("/usr/bin/curl", ["-s", "--max-time", "5", "-d", "@-", "http://127.0.0.1:\(server.port)/form"],
                                             input: Data("a=1&b=2".utf8))
                XCTAssertEqual(rc2, 0, "[\(mode)] curl -d @-")
                XCTAssertTrue(out2.hasSuffix("body-length=7\nbody=\na=1&b=2"), "[\(mode)] curl -d: \(out2)")
                let (rc3, out3, _) = try run("/usr/bin/curl", ["-s", "--max-time", "5", "-H", "Transfer-Encoding: chunked",
                                                                "--data-binary", "@-", "http://127.0.0.1:\(server.port)/chunked"],
                                             input: Data("streamed body".utf8))
                XCTAssertEqual(rc3, 0, "[\(mode)] curl chunked upload")
                XCTAssertTrue(out3.contains("h:transfer-encoding=chunked"), "[\(mode)] \(out3)")
                XCTAssertTrue(out3.hasSuffix("body=\nstreamed body"), "[\(mode)] curl chunked upload body: \(out3)")
            }
        }
    }

    // 12. Python http.client
    func testPythonHTTPClient() throws {
        let script = """
        import http.client, sys
        port = int(sys.argv[1])
        keeps_alive = sys.argv[2] == '1'   # the blocking engine answers one request per connection
        c = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
        sock = None
        for i in range(10):
            if i == 4:
                body = b'x' * 1000 + b'END'
                c.request('POST', '/post', body=body, headers={'Content-Type': 'application/octet-stream'})
                r = c.getresponse(); data = r.read()
                assert r.status == 200, r.status
                assert b'method=POST\\n' in data, data[:200]
                assert b'body-length=1003\\n' in data, data[:200]
                assert data.endswith(b'body=\\n' + body), data[-50:]
            elif i == 7:
                c.request('GET', '/stream')
                r = c.getresponse(); data = r.read()
                assert r.status == 200 and data == b'part1 part2 part3', (r.status, data)
                assert r.getheader('Transfer-Encoding') == 'chunked'
            else:
                c.request('GET', '/hello' if i % 2 else '/item/%d' % i)
                r = c.getresponse(); data = r.read()
                assert r.status == 200, r.status
                if i % 2:
                    assert data == b'Hello, World!', data
                else:
                    assert b'target=/item/%d\\n' % i in data, data
            if not keeps_alive:
                assert r.getheader('Connection') == 'close' and c.sock is None, 'one request per connection at %d' % i
                continue
            if sock is None:
                sock = c.sock
            assert c.sock is sock and sock is not None, 'connection was not kept alive at request %d' % i
        print('OK')
        """
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                let (rc, out, err) = try run("/usr/bin/python3", ["-c", script, String(server.port), mode.keepsAlive ? "1" : "0"])
                XCTAssertEqual(rc, 0, "[\(mode)] python exit; stderr: \(err)")
                XCTAssertEqual(out, "OK\n", "[\(mode)] python output; stderr: \(err)")
            }
        }
    }
}
