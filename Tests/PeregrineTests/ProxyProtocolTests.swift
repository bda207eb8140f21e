// The PROXY protocol (Configuration.proxyProtocol, --proxy-protocol) and the
// client's address (Request.remoteAddress, Connection.remoteAddress, the
// access log), over every engine mode, on real loopback sockets.
import Foundation
import Glibc
import Peregrine
import XCTest

/// The client's address as the handler saw it: `192.0.2.1:56324`,
/// `[2001:db8::1]:80`, `none`.
private let addressEcho: Application = .http { request, response in
    response.send(body: request.remoteAddress.map { "\($0)" } ?? "none")
}

/// Raw mode: `address|bytes` for each arrival.
private let rawAddressEcho: Application = .raw { connection, bytes in
    let prefix = Array("\(connection.remoteAddress.map { "\($0)" } ?? "none")|".utf8)
    prefix.withUnsafeBytes { _ = connection.write($0) }
    connection.write(bytes)
    return bytes.count
}

private let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
/// v2 PROXY TCP4 192.0.2.1:56324 -> 198.51.100.2:443, then two TLVs (ALPN "h2", NOOP).
private let v2TCP4WithTLVs: [UInt8] = v2Signature + [0x21, 0x11, 0x00, 0x17, 192, 0, 2, 1, 198, 51, 100, 2, 0xDC, 0x04, 0x01, 0xBB,
                                                     0x01, 0x00, 0x02, 0x68, 0x32, 0x04, 0x00, 0x03, 0, 0, 0]
/// v2 PROXY TCP6 [2001:db8::1]:8080 -> [2001:db8::2]:443, then a TLV.
private let v2TCP6WithTLV: [UInt8] = v2Signature + [0x21, 0x21, 0x00, 0x29]
    + [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1]
    + [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [2] + [0x1F, 0x90, 0x01, 0xBB]
    + [0x02, 0x00, 0x02, 0x61, 0x62]
/// v2 LOCAL (a proxy's health check): the real peer stands.
private let v2Local: [UInt8] = v2Signature + [0x20, 0x00, 0x00, 0x00]
/// v2 PROXY UNSPEC with a TLV: the real peer stands.
private let v2UnspecWithTLV: [UInt8] = v2Signature + [0x21, 0x00, 0x00, 0x05, 0x04, 0x00, 0x02, 0x00, 0x00]

private func request(_ target: String = "/") -> [UInt8] { Array("GET \(target) HTTP/1.1\r\nHost: a\r\n\r\n".utf8) }

/// The client socket's own address as the server sees it: `127.0.0.1:PORT`.
private func localAddress(_ s: TestSocket) -> String {
    var a = sockaddr_storage()
    var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
    _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s.fd, $0, &len) } }
    return withUnsafeBytes(of: &a) { SocketAddress(sockaddr: $0.baseAddress!).map { "\($0)" } ?? "?" }
}

private func withProxyServer(_ mode: EngineMode, _ app: Application = addressEcho, host: String = "127.0.0.1",
                             headerTimeout: Int = 10, _ body: (Server) throws -> Void) throws {
    try withServer(mode, app, host: host, configure: {
        $0.proxyProtocol = true
        $0.headerTimeout = headerTimeout
    }, body)
}

final class ProxyProtocolTests: XCTestCase {
    // MARK: the address the handler sees

    func testV1TCP4AndTCP6GiveTheHandlerTheClientAddress() throws {
        try forEachEngine { mode in
            try withProxyServer(mode) { server in
                let s = try TestSocket(port: server.port)
                try s.send(Array("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".utf8) + request())
                XCTAssertEqual(try s.readResponse().bodyString, "192.0.2.1:56324", "[\(mode)]")
                if mode.keepsAlive {
                    // The whole connection is that client's, not only its first request.
                    try s.send(request("/again"))
                    XCTAssertEqual(try s.readResponse().bodyString, "192.0.2.1:56324", "[\(mode)] second request")
                }
                let s6 = try TestSocket(port: server.port)
                try s6.send(Array("PROXY TCP6 2001:db8::1 2001:db8::2 65535 80\r\n".utf8) + request())
                XCTAssertEqual(try s6.readResponse().bodyString, "[2001:db8::1]:65535", "[\(mode)]")
            }
        }
    }

