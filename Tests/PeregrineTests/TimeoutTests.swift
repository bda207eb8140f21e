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
        try forEachTrigger { trigger in
            try withServer(trigger, BuiltinApp.hello.application, configure: { $0.headerTimeout = 1; $0.idleTimeout = 0 }) { server in
                let client = try TestSocket(port: server.port)
                defer { client.close() }
                let start = ContinuousClock.now
                try client.send("GET / HTTP/1.1\r\nHost: h\r\nX-Partial: ")
                let response = try client.readResponse()
                let elapsed = secondsSince(start)
                XCTAssertEqual(response.status, 408, "[\(trigger)] \(response)")
                XCTAssertEqual(response.header("Connection"), "close", "[\(trigger)]")
                XCTAssertGreaterThanOrEqual(elapsed, 0.9, "[\(trigger)] 408 came before the deadline")
                XCTAssertLessThan(elapsed, 3.5, "[\(trigger)] 408 came late")
                XCTAssertTrue(try client.readUntilEOF().isEmpty, "[\(trigger)] closed after the 408")
                // The server goes on.
                XCTAssertEqual(try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200, "[\(trigger)]")
            }
        }
    }

    /// Slowloris: a byte every 200 ms keeps the socket busy but does not
    /// extend the deadline, which counts from the first byte.
    func testTrickledHeadIsNotExtendedByEachByte() throws {
        try forEachTrigger { trigger in
            try withServer(trigger, BuiltinApp.hello.application, configure: { $0.headerTimeout = 1; $0.idleTimeout = 0 }) { server in
                let client = try TestSocket(port: server.port)
                defer { client.close() }
                let start = ContinuousClock.now
                let trickle = Array("GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ".utf8) + Array(repeating: UInt8(ascii: "s"), count: 40)
                var sent = 0
                // Send until the server answers (and closes); at 5 bytes/s the head would take 15 s.
                while sent < trickle.count, secondsSince(start) < 5 {
                    do { try client.send([trickle[sent]]) } catch { break }
                    sent += 1
                    usleep(200_000)
                    if secondsSince(start) > 3.5 { break }
                }
                let response = try client.readResponse()
                XCTAssertEqual(response.status, 408, "[\(trigger)] \(response)")
                XCTAssertLessThan(secondsSince(start), 4.0, "[\(trigger)] the trickle stretched the deadline")
                XCTAssertLessThan(sent, trickle.count, "[\(trigger)] the whole trickle went through before the 408")
            }
        }
    }

    /// A request that completes within the deadline is served, and the next
    /// request on the same connection gets a fresh deadline.
    func testCompleteHeadsBeatTheDeadline() throws {
        try forEachTrigger { trigger in
            try withServer(trigger, BuiltinApp.hello.application, configure: { $0.headerTimeout = 2; $0.idleTimeout = 0 }) { server in
                let client = try TestSocket(port: server.port)
                defer { client.close() }
                for _ in 0..<2 {
                    try client.send("GET / HTTP/1.1\r\nHo")
                    usleep(1_200_000)   // well inside the 2 s deadline of this head
                    try client.send("st: h\r\n\r\n")
                    let response = try client.readResponse()
                    XCTAssertEqual(response.status, 200, "[\(trigger)] \(response)")
                }
            }
        }
    }

    /// An idle keep-alive connection is closed quietly (no response bytes)
    /// after the idle timeout; an active one is not.
    func testIdleKeepAliveConnectionClosedQuietly() throws {
        try forEachTrigger { trigger in
            try withServer(trigger, BuiltinApp.hello.application, configure: { $0.idleTimeout = 1 }) { server in
                let idle = try TestSocket(port: server.port)
                defer { idle.close() }
                try idle.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertEqual(try idle.readResponse().status, 200, "[\(trigger)]")
                let start = ContinuousClock.now
                let rest = try idle.readUntilEOF()
                let elapsed = secondsSince(start)
                XCTAssertTrue(rest.isEmpty, "[\(trigger)] idle close must send nothing, got \(rest.count) bytes")
                XCTAssertGreaterThanOrEqual(elapsed, 0.9, "[\(trigger)] closed before the idle timeout")
                XCTAssertLessThan(elapsed, 3.5, "[\(trigger)] idle connection not closed in time")
            }
        }
    }

    func testBusyConnectionOutlivesIdleTimeout() throws {
        try forEachTrigger { trigger in
            try withServer(trigger, BuiltinApp.hello.application, configure: { $0.idleTimeout = 1 }) { server in
                let busy = try TestSocket(port: server.port)
                defer { busy.close() }
                let start = ContinuousClock.now
                while secondsSince(start) < 2.5 {   // more than twice the idle timeout
                    try busy.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                    XCTAssertEqual(try busy.readResponse().status, 200, "[\(trigger)]")
                    usleep(300_000)
                }
            }
        }
    }
}
