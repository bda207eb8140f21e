// Header deadline (408) and keep-alive idle timeout. The clock is coarse
// (one sweep per second), so a timeout of T seconds fires after T to T+2 s;
// the assertions bound it on both sides with that margin.
import Foundation
import Peregrine
import XCTest

final class TimeoutTests: XCTestCase {
    private func secondsSince(_ start: ContinuousClock.Instant) -> Double {
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// A head that stops half-way gets 408 and a close once the deadline passes.
    func testIncompleteHeadGets408() throws {
        try forEachEngine { mode in
            try withServer(mode, BuiltinApp.hello.application, configure: { $0.headerTimeout = 1; $0.idleTimeout = 0 }) { server in
                let client = try TestSocket(port: server.port)
                defer { client.close() }
                let start = ContinuousClock.now
                try client.send("GET / HTTP/1.1\r\nHost: h\r\nX-Partial: ")
                let response = try client.readResponse()
                let elapsed = secondsSince(start)
                XCTAssertEqual(response.status, 408, "[\(mode)] \(response)")
                XCTAssertEqual(response.header("Connection"), "close", "[\(mode)]")
                XCTAssertGreaterThanOrEqual(elapsed, 0.9, "[\(mode)] 408 came before the deadline")
                XCTAssertLessThan(elapsed, 3.5, "[\(mode)] 408 came late")
                XCTAssertTrue(try client.readUntilEOF().isEmpty, "[\(mode)] closed after the 408")
                // The server goes on.
                XCTAssertEqual(try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200, "[\(mode)]")
            }
        }
    }

    /// Slowloris: a byte every 200 ms keeps the socket busy but does not
    /// extend the deadline, which counts from the first byte.
    func testTrickledHeadIsNotExtendedByEachByte() throws {
        try forEachEngine { mode in
            try withServer(mode, BuiltinApp.hello.application, configure: { $0.headerTimeout = 1; $0.idleTimeout = 0 }) { server in
                let client = try TestSocket(port: server.port)
                defer { client.close() }
                let start = ContinuousClock.now
                let trickle = Array("GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ".utf8) + Array(repeating: UInt8(ascii: "s"), count: 40)
                var sent = 0
                // Send until the server answers (and closes); at 5 bytes/s the head would take 15 s.
                while sent < trickle.count, secondsSince(start) < 5 {
                    do { try client.send([trickle[sent]]) } catch { break }
                    sent += 1
                    usleep(200_000)   // the subject: a byte every 200 ms
                    if secondsSince(start) > 3.5 { break }
                }
                let response = try client.readResponse()
                XCTAssertEqual(response.status, 408, "[\(mode)] \(response)")
                XCTAssertLessThan(secondsSince(start), 4.0, "[\(mode)] the trickle stretched the deadline")
                XCTAssertLessThan(sent, trickle.count, "[\(mode)] the whole trickle went through before the 408")
            }
        }
    }

    /// A request that completes within the deadline is served, and the next
    /// request on the same connection gets a fresh deadline: four heads of
    /// 1.2 s each take 4.8 s, past any firing (2 to 4 s) of a deadline that
    /// kept counting from the first head.
    func testCompleteHeadsBeatTheDeadline() throws {
        try forEachEngine { mode in
            try withServer(mode, BuiltinApp.hello.application, configure: { $0.headerTimeout = 2; $0.idleTimeout = 0 }) { server in
                let client = try Session(mode, port: server.port)
                let start = ContinuousClock.now
                for i in 0..<4 {
                    try client.send("GET / HTTP/1.1\r\nHo")
                    usleep(1_200_000)   // the subject: a slow head, well inside the 2 s deadline of this head
                    try client.send("st: h\r\n\r\n")
                    let response = try client.readResponse()
                    XCTAssertEqual(response.status, 200, "[\(mode)] head \(i) at \(secondsSince(start)) s: \(response)")
                }
                XCTAssertGreaterThan(secondsSince(start), 4.0, "[\(mode)] the heads must outlast a deadline that is not renewed")
            }
        }
    }

    /// An idle keep-alive connection is closed quietly (no response bytes)
    /// after the idle timeout (an active one is not:
    /// testBusyConnectionOutlivesIdleTimeout).
    func testIdleKeepAliveConnectionClosedQuietly() throws {
        try forEachEngine { mode in
            try withServer(mode, BuiltinApp.hello.application, configure: { $0.idleTimeout = 1 }) { server in
                // The blocking engine closes right after each answer (Session checks it elsewhere).
                guard mode.keepsAlive else { return }
                let idle = try TestSocket(port: server.port)
                defer { idle.close() }
                try idle.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertEqual(try idle.readResponse().status, 200, "[\(mode)]")
                let start = ContinuousClock.now
                let rest = try idle.readUntilEOF()
                let elapsed = secondsSince(start)
                XCTAssertTrue(rest.isEmpty, "[\(mode)] idle close must send nothing, got \(rest.count) bytes")
                XCTAssertGreaterThanOrEqual(elapsed, 0.9, "[\(mode)] closed before the idle timeout")
                XCTAssertLessThan(elapsed, 3.5, "[\(mode)] idle connection not closed in time")
            }
        }
    }

    func testBusyConnectionOutlivesIdleTimeout() throws {
        try forEachEngine { mode in
            try withServer(mode, BuiltinApp.hello.application, configure: { $0.idleTimeout = 1 }) { server in
                let busy = try Session(mode, port: server.port)
                let start = ContinuousClock.now
                while secondsSince(start) < 2.5 {   // more than twice the idle timeout
                    try busy.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                    XCTAssertEqual(try busy.readResponse().status, 200, "[\(mode)]")
                    usleep(300_000)   // the subject: a request every 0.3 s, never idle for 1 s
                }
            }
        }
    }
}