    func testV1UnknownKeepsTheRealPeer() throws {
        try forEachEngine { mode in
            try withProxyServer(mode) { server in
                let s = try TestSocket(port: server.port)
                try s.send(Array("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n".utf8) + request())
                XCTAssertEqual(try s.readResponse().bodyString, localAddress(s), "[\(mode)]")
            }
        }
    }

    func testV2TCP4AndTCP6WithTLVs() throws {
        try forEachEngine { mode in
            try withProxyServer(mode) { server in
                let s = try TestSocket(port: server.port)
                try s.send(v2TCP4WithTLVs + request())
                XCTAssertEqual(try s.readResponse().bodyString, "192.0.2.1:56324", "[\(mode)]")
                let s6 = try TestSocket(port: server.port)
                try s6.send(v2TCP6WithTLV + request())
                XCTAssertEqual(try s6.readResponse().bodyString, "[2001:db8::1]:8080", "[\(mode)]")
            }
        }
    }

    func testV2LocalAndUnspecKeepTheRealPeer() throws {
        try forEachEngine { mode in
            try withProxyServer(mode) { server in
                for (name, header) in [("LOCAL", v2Local), ("UNSPEC with TLV", v2UnspecWithTLV)] {
                    let s = try TestSocket(port: server.port)
                    try s.send(header + request())
                    XCTAssertEqual(try s.readResponse().bodyString, localAddress(s), "[\(mode)] \(name)")
                }
            }
        }
    }

    func testHeaderSplitByteByByteAcrossWrites() throws {
        let v1 = Array("PROXY TCP4 203.0.113.7 198.51.100.2 40000 80\r\n".utf8)
        try forEachEngine { mode in
            try withProxyServer(mode) { server in
                for (header, expected) in [(v1, "203.0.113.7:40000"), (v2TCP4WithTLVs, "192.0.2.1:56324")] {
                    let s = try TestSocket(port: server.port)   // TCP_NODELAY: one segment per write
                    for byte in header {
                        try s.send([byte])
                        usleep(2000)   // not synchronisation: gives each byte its own arrival
                    }
                    XCTAssertTrue(s.looksOpen, "[\(mode)] closed while the header was arriving")
                    try s.send(request())
                    XCTAssertEqual(try s.readResponse().bodyString, expected, "[\(mode)]")
                }
            }
        }
    }

    func testHeaderAndRequestInOneSegment() throws {
        // The header and a pipelined pair of requests in one write: the
        // header's bytes are consumed, the rest is HTTP.
        try forEachEngine { mode in
            guard mode.keepsAlive else { return }
            try withProxyServer(mode) { server in
                let s = try TestSocket(port: server.port)
                try s.send(Array("PROXY TCP4 192.0.2.9 198.51.100.2 1 2\r\n".utf8) + request("/1") + request("/2"))
                XCTAssertEqual(try s.readResponse().bodyString, "192.0.2.9:1", "[\(mode)]")
                XCTAssertEqual(try s.readResponse().bodyString, "192.0.2.9:1", "[\(mode)]")
            }
        }
    }

    func testRawModeConnectionSeesTheClientAddress() throws {
        try forEachEngine { mode in
            try withProxyServer(mode, rawAddressEcho) { server in
                let s = try TestSocket(port: server.port)
                try s.send(Array("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nhi".utf8))
                let expected = Array("192.0.2.1:56324|hi".utf8)
                var got: [UInt8] = []
                var buf = [UInt8](repeating: 0, count: 256)
                while got.count < expected.count {
                    let n = try buf.withUnsafeMutableBytes { try s.recvRaw($0) }
                    if n <= 0 { break }
                    got += buf[..<n]
                }
                XCTAssertEqual(String(decoding: got, as: UTF8.self), "192.0.2.1:56324|hi", "[\(mode)]")
            }
        }
    }

