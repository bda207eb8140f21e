// The static app (StaticFiles) and the file ranges under it (sendfile in
// every engine's send queue), over every engine mode, with real sockets and
// curl.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Peregrine
import XCTest

final class StaticFileTests: XCTestCase {
    /// The served tree, built once for the class:
    ///   big.bin (20 MiB, pseudo-random), a.txt, page.html, style.css, app.js,
    ///   data.json, pic.png, blob.unknownext, empty.txt (0 bytes),
    ///   index.html, sub/index.html, emptydir/ (no index),
    ///   link.txt -> a.txt (inside: served), pw -> /etc/passwd (outside: 403),
    ///   outdir -> /etc (outside: 403 for anything under it).
    nonisolated(unsafe) static var root = ""
    nonisolated(unsafe) static var big: [UInt8] = []
    nonisolated(unsafe) static var bigChecksum: UInt64 = 0
    static let bigSize = 20 << 20
    static let aText = "hello, static world\n"

    override class func setUp() {
        super.setUp()
        let dir = NSTemporaryDirectory() + "peregrine-static-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        let fm = FileManager.default
        try! fm.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        try! fm.createDirectory(atPath: dir + "/emptydir", withIntermediateDirectories: true)
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        big = [UInt8](repeating: 0, count: bigSize)
        for i in 0..<bigSize {
            x = x &* 6364136223846793005 &+ 1442695040888963407
            big[i] = UInt8(truncatingIfNeeded: x >> 56)
        }
        bigChecksum = fnv1a(big[...])
        precondition(fm.createFile(atPath: dir + "/big.bin", contents: Data(big)), "cannot write big.bin")
        let small: [String: String] = [
            "a.txt": aText, "page.html": "<p>page</p>", "style.css": "p{}", "app.js": "1;",
            "data.json": "{\"k\":1}", "pic.png": "PNG", "blob.unknownext": "??", "empty.txt": "",
            "index.html": "<h1>root index</h1>", "sub/index.html": "<h1>sub index</h1>",
        ]
        for (name, text) in small {
            precondition(fm.createFile(atPath: dir + "/" + name, contents: Data(text.utf8)), "cannot write \(name)")
        }
        try! fm.createSymbolicLink(atPath: dir + "/link.txt", withDestinationPath: "a.txt")
        try! fm.createSymbolicLink(atPath: dir + "/pw", withDestinationPath: "/etc/passwd")
        try! fm.createSymbolicLink(atPath: dir + "/outdir", withDestinationPath: "/etc")
        root = dir
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: root)
        big = []
        super.tearDown()
    }

    private func app() throws -> Application {
        try BuiltinApp.staticFiles.application(sleepMilliseconds: 0, root: StaticFileTests.root)
    }

    private func get(_ port: Int, _ target: String, _ extra: String = "", method: String = "GET") throws -> TestResponse {
        try fetch(port: port, "\(method) \(target) HTTP/1.1\r\nHost: x\r\n\(extra)Connection: close\r\n\r\n")
    }

    // MARK: - Whole files

    func testTwentyMiBFileWholeAndWithCurl() throws {
        let curl = "/usr/bin/curl"
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: curl), "curl is required")
        try forEachEngine { mode in
            try withServer(mode, try app()) { server in
                let r = try get(server.port, "/big.bin")
                XCTAssertEqual(r.status, 200, "[\(mode)]")
                XCTAssertEqual(r.header("Content-Length"), String(StaticFileTests.bigSize), "[\(mode)]")
                XCTAssertEqual(r.header("Content-Type"), "application/octet-stream", "[\(mode)]")
                XCTAssertEqual(r.header("Accept-Ranges"), "bytes", "[\(mode)]")
                XCTAssertEqual(fnv1a(r.body[...]), StaticFileTests.bigChecksum, "[\(mode)] checksum")

                let out = StaticFileTests.root + "-curl-\(mode.description.replacingOccurrences(of: "/", with: "-"))"
                defer { try? FileManager.default.removeItem(atPath: out) }
                let (rc, code) = try runCurl(curl, ["-s", "--max-time", "30", "-o", out, "-w", "%{http_code}",
                                                    "http://127.0.0.1:\(server.port)/big.bin"])
                XCTAssertEqual(rc, 0, "[\(mode)] curl exit")
                XCTAssertEqual(code, "200", "[\(mode)] curl status")
                let got = [UInt8](FileManager.default.contents(atPath: out) ?? Data())
                XCTAssertEqual(got.count, StaticFileTests.bigSize, "[\(mode)] curl size")
                XCTAssertEqual(fnv1a(got[...]), StaticFileTests.bigChecksum, "[\(mode)] curl checksum")
            }
        }
    }

    func testHeadSendsHeadersOnlyAndContentTypes() throws {
        let types = [
            "/page.html": "text/html; charset=utf-8", "/style.css": "text/css; charset=utf-8",
            "/app.js": "text/javascript; charset=utf-8", "/data.json": "application/json",
            "/a.txt": "text/plain; charset=utf-8", "/pic.png": "image/png",
            "/blob.unknownext": "application/octet-stream",
        ]
        try forEachEngine { mode in
            try withServer(mode, try app()) { server in
                // HEAD then GET on one connection (keep-alive engines): the HEAD
                // answer has the same Content-Length and no body byte, so the
                // GET's answer starts right after its head.
                let s = try TestSocket(port: server.port)
                try s.send("HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                let head = try s.readResponse(expectBody: false)
                XCTAssertEqual(head.status, 200, "[\(mode)] HEAD")
                XCTAssertEqual(head.header("Content-Length"), String(StaticFileTests.bigSize), "[\(mode)] HEAD length")
                XCTAssertNotNil(head.header("ETag"), "[\(mode)] HEAD ETag")
                if mode.keepsAlive {
                    try s.send("GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    let next = try s.readResponse()
                    XCTAssertEqual(next.status, 200, "[\(mode)] GET after HEAD")
                    XCTAssertEqual(next.bodyString, StaticFileTests.aText, "[\(mode)] GET after HEAD: a body byte of the HEAD leaked")
                } else {
                    XCTAssertEqual(try s.expectClose(), [], "[\(mode)] HEAD sent body bytes")
                }
                for (target, type) in types {
                    let r = try get(server.port, target)
                    XCTAssertEqual(r.status, 200, "[\(mode)] \(target)")
                    XCTAssertEqual(r.header("Content-Type"), type, "[\(mode)] \(target)")
                }
                let empty = try get(server.port, "/empty.txt")
                XCTAssertEqual(empty.status, 200, "[\(mode)] empty file")
                XCTAssertEqual(empty.header("Content-Length"), "0", "[\(mode)] empty file")
            }
        }
    }

    // MARK: - Ranges

    func testRangesAreByteIdentical() throws {
        let size = StaticFileTests.bigSize
        let big = StaticFileTests.big
        // (Range value, first, last) of a 206.
        let cases: [(String, Int, Int)] = [
            ("bytes=0-0", 0, 0),
            ("bytes=1000-4999", 1000, 4999),
            ("bytes=7000001-10145728", 7_000_001, 10_145_728),   // 3 MiB from an odd offset
            ("bytes=\(size - 100)-", size - 100, size - 1),      // a-
            ("bytes=19000000-", 19_000_000, size - 1),
            ("bytes=-500", size - 500, size - 1),               // -n
            ("bytes=-\(size + 10)", 0, size - 1),               // suffix longer than the file
            ("bytes=100-\(size + 5000)", 100, size - 1),        // last past the end: clamped
            ("BYTES=5-9", 5, 9),                                // the unit is case-insensitive
        ]
        try forEachEngine { mode in
            try withServer(mode, try app()) { server in
                for (value, first, last) in cases {
                    let r = try get(server.port, "/big.bin", "Range: \(value)\r\n")
                    XCTAssertEqual(r.status, 206, "[\(mode)] \(value)")
                    XCTAssertEqual(r.header("Content-Range"), "bytes \(first)-\(last)/\(size)", "[\(mode)] \(value)")
                    XCTAssertEqual(r.header("Content-Length"), String(last - first + 1), "[\(mode)] \(value)")
                    XCTAssertTrue(sameBytes(r.body, big[first...last]), "[\(mode)] \(value): bytes differ")
                }
            }
        }
    }

    func testUnsatisfiableRangeIs416AndMalformedIsIgnored() throws {
        let size = StaticFileTests.bigSize
        try forEachEngine { mode in
            try withServer(mode, try app()) { server in
                for value in ["bytes=\(size)-", "bytes=\(size + 1)-\(size + 9)", "bytes=-0", "bytes=99999999999999999999999-"] {
                    let r = try get(server.port, "/big.bin", "Range: \(value)\r\n")
                    XCTAssertEqual(r.status, 416, "[\(mode)] \(value)")
                    XCTAssertEqual(r.header("Content-Range"), "bytes */\(size)", "[\(mode)] \(value)")
                }
                let emptyFile = try get(server.port, "/empty.txt", "Range: bytes=0-\r\n")
                XCTAssertEqual(emptyFile.status, 416, "[\(mode)] range of an empty file")
                XCTAssertEqual(emptyFile.header("Content-Range"), "bytes */0", "[\(mode)]")
                // Malformed, several ranges, another unit: ignored, the whole file.
                for value in ["bytes=abc", "bytes=5-2", "items=0-1", "bytes=0-1,3-4", "bytes=", "bytes=--5", "bytes 0-1"] {
                    let r = try get(server.port, "/a.txt", "Range: \(value)\r\n")
                    XCTAssertEqual(r.status, 200, "[\(mode)] \(value)")
                    XCTAssertNil(r.header("Content-Range"), "[\(mode)] \(value)")
                    XCTAssertEqual(r.bodyString, StaticFileTests.aText, "[\(mode)] \(value)")
                }
                // HEAD: ranges are defined for GET only.
                let head = try fetch(port: server.port, "HEAD /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(head.status, 200, "[\(mode)] HEAD with Range")
            }
        }
    }

    // MARK: - Validators

    func testNotModifiedWithIfNoneMatchAndIfModifiedSince() throws {
        try forEachEngine { mode in
            try withServer(mode, try app()) { server in
                let first = try get(server.port, "/a.txt")
                guard let etag = first.header("ETag"), let lastModified = first.header("Last-Modified") else {
                    XCTFail("[\(mode)] no ETag or Last-Modified: \(first)")
                    return
                }
                XCTAssertTrue(etag.hasPrefix("\"") && etag.hasSuffix("\""), "[\(mode)] strong ETag: \(etag)")
                XCTAssertNotNil(Array(lastModified.utf8).withUnsafeBytes { HTTPDate.parse($0) },
                                "[\(mode)] Last-Modified is an IMF-fixdate: \(lastModified)")

                for inm in [etag, "W/\(etag)", "\"other\", \(etag)", "*"] {
                    let r = try get(server.port, "/a.txt", "If-None-Match: \(inm)\r\n")
                    XCTAssertEqual(r.status, 304, "[\(mode)] If-None-Match: \(inm)")
                    XCTAssertEqual(r.body, [], "[\(mode)] 304 body")
                    XCTAssertEqual(r.header("ETag"), etag, "[\(mode)] 304 ETag")
                    XCTAssertNil(r.header("Content-Length"), "[\(mode)] 304 Content-Length")
                }
                XCTAssertEqual(try get(server.port, "/a.txt", "If-None-Match: \"other\"\r\n").status, 200, "[\(mode)]")

                let ims = try get(server.port, "/a.txt", "If-Modified-Since: \(lastModified)\r\n")
                XCTAssertEqual(ims.status, 304, "[\(mode)] If-Modified-Since: the same date")
                let later = try get(server.port, "/a.txt", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n")
                XCTAssertEqual(later.status, 304, "[\(mode)] If-Modified-Since: later")
                let earlier = try get(server.port, "/a.txt", "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT\r\n")
                XCTAssertEqual(earlier.status, 200, "[\(mode)] If-Modified-Since: earlier")
                XCTAssertEqual(earlier.bodyString, StaticFileTests.aText, "[\(mode)]")
                let garbage = try get(server.port, "/a.txt", "If-Modified-Since: yesterday\r\n")
                XCTAssertEqual(garbage.status, 200, "[\(mode)] an invalid date is ignored")
                // RFC 9110 13.2.2: If-None-Match wins; If-Modified-Since is not looked at.
                let both = try get(server.port, "/a.txt", "If-None-Match: \"other\"\r\nIf-Modified-Since: \(lastModified)\r\n")
                XCTAssertEqual(both.status, 200, "[\(mode)] If-None-Match takes precedence")
            }
        }
    }

    // MARK: - Paths

    func testTraversalNeverServesOutsideTheRoot() throws {
        let passwd = (try? String(contentsOfFile: "/etc/passwd", encoding: .utf8)) ?? "root:"
        let marker = String(passwd.prefix(16))
        // target -> expected status
        let attempts: [(String, Int)] = [
            ("/../etc/passwd", 403),
            ("/../../../../../../etc/passwd", 403),
            ("/sub/../../etc/passwd", 403),
            ("/%2e%2e/%2e%2e/etc/passwd", 403),
            ("/%2E%2E/etc/passwd", 403),
            ("/.%2e/etc/passwd", 403),
            ("/..%2f..%2fetc%2fpasswd", 403),
            ("/%2fetc%2fpasswd", 404),           // decodes to //etc/passwd: under the root, where it does not exist
            ("/a.txt%00.html", 404),
            ("/%00", 404),
            ("/pw", 403),                        // symlink to /etc/passwd
            ("/outdir/passwd", 403),             // through a symlink to /etc
            ("/outdir/", 403),
            ("/%zz", 400),
            ("/a.txt%2", 400),
        ]
        try forEachEngine { mode in
            try withServer(mode, try app()) { server in
                for (target, status) in attempts {
                    let r = try get(server.port, target)
                    XCTAssertEqual(r.status, status, "[\(mode)] \(target): \(r)")
                    XCTAssertFalse(r.bodyString.contains(marker), "[\(mode)] \(target) served /etc/passwd")
                }
                // A symlink to a file inside the root is served.
                let link = try get(server.port, "/link.txt")
                XCTAssertEqual(link.status, 200, "[\(mode)] symlink inside the root")
                XCTAssertEqual(link.bodyString, StaticFileTests.aText, "[\(mode)]")
            }
        }
    }

    func testDirectoryIndexForbiddenMissingAndMethods() throws {
        try forEachEngine { mode in
            try withServer(mode, try app()) { server in
                let rootIndex = try get(server.port, "/")
                XCTAssertEqual(rootIndex.status, 200, "[\(mode)] /")
                XCTAssertEqual(rootIndex.bodyString, "<h1>root index</h1>", "[\(mode)] /")
                XCTAssertEqual(rootIndex.header("Content-Type"), "text/html; charset=utf-8", "[\(mode)] /")
                for target in ["/sub/", "/sub", "/sub/index.html", "/sub/./", "/sub/?q=1"] {
                    let r = try get(server.port, target)
                    XCTAssertEqual(r.status, 200, "[\(mode)] \(target)")
                    XCTAssertEqual(r.bodyString, "<h1>sub index</h1>", "[\(mode)] \(target)")
                }
                XCTAssertEqual(try get(server.port, "/emptydir/").status, 403, "[\(mode)] directory without index.html")
                XCTAssertEqual(try get(server.port, "/missing.txt").status, 404, "[\(mode)] missing")
                XCTAssertEqual(try get(server.port, "/a.txt/more").status, 404, "[\(mode)] a file used as a directory")
                for method in ["POST", "PUT", "DELETE"] {
                    let r = try fetch(port: server.port, "\(method) /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    XCTAssertEqual(r.status, 405, "[\(mode)] \(method)")
                    XCTAssertEqual(r.header("Allow"), "GET, HEAD", "[\(mode)] \(method)")
                }
            }
        }
    }

    // MARK: - The send queue's file element

    func testPipelinedFileAnswerKeepsOrder() throws {
        let big = StaticFileTests.big
        try forEachEngine { mode in
            guard mode.keepsAlive else { return }   // blocking: one request per connection, no pipelining (its model)
            try withServer(mode, try app()) { server in
                let s = try TestSocket(port: server.port)
                try s.send("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=12345-5012344\r\n\r\n"
                    + "GET /data.json HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "GET /page.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                let r1 = try s.readResponse()
                XCTAssertEqual(r1.bodyString, StaticFileTests.aText, "[\(mode)] first")
                let r2 = try s.readResponse()
                XCTAssertEqual(r2.status, 206, "[\(mode)] second")
                XCTAssertTrue(sameBytes(r2.body, big[12345...5_012_344]), "[\(mode)] the file range differs")
                let r3 = try s.readResponse()
                XCTAssertEqual(r3.bodyString, "{\"k\":1}", "[\(mode)] third, after the file")
                let r4 = try s.readResponse(expectBody: false)
                XCTAssertEqual(r4.header("Content-Length"), String(StaticFileTests.bigSize), "[\(mode)] HEAD")
                let r5 = try s.readResponse()
                XCTAssertEqual(r5.bodyString, "<p>page</p>", "[\(mode)] last")
                XCTAssertEqual(try s.expectClose(), [], "[\(mode)] stray bytes")
            }
        }
    }

    func testClientLeavingMidDownloadClosesTheDescriptor() throws {
        try forEachEngine { mode in
            try withServer(mode, try app()) { server in
                // Baseline after one whole answer: everything lazily opened is open.
                XCTAssertEqual(try get(server.port, "/a.txt").status, 200, "[\(mode)]")
                let baseline = openDescriptors()
                for round in 0..<3 {
                    // 20 MiB is more than the socket buffers on both sides hold:
                    // the server is still sending the file when the client leaves.
                    let s = try TestSocket(port: server.port)
                    try s.send("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                    var buf = [UInt8](repeating: 0, count: 65536)
                    var got = 0
                    while got < buf.count {
                        let n = buf.withUnsafeMutableBytes { recv(s.fd, $0.baseAddress! + got, $0.count - got, 0) }
                        if n <= 0 { break }
                        got += n
                    }
                    XCTAssertEqual(got, buf.count, "[\(mode)] round \(round): the download did not start")
                    if round == 0 { s.reset() } else { s.close() }   // RST, or FIN with unread data
                }
                let deadline = Date().addingTimeInterval(15)
                // The files served (exact) and the count overall (no socket left either).
                while (openFilesUnderRoot() > 0 || openDescriptors() > baseline) && Date() < deadline { usleep(10_000) }
                XCTAssertLessThanOrEqual(openDescriptors(), baseline, "[\(mode)] descriptors not back to the baseline")
                XCTAssertEqual(openFilesUnderRoot(), 0, "[\(mode)] a served file is still open")
                let after = try get(server.port, "/a.txt")
                XCTAssertEqual(after.status, 200, "[\(mode)] the server answers after clients left")
                XCTAssertEqual(after.bodyString, StaticFileTests.aText, "[\(mode)]")
            }
        }
    }

    func testPipelinedSmallFilesHoldAtMostSixteenDescriptors() throws {
        // Bytes would not stop this client (the output limit is raised far
        // above what it asks for): the cap on queued file links must, or one
        // client that does not read holds a descriptor per request.
        let cap = 16
        let smallCount = 100
        try forEachEngine { mode in
            guard mode.keepsAlive else { return }   // blocking: one request per connection, no pipelining (its model)
            try withServer(mode, try app(), configure: { $0.maxOutputPerConnection = 256 << 20 }) { server in
                let s = try TestSocket(port: server.port)
                var burst = "GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                for i in 0..<smallCount {
                    burst += "GET /a.txt HTTP/1.1\r\nHost: x\r\n\(i == smallCount - 1 ? "Connection: close\r\n" : "")\r\n"
                }
                try s.send(burst)
                // The 20 MiB file the client is not reading, and the small
                // files queued behind it, up to the cap.
                let deadline = Date().addingTimeInterval(10)
                while openFilesUnderRoot() < cap && Date() < deadline { usleep(1000) }
                XCTAssertEqual(openFilesUnderRoot(), cap, "[\(mode)] files open with the queue at its cap")
                // Time is the point here: it stays at the cap while the client does not read.
                let watchEnd = Date().addingTimeInterval(0.5)
                var peak = 0
                while Date() < watchEnd { peak = max(peak, openFilesUnderRoot()); usleep(1000) }
                XCTAssertEqual(peak, cap, "[\(mode)] files held for one client that does not read")
                // Reading resumes as the client takes the output: every answer, in order.
                let first = try s.readResponse()
                XCTAssertEqual(first.body.count, StaticFileTests.bigSize, "[\(mode)] the big file")
                for i in 0..<smallCount {
                    let r = try s.readResponse()
                    XCTAssertEqual(r.bodyString, StaticFileTests.aText, "[\(mode)] small answer \(i)")
                }
                XCTAssertEqual(try s.expectClose(), [], "[\(mode)] stray bytes")
                let end = Date().addingTimeInterval(10)
                while openFilesUnderRoot() > 0 && Date() < end { usleep(1000) }
                XCTAssertEqual(openFilesUnderRoot(), 0, "[\(mode)] files still open after the burst")
            }
        }
    }

    func testStopMidFileClosesTheDescriptor() throws {
        try forEachEngine { mode in
            let server = try startServer(mode, try app())
            let s = try TestSocket(port: server.port)
            try s.send("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            var buf = [UInt8](repeating: 0, count: 65536)
            let n = buf.withUnsafeMutableBytes { recv(s.fd, $0.baseAddress!, $0.count, Int32(MSG_WAITALL)) }
            XCTAssertEqual(n, buf.count, "[\(mode)] the download did not start")
            XCTAssertEqual(openFilesUnderRoot(), 1, "[\(mode)] the file is open while it is sent")
            server.stop()   // returns when every loop and connection is gone
            XCTAssertEqual(openFilesUnderRoot(), 0, "[\(mode)] the file outlived the stopped server")
            s.close()
        }
    }

    func testGracefulShutdownLetsTheFileFinish() throws {
        try forEachEngine { mode in
            let server = try startServer(mode, try app())
            let s = try TestSocket(port: server.port)
            try s.send("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            var head = [UInt8](repeating: 0, count: 1024)
            let n = head.withUnsafeMutableBytes { recv(s.fd, $0.baseAddress!, $0.count, 0) }
            XCTAssertGreaterThan(n, 0, "[\(mode)] the download did not start")
            // The answer is in flight: the drain must let it finish, then close.
            let done = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                server.shutdown(deadline: .seconds(30))
                done.signal()
            }
            let rest = try s.readUntilEOF()
            let all = Array(head[0..<max(n, 0)]) + rest
            guard let end = all.firstRange(of: [13, 10, 13, 10]) else {
                XCTFail("[\(mode)] no head")
                done.wait()
                return
            }
            XCTAssertEqual(fnv1a(all[end.upperBound...]), StaticFileTests.bigChecksum, "[\(mode)] the body, whole")
            XCTAssertEqual(done.wait(timeout: .now() + 30), .success, "[\(mode)] shutdown did not return")
            XCTAssertEqual(openFilesUnderRoot(), 0, "[\(mode)] the file outlived the drained server")
        }
    }

    /// A file answer that waits behind an offloaded one (held in the
    /// connection's list of answers owed, offload.c / Offload.swift): it
    /// leaves in request order, and its descriptor is closed if the
    /// connection dies before its turn.
    func testFileAnswerHeldBehindAnOffloadedOne() throws {
        let path = StaticFileTests.root + "/a.txt"
        let size = StaticFileTests.aText.utf8.count
        let app: Application = .offloaded({ request, responder in
            usleep(300_000)   // the slow answer the file waits behind
            _ = responder.send(body: "slow \(request.target)")
        }, inline: { request, response in
            guard request.path.elementsEqual("/file".utf8) else { return false }
            response.begin(status: 200)
            response.header("Content-Length", String(size))
            try? response.sendFile(descriptor: open(path, O_RDONLY | O_CLOEXEC), length: Int64(size))
            response.end()
            return true
        })
        try forEachEngine { mode in
            guard mode.keepsAlive else { return }   // blocking: one request per connection, no pipelining (its model)
            try withServer(mode, app) { server in
                let s = try TestSocket(port: server.port)
                try s.send("GET /slow1 HTTP/1.1\r\nHost: x\r\n\r\nGET /file HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "GET /slow2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(try s.readResponse().bodyString, "slow /slow1", "[\(mode)] first")
                XCTAssertEqual(try s.readResponse().bodyString, StaticFileTests.aText, "[\(mode)] the file, second")
                XCTAssertEqual(try s.readResponse().bodyString, "slow /slow2", "[\(mode)] third")

                // The client leaves while the file answer is still held.
                let gone = try TestSocket(port: server.port)
                try gone.send("GET /slow3 HTTP/1.1\r\nHost: x\r\n\r\nGET /file HTTP/1.1\r\nHost: x\r\n\r\n")
                let deadline = Date().addingTimeInterval(10)
                if mode.engine != .threaded {
                    // Event engines: the file answer is queued at once, behind the slow one.
                    while openFilesUnderRoot() < 1 && Date() < deadline { usleep(1000) }
                    XCTAssertEqual(openFilesUnderRoot(), 1, "[\(mode)] the held file answer holds its descriptor")
                }
                gone.reset()
                while openFilesUnderRoot() > 0 && Date() < deadline { usleep(1000) }
                XCTAssertEqual(openFilesUnderRoot(), 0, "[\(mode)] a held file answer outlived its connection")
            }
        }
    }

    // MARK: - The API

    func testSendFileRefusalsNameTheArgumentAndCloseTheDescriptor() throws {
        let path = StaticFileTests.root + "/a.txt"
        let app: Application = .http { request, response in
            var report = ""
            func attempt(_ label: String, _ body: (Int32) throws(FileSendError) -> Void) {
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                do {
                    try body(fd)
                    report += "\(label)=ok "
                } catch {
                    report += "\(label)=\(error) "
                }
                report += "closed=\(fcntl(fd, F_GETFD) == -1 && errno == EBADF)\n"
            }
            response.begin(status: 200)
            attempt("nolength") { fd throws(FileSendError) in try response.sendFile(descriptor: fd, length: 3) }
            attempt("offset") { fd throws(FileSendError) in try response.sendFile(descriptor: fd, offset: -1, length: 3) }
            attempt("length") { fd throws(FileSendError) in try response.sendFile(descriptor: fd, length: -3) }
            response.header("X-Report", report.replacingOccurrences(of: "\n", with: " | "))
            response.header("Content-Length", "3")
            do {
                try response.sendFile(descriptor: open(path, O_RDONLY | O_CLOEXEC), offset: 1, length: 3)
            } catch {
                response.write("bad")
            }
            response.end()
        }
        try forEachEngine { mode in
            try withServer(mode, app) { server in
                let r = try get(server.port, "/")
                XCTAssertEqual(r.status, 200, "[\(mode)]")
                XCTAssertEqual(r.bodyString, "ell", "[\(mode)] offset 1, length 3 of \(StaticFileTests.aText)")
                let report = r.header("X-Report") ?? ""
                XCTAssertTrue(report.contains("nolength=sendFile: 3 bytes refused"), "[\(mode)] \(report)")
                XCTAssertTrue(report.contains("offset=sendFile: offset must be >= 0 (got -1)"), "[\(mode)] \(report)")
                XCTAssertTrue(report.contains("length=sendFile: length must be >= 0 (got -3)"), "[\(mode)] \(report)")
                XCTAssertEqual(report.components(separatedBy: "closed=true").count - 1, 3, "[\(mode)] \(report)")
            }
        }
    }

    func testRootMustBeADirectory() {
        XCTAssertThrowsError(try BuiltinApp.staticFiles.application(sleepMilliseconds: 0, root: nil)) { error in
            XCTAssertEqual(error as? StaticFilesError, .rootMissing)
        }
        XCTAssertThrowsError(try StaticFiles(root: StaticFileTests.root + "/a.txt")) { error in
            XCTAssertEqual("\(error)", "static: root \(StaticFileTests.root)/a.txt: not a directory")
        }
        XCTAssertThrowsError(try StaticFiles(root: StaticFileTests.root + "/nope")) { error in
            XCTAssertTrue("\(error)".contains("No such file or directory"), "\(error)")
        }
        XCTAssertThrowsError(try BuiltinApp.hello.application(sleepMilliseconds: 0, root: "/tmp")) { error in
            XCTAssertEqual(error as? StaticFilesError, .rootNotApplicable(app: "hello"))
        }
    }

    // MARK: - Helpers

    private func runCurl(_ path: String, _ args: [String]) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self))
    }
}

/// Descriptors of this process (which hosts the server) open on a file of
/// the served tree.
private func openFilesUnderRoot() -> Int {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    var n = 0
    for fd in fds {
        if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd),
           target.hasPrefix(StaticFileTests.root + "/") { n += 1 }
    }
    return n
}

/// Descriptors open in this process (which hosts the server).
private func openDescriptors() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

/// FNV-1a, 64 bits: a checksum to compare downloads with.
private func fnv1a(_ bytes: ArraySlice<UInt8>) -> UInt64 {
    bytes.withUnsafeBufferPointer { p in
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in p { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }
}

/// Byte equality with memcmp (element-wise == is slow in debug builds).
private func sameBytes(_ a: [UInt8], _ b: ArraySlice<UInt8>) -> Bool {
    guard a.count == b.count else { return false }
    if a.isEmpty { return true }
    return a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in memcmp(pa.baseAddress!, pb.baseAddress!, a.count) == 0 } }
}
