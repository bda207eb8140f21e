// Resets, raw-mode echo with backpressure, threads, IPv6.
import Foundation
import Peregrine
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class RobustnessTests: XCTestCase {
    // 10. a client resets in the middle of a large response
    func testClientResetMidResponseLeavesOthersAlone() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                guard mode.servesConcurrently else {
                    // One client at a time: the reset client's answer is cut
                    // off, and the next client is served as if nothing happened.
                    for round in 0..<3 {
                        let victim = try TestSocket(port: server.port)
                        try victim.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
                        var buf = [UInt8](repeating: 0, count: 4096)
                        if round == 1 { _ = try buf.withUnsafeMutableBytes { try victim.recvRaw($0) } }
                        victim.reset()
                        let r = try fetch(port: server.port, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                        XCTAssertEqual(r.bodyString, "Hello, World!", "[\(mode)] next client after reset \(round)")
                    }
                    let big = try fetch(port: server.port, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
                    XCTAssertEqual(big.body.count, TestApps.bigBodySize, "[\(mode)] 4 MiB after resets")
                    return
                }
                let other = try TestSocket(port: server.port)
                func hellos(_ n: Int, _ phase: String) throws {
                    for i in 0..<n {
                        try other.send("GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                        let r = try other.readResponse()
                        XCTAssertEqual(r.bodyString, "Hello, World!", "[\(mode)] keep-alive hello \(phase) #\(i)")
                    }
                }
                for round in 0..<3 {
                    let victim = try TestSocket(port: server.port)
                    try victim.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
                    if round == 1 {
                        // Read a little of it first.
                        var buf = [UInt8](repeating: 0, count: 4096)
                        _ = try buf.withUnsafeMutableBytes { try victim.recvRaw($0) }
                    }
                    try hellos(10, "round \(round) before reset")
                    victim.reset()
                    try hellos(7, "round \(round) after reset")
                }
                XCTAssertTrue(other.looksOpen, "[\(mode)] the other connection is still open")
                for i in 0..<3 {
                    let r = try fetch(port: server.port, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                    XCTAssertEqual(r.bodyString, "Hello, World!", "[\(mode)] new connection \(i) after resets")
                }
                // And a complete large response still arrives intact.
                let big = try fetch(port: server.port, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertEqual(big.body.count, TestApps.bigBodySize, "[\(mode)] 4 MiB after resets")
                XCTAssertTrue(big.body.allSatisfy { $0 == UInt8(ascii: "x") }, "[\(mode)] 4 MiB content")
            }
        }
    }

    // 10b. reset with requests still pipelined in the server's buffer
    func testResetWithPipelinedRequestsPending() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                for _ in 0..<5 {
                    let v = try TestSocket(port: server.port)
                    try v.send(String(repeating: "GET /big HTTP/1.1\r\nHost: h\r\n\r\n", count: 8))
                    v.reset()
                }
                let r = try fetch(port: server.port, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertEqual(r.bodyString, "Hello, World!", "[\(mode)] after resets with pipelined /big")
            }
        }
    }

    // 11. raw echo
    func testEchoShortMessages() throws {
        try forEachEngine { mode in
            try withServer(mode, BuiltinApp.echo.application) { server in
                let s = try TestSocket(port: server.port)
                for msg in ["a", "hello", "GET / HTTP/1.1\r\n\r\n", String(repeating: "0123456789", count: 500), "\u{0}\u{1}\u{ff}"] {
                    let bytes = Array(msg.utf8)
                    try s.send(bytes)
                    var got: [UInt8] = []
                    var buf = [UInt8](repeating: 0, count: 65536)
                    while got.count < bytes.count {
                        let n = try buf.withUnsafeMutableBytes { try s.recvRaw($0) }
                        XCTAssertGreaterThan(n, 0, "[\(mode)] echo closed early")
                        if n == 0 { break }
                        got += buf[0..<n]
                    }
                    XCTAssertEqual(got, bytes, "[\(mode)] echo of \(bytes.count) bytes")
                }
                XCTAssertTrue(s.looksOpen, "[\(mode)] echo connection open")
                s.shutdownWrite()
                XCTAssertEqual(try s.expectClose(), [], "[\(mode)] echo closes after client EOF")
            }
        }
    }

    func testEchoEightMiBSlowReaderBoundedMemory() throws {
        let total = 8 << 20
        var pattern = [UInt8](repeating: 0, count: total)
        for i in 0..<total { pattern[i] = UInt8(truncatingIfNeeded: (i &* 131) ^ (i >> 12)) }
        let payload = pattern
        let maxOutput = 256 * 1024
        try forEachEngine { mode in
            let maxPending = MaxBox()
            let echo: Application = .raw { connection, bytes in
                maxPending.record(connection.pendingOutput)
                let ok = connection.write(bytes)
                maxPending.record(connection.pendingOutput)
                return ok ? bytes.count : 0
            }
            try withServer(mode, echo, configure: { $0.maxOutputPerConnection = maxOutput }) { server in
                let s = try TestSocket(port: server.port)
                let rssBefore = residentKiB()
                let sendError = LockedList<String>()
                let sender = TestThread {
                    do {
                        var off = 0
                        while off < payload.count {
                            let n = min(256 * 1024, payload.count - off)
                            try payload.withUnsafeBytes { try s.send(UnsafeRawBufferPointer(rebasing: $0[off..<off + n])) }
                            off += n
                        }
                    } catch {
                        sendError.append("\(error)")
                    }
                }
                var received = 0
                var mismatchAt = -1
                var buf = [UInt8](repeating: 0, count: 64 * 1024)
                do {
                    while received < total {
                        let n = try buf.withUnsafeMutableBytes { try s.recvRaw($0) }
                        if n == 0 { break }
                        if mismatchAt < 0 {
                            for j in 0..<n where buf[j] != payload[received + j] { mismatchAt = received + j; break }
                        }
                        received += n
                        usleep(1000)   // the subject: a slow reader
                    }
                } catch {
                    XCTFail("[\(mode)] echo receive failed after \(received) bytes: \(error)")
                }
                XCTAssertTrue(sender.join(), "[\(mode)] the sender did not finish")
                let rssAfter = residentKiB()
                if ProcessInfo.processInfo.environment["PEREGRINE_TEST_VERBOSE"] != nil {
                    print("[\(mode)] echo 8 MiB: max pendingOutput \(maxPending.max), VmRSS \(rssBefore) -> \(rssAfter) KiB")
                }
                XCTAssertEqual(sendError.all, [], "[\(mode)] sender")
                XCTAssertEqual(received, total, "[\(mode)] echoed bytes")
                XCTAssertEqual(mismatchAt, -1, "[\(mode)] echoed bytes differ from byte \(mismatchAt)")
                XCTAssertLessThanOrEqual(maxPending.max, maxOutput + 64 * 1024,
                                         "[\(mode)] pendingOutput peaked at \(maxPending.max) (limit \(maxOutput) + 64 KiB): backpressure does not hold")
                XCTAssertGreaterThan(maxPending.max, 0, "[\(mode)] the slow reader did make output queue")
                XCTAssertLessThan(rssAfter - rssBefore, 32 * 1024, "[\(mode)] VmRSS grew \(rssAfter - rssBefore) KiB (before \(rssBefore) KiB)")
                s.shutdownWrite()
                XCTAssertEqual(try s.expectClose(), [], "[\(mode)] clean EOF after the echo")
            }
        }
    }

    // 13. two loops, eight client threads
    func testTwoThreadsEightClients() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: { $0.threads = mode.runsSeveralLoops ? 2 : 1 }) { server in
                let port = server.port
                let failures = LockedList<String>()
                let counts = LockedList<Int>()
                onThreads(8) { t in
                    var ok = 0
                    do {
                        let s = try Session(mode, port: port)
                        for i in 0..<200 {
                            let path = i % 2 == 0 ? "/hello" : "/t\(t)/\(i)"
                            try s.send("GET \(path) HTTP/1.1\r\nHost: h\r\n\r\n")
                            let r = try s.readResponse()
                            if r.status != 200 { failures.append("client \(t) request \(i): \(r.statusLine)"); continue }
                            if i % 2 == 0 ? r.bodyString != "Hello, World!" : r.fields["target"] != path {
                                failures.append("client \(t) request \(i): wrong body \(r.bodyString.prefix(60))")
                                continue
                            }
                            ok += 1
                        }
                    } catch {
                        failures.append("client \(t): \(error)")
                    }
                    counts.append(ok)
                }
                XCTAssertEqual(failures.all, [], "[\(mode)] threads=2")
                XCTAssertEqual(counts.all.reduce(0, +), 1600, "[\(mode)] 8 x 200 answers of 200")
            }
        }
    }

    // 15. IPv6
    func testIPv6Loopback() throws {
        let probe = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        if probe < 0 { throw XCTSkip("socket(AF_INET6) failed on this machine (errno \(errno)): no IPv6") }
        close(probe)
        try forEachEngine { mode in
            try withServer(mode, BuiltinApp.hello.application, host: "::1") { server in
                let s = try Session(mode, port: server.port, host: "::1")
                for i in 0..<3 {
                    try s.send("GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n")
                    let r = try s.readResponse()
                    XCTAssertEqual(r.status, 200, "[\(mode)] IPv6 request \(i)")
                    XCTAssertEqual(r.bodyString, "Hello, World!", "[\(mode)] IPv6 request \(i)")
                }
            }
        }
    }
}