    func testOffloadedHandlerSeesTheClientAddress() throws {
        // The copy an offloaded handler gets (OwnedRequest) carries it too.
        let app: Application = .offloaded { request, responder in
            responder.send(body: request.remoteAddress.map { "\($0)" } ?? "none")
        }
        try forEachEngine { mode in
            try withProxyServer(mode, app) { server in
                let s = try TestSocket(port: server.port)
                try s.send(v2TCP6WithTLV + request())
                XCTAssertEqual(try s.readResponse().bodyString, "[2001:db8::1]:8080", "[\(mode)]")
            }
        }
    }

    // MARK: without the flag

    func testWithoutTheFlagTheHandlerSeesThePeer() throws {
        try forEachEngine { mode in
            try withServer(mode, addressEcho) { server in
                let s = try TestSocket(port: server.port)
                try s.send(request())
                XCTAssertEqual(try s.readResponse().bodyString, localAddress(s), "[\(mode)] IPv4")
            }
            try withServer(mode, addressEcho, host: "::1") { server in
                let s = try TestSocket(port: server.port, host: "::1")
                try s.send(request())
                let seen = try s.readResponse().bodyString
                XCTAssertEqual(seen, localAddress(s), "[\(mode)] IPv6")
                XCTAssertTrue(seen.hasPrefix("[::1]:"), "[\(mode)] \(seen)")
            }
        }
    }

    func testWithoutTheFlagAProxyLineIsABadRequest() throws {
        try forEachEngine { mode in
            try withServer(mode, addressEcho) { server in
                let s = try TestSocket(port: server.port)
                try s.send(Array("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".utf8) + request())
                XCTAssertEqual(try s.readResponse().status, 400, "[\(mode)] no spoofing")
                XCTAssertTrue(try s.expectClose().isEmpty, "[\(mode)]")
            }
        }
    }

    // MARK: bad input closes that connection only, without an answer

    func testMalformedOversizedAndUnknownFamiliesCloseWithoutAnAnswer() throws {
        let bad: [(String, [UInt8])] = [
            ("no header: HTTP", request()),
            ("v1 bad address", Array("PROXY TCP4 192.0.2.300 198.51.100.2 1 2\r\n".utf8) + request()),
            ("v1 port over 65535", Array("PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n".utf8) + request()),
            ("v1 bare LF", Array("PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n".utf8) + request()),
            ("v1 oversized", Array(("PROXY UNKNOWN " + String(repeating: "x", count: 200) + "\r\n").utf8) + request()),
            ("v2 unknown family", v2Signature + [0x21, 0x41, 0x00, 0x0C] + [UInt8](repeating: 1, count: 12) + request()),
            ("v2 unknown protocol", v2Signature + [0x21, 0x13, 0x00, 0x0C] + [UInt8](repeating: 1, count: 12) + request()),
            ("v2 unknown command", v2Signature + [0x2F, 0x11, 0x00, 0x0C] + [UInt8](repeating: 1, count: 12) + request()),
            ("v2 version 1", v2Signature + [0x11, 0x11, 0x00, 0x0C] + [UInt8](repeating: 1, count: 12) + request()),
            ("v2 address block too short", v2Signature + [0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4] + request()),
            ("v2 TLV overruns", v2Signature + [0x21, 0x00, 0x00, 0x04, 0x04, 0x00, 0x09, 0x00] + request()),
            ("v2 oversized", v2Signature + [0x21, 0x00, 0xFF, 0xFF] + [UInt8](repeating: 0, count: 20000)),
        ]
        try forEachEngine { mode in
            try withProxyServer(mode) { server in
                for (name, bytes) in bad {
                    let s = try TestSocket(port: server.port)
                    // Sent in two writes: a decoder that waited too long would still close.
                    try? s.send(Array(bytes[..<(bytes.count / 2)]))
                    try? s.send(Array(bytes[(bytes.count / 2)...]))
                    let start = ContinuousClock.now
                    let answer = try s.expectClose()
                    XCTAssertTrue(answer.isEmpty, "[\(mode)] \(name): answered \(String(decoding: answer, as: UTF8.self))")
                    XCTAssertLessThan(ContinuousClock.now - start, .seconds(3), "[\(mode)] \(name): closed at once, not by a timer")
                }
                // The server and other connections are unharmed.
                let ok = try TestSocket(port: server.port)
                try ok.send(v2TCP4WithTLVs + request())
                XCTAssertEqual(try ok.readResponse().bodyString, "192.0.2.1:56324", "[\(mode)] after the bad ones")
            }
        }
    }

