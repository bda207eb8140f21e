// Socket-level modes: urgent (out-of-band) data, TCP_CORK versus TCP_NODELAY.
import Foundation
import Glibc
import Peregrine
import XCTest

final class SocketModeTests: XCTestCase {
    private func cpuSeconds() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6
            + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
    }

    /// Urgent data raises EPOLLPRI. The loop reads and drops it: requests on
    /// either side are answered, and the level-triggered loop does not spin
    /// on an EPOLLPRI that is never consumed.
    func testUrgentDataIsDiscardedWithoutSpinning() throws {
        try forEachEngine { mode in
            try withServer(mode, BuiltinApp.hello.application) { server in
                let client = try Session(mode, port: server.port)
                try client.send("GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertEqual(try client.readResponse().status, 200, "[\(mode)]")
                var urgent: UInt8 = 0x21
                XCTAssertEqual(Glibc.send(try client.socket.fd, &urgent, 1, Int32(MSG_OOB)), 1, "[\(mode)] send MSG_OOB")
                // Measured from the moment the urgent byte is sent: a loop that
                // spins on it spins through the whole window.
                let before = cpuSeconds()
                usleep(400_000)   // the subject: CPU spent over 0.4 s of idling after urgent data
                let spent = cpuSeconds() - before
                XCTAssertLessThan(spent, 0.15, "[\(mode)] \(spent) s of CPU in 0.4 s idle after urgent data: the loop spins on EPOLLPRI")
                try client.send("GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
                let after = try client.readResponse()
                XCTAssertEqual(after.status, 200, "[\(mode)] \(after)")
                XCTAssertEqual(String(decoding: after.body, as: UTF8.self), "Hello, World!", "[\(mode)] the urgent byte must not leak into the stream")
            }
        }
    }

    /// With --cork and without TCP_NODELAY, 16 pipelined requests get their
    /// 16 answers in order, and so does a lone request (uncorking flushes it:
    /// nothing waits for the 200 ms cork timer).
    func testCorkModeAnswersPipelinedAndSingleRequests() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: { $0.cork = true; $0.noDelay = false }) { server in
                let client = try Session(mode, port: server.port)
                if mode.keepsAlive {   // pipelined: one answer per connection on blocking (HTTPTests)
                    try client.send((0..<16).map { "GET /\($0) HTTP/1.1\r\nHost: h\r\n\r\n" }.joined())
                    for i in 0..<16 {
                        let r = try client.readResponse()
                        XCTAssertEqual(r.status, 200, "[\(mode)] response \(i)")
                        XCTAssertTrue(String(decoding: r.body, as: UTF8.self).contains("target=/\(i)\n"), "[\(mode)] response \(i) out of order")
                    }
                }
                let start = ContinuousClock.now
                for _ in 0..<5 {
                    try client.send("GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                    XCTAssertEqual(try client.readResponse().status, 200, "[\(mode)]")
                }
                XCTAssertLessThan(ContinuousClock.now - start, .milliseconds(500),
                                  "[\(mode)] corked answers waited for the cork timer")
            }
        }
    }
}