    func testTruncatedHeaderThenCloseGetsNoAnswer() throws {
        try forEachEngine { mode in
            try withProxyServer(mode) { server in
                for header in [Array("PROXY TCP4 192.0.2.1 198.51".utf8), Array(v2TCP4WithTLVs[..<20])] {
                    let s = try TestSocket(port: server.port)
                    try s.send(header)
                    s.shutdownWrite()
                    XCTAssertTrue(try s.expectClose().isEmpty, "[\(mode)]")
                }
            }
        }
    }

    func testSilentAndTruncatedClientsAreClosedByTheHeaderTimeout() throws {
        try forEachEngine { mode in
            try withProxyServer(mode, headerTimeout: 1) { server in
                // The truncated client first: it is checked first, so its wait
                // is its own (checking it after the silent one measured that one's).
                let clients: [(String, [UInt8])] = [("truncated", Array("PROXY TCP4 192.0.2.1".utf8)), ("silent", [])]
                // Both at once where the engine serves clients concurrently
                // (the blocking engine accepts the second after the first).
                var open: [(name: String, socket: TestSocket, sentNothing: Bool, start: ContinuousClock.Instant)] = []
                for (name, sent) in clients {
                    if !mode.servesConcurrently, let first = open.first {
                        try checkClosedByTimeout(mode, first.name, first.socket, sentNothing: first.sentNothing,
                                                 since: first.start)
                        open.removeAll()
                    }
                    let s = try TestSocket(port: server.port)
                    if !sent.isEmpty { try s.send(sent) }
                    open.append((name, s, sent.isEmpty, ContinuousClock.now))
                }
                for c in open {
                    try checkClosedByTimeout(mode, c.name, c.socket, sentNothing: c.sentNothing, since: c.start)
                }
            }
        }
    }

    func testWithTheHeaderTimeoutOffASilentClientIsClosedWhenIdle() throws {
        try forEachEngine { mode in
            try withServer(mode, addressEcho, configure: {
                $0.proxyProtocol = true
                $0.headerTimeout = 0
                $0.idleTimeout = 1
            }) { server in
                let s = try TestSocket(port: server.port)
                try checkClosedByTimeout(mode, "silent, idle timeout", s, sentNothing: true, since: ContinuousClock.now)
            }
        }
    }

    /// A 1 s timeout closes within 4 s (the sweep is once a second; slack
    /// for a loaded machine). A client that never sent a byte is not ours
    /// until the kernel hands it over: our listener has TCP_DEFER_ACCEPT, and
    /// Linux keeps such a client about 3 s (the deferral runs to the SYN-ACK's
    /// second retransmission), so its timeout starts that much later.
    private func checkClosedByTimeout(_ mode: EngineMode, _ name: String, _ s: TestSocket, sentNothing: Bool,
                                      since start: ContinuousClock.Instant) throws {
        let heldByKernel: Duration = sentNothing ? .seconds(3) : .zero
        let bound = heldByKernel + .seconds(4)
        guard s.serverCloses(within: bound - (ContinuousClock.now - start) + .milliseconds(500)) else {
            return XCTFail("[\(mode)] \(name): still open \(bound) after it connected (timeout 1 s)")
        }
        let waited = ContinuousClock.now - start
        let answer = try s.expectClose()
        XCTAssertTrue(answer.isEmpty, "[\(mode)] \(name): no 408 before a PROXY header")
        XCTAssertGreaterThanOrEqual(waited, .milliseconds(900), "[\(mode)] \(name): not before the timeout")
        XCTAssertLessThan(waited, bound, "[\(mode)] \(name): timeout 1 s")
    }

    // MARK: real clients

    func testCurlHAProxyProtocol() throws {
        let curl = "/usr/bin/curl"
        guard FileManager.default.isExecutableFile(atPath: curl) else { throw XCTSkip("curl is not installed") }
        try forEachEngine { mode in
            try withProxyServer(mode) { server in
                let p = Process()
                p.executableURL = URL(fileURLWithPath: curl)
                p.arguments = ["-s", "--max-time", "5", "--haproxy-protocol", "http://127.0.0.1:\(server.port)/"]
                let out = Pipe()
                p.standardOutput = out
                try p.run()
                let body = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                p.waitUntilExit()
                XCTAssertEqual(p.terminationStatus, 0, "[\(mode)]")
                // curl sends its own connection's addresses: 127.0.0.1 and its port.
                XCTAssertTrue(body.hasPrefix("127.0.0.1:"), "[\(mode)] \(body)")
                XCTAssertGreaterThan(Int(body.dropFirst("127.0.0.1:".count)) ?? 0, 0, "[\(mode)] \(body)")
            }
        }
    }

    // MARK: the access log

    private var cliPath: String {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [dir.appendingPathComponent("peregrine"), dir.deletingLastPathComponent().appendingPathComponent("peregrine")] {
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate.path }
        }
        return dir.appendingPathComponent("peregrine").path
    }

    /// `peregrine serve --log --proxy-protocol`: `ADDR METHOD TARGET STATUS`
    /// with the header's address, or the real peer for a LOCAL header.
    func testCLIAccessLogShowsTheClientAddress() throws {
        for mode in EngineMode.all {
            let server = Process()
            server.executableURL = URL(fileURLWithPath: cliPath)
            server.arguments = ["serve", "--host", "127.0.0.1", "--port", "0", "--log", "--proxy-protocol"] + mode.cliArguments
            let errPipe = Pipe(), outPipe = Pipe()
            server.standardError = errPipe
            server.standardOutput = outPipe
            try server.run()
            defer {
                server.terminate()
                server.waitUntilExit()
            }
            var banner = ""
            var port = 0
            while port == 0 {
                let data = errPipe.fileHandleForReading.availableData
                if data.isEmpty { break }
                banner += String(decoding: data, as: UTF8.self)
                if let r = banner.range(of: "127.0.0.1:") { port = Int(banner[r.upperBound...].prefix { $0.isNumber }) ?? 0 }
            }
            guard port > 0 else {
                XCTFail("[\(mode)] no port in \(banner)")
                continue
            }
            let proxied = try TestSocket(port: port)
            try proxied.send(Array("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".utf8) + request("/logged?x=1"))
            XCTAssertEqual(try proxied.readResponse().status, 200, "[\(mode)]")
            proxied.close()
            let local = try TestSocket(port: port)
            try local.send(v2Local + request("/local"))
            XCTAssertEqual(try local.readResponse().status, 200, "[\(mode)]")
            local.close()
            // Each line is written before its answer is sent.
            var log = ""
            while log.components(separatedBy: "\n").count < 3 {
                let data = outPipe.fileHandleForReading.availableData
                if data.isEmpty { break }
                log += String(decoding: data, as: UTF8.self)
            }
            // ADDR METHOD TARGET STATUS BYTES DURATIONms: the duration varies.
            let lines = log.split(separator: "\n").map { $0.split(separator: " ") }
            XCTAssertEqual(lines.map { $0.prefix(4).joined(separator: " ") },
                           ["192.0.2.1 GET /logged?x=1 200", "127.0.0.1 GET /local 200"], "[\(mode)] \(log)")
            XCTAssertTrue(lines.allSatisfy { $0.count == 6 && $0[4] == "-" && $0[5].hasSuffix("ms") && Double($0[5].dropLast(2)) != nil },
                          "[\(mode)] \(log)")
        }
    }
}
