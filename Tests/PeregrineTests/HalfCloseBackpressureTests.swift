// Half-close combined with backpressure, and idle loops that must not spin.
import Foundation
import Peregrine
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class HalfCloseBackpressureTests: XCTestCase {
    /// Reads exactly `count` bytes slowly (64 KiB, then 1 ms), returns them.
    func slowRead(_ s: TestSocket, _ count: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var buf = [UInt8](repeating: 0, count: 64 * 1024)
        while out.count < count {
            let n = try buf.withUnsafeMutableBytes { try s.recvRaw(UnsafeMutableRawBufferPointer(rebasing: $0[0..<min($0.count, count - out.count)])) }
            if n == 0 { break }
            out += buf[0..<n]
            usleep(1000)
        }
        return out
    }

    // Raw echo: 4 MiB then FIN at once, to a slow reader, with a small output cap.
    func testEchoHalfCloseWhilePaused() throws {
        let total = 4 << 20
        let payload = (0..<total).map { UInt8(truncatingIfNeeded: $0 / 7) }
        try forEachEngine { mode in
            try withServer(mode, BuiltinApp.echo.application, configure: { $0.maxOutputPerConnection = 64 * 1024 }) { server in
                let s = try TestSocket(port: server.port)
                let err = LockedList<String>()
                let sender = TestThread {
                    do { try s.send(payload); s.shutdownWrite() } catch { err.append("\(error)") }
                }
                let got = try slowRead(s, total)
                XCTAssertTrue(sender.join(), "[\(mode)] the sender did not finish")
                XCTAssertEqual(err.all, [], "[\(mode)] sender")
                XCTAssertEqual(got.count, total, "[\(mode)] echoed bytes after FIN")
                XCTAssertTrue(got == payload, "[\(mode)] echoed content")
                XCTAssertEqual(try s.expectClose(), [], "[\(mode)] EOF once everything is echoed")
            }
        }
    }

    // HTTP: 3 pipelined 4 MiB answers, FIN right after the requests, slow reader.
    func testPipelinedBigAnswersThenHalfClose() throws {
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect, configure: { $0.maxOutputPerConnection = 64 * 1024 }) { server in
                guard mode.keepsAlive else { return }   // pipelined: one answer per connection on blocking (HTTPTests)
                let s = try TestSocket(port: server.port)
                try s.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\nGET /big HTTP/1.1\r\nHost: h\r\n\r\nGET /big HTTP/1.1\r\nHost: h\r\n\r\nGET /end HTTP/1.1\r\nHost: h\r\n\r\n")
                s.shutdownWrite()
                try s.drainSlowly()   // 64 KiB reads with 1 ms pauses, until EOF
                for i in 0..<3 {
                    let r = try s.readResponse()
                    XCTAssertEqual(r.body.count, TestApps.bigBodySize, "[\(mode)] big answer \(i) after FIN")
                }
                let last = try s.readResponse()
                XCTAssertEqual(last.fields["target"], "/end", "[\(mode)] the last pipelined answer arrived before EOF")
                XCTAssertTrue(s.pending.isEmpty, "[\(mode)] nothing after the last answer")
            }
        }
    }

    // Idle loops must sleep: a half-closed client with unread output, a paused
    // raw connection and idle keep-alive connections for 500 ms cost little CPU.
    func testLoopsDoNotSpinWhileWaiting() throws {
        func cpuSeconds() -> Double {
            var u = rusage()
            getrusage(RUSAGE_SELF.rawValue, &u)
            return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6 + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
        }
        try forEachEngine { mode in
            try withServer(mode, TestApps.inspect) { server in
                guard mode.servesConcurrently else {
                    // One client at a time: the server waits in a blocking
                    // recv on a partial head. That wait must cost nothing.
                    let partial = try TestSocket(port: server.port)
                    try partial.send("GET /x HTTP/1.1\r\nHo")
                    XCTAssertTrue(partial.waitUntilServerHasRead(), "[\(mode)] the partial head was not read")
                    let before = cpuSeconds()
                    usleep(500_000)   // the subject: CPU spent over 0.5 s of waiting
                    let used = cpuSeconds() - before
                    XCTAssertLessThan(used, 0.2, "[\(mode)] \(Int(used * 1000)) ms of CPU in 500 ms of waiting: it spins")
                    return
                }
                let half = try TestSocket(port: server.port)
                try half.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
                half.shutdownWrite()           // and never read
                let idle = try TestSocket(port: server.port)
                try idle.send("GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
                _ = try idle.readResponse()
                let partial = try TestSocket(port: server.port)
                try partial.send("GET /x HTTP/1.1\r\nHo")
                // Every connection is in the state under test: /big answered
                // and stalled, the partial head taken.
                XCTAssertTrue(half.waitReadable(), "[\(mode)] /big was not answered")
                XCTAssertTrue(partial.waitUntilServerHasRead(), "[\(mode)] the partial head was not read")
                try withServer(mode, BuiltinApp.echo.application, configure: { $0.maxOutputPerConnection = 64 * 1024 }) { echo in
                    let paused = try TestSocket(port: echo.port)
                    // Fill until the echo pauses (the kernel buffers fill both ways).
                    var sent = 0
                    let chunk = [UInt8](repeating: 7, count: 64 * 1024)
                    var tv = timeval(tv_sec: 0, tv_usec: 200_000)
                    setsockopt(paused.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                    while sent < 64 << 20 {
                        do { try paused.send(chunk); sent += chunk.count } catch { break }
                    }
                    XCTAssertLessThan(sent, 64 << 20, "[\(mode)] echo never pushed back on a client that does not read")
                    // The send above blocked for 200 ms: the echo has paused.
                    let before = cpuSeconds()
                    usleep(500_000)   // the subject: CPU spent over 0.5 s of waiting
                    let used = cpuSeconds() - before
                    XCTAssertLessThan(used, 0.2, "[\(mode)] \(Int(used * 1000)) ms of CPU in 500 ms of waiting: a loop spins")
                }
            }
        }
    }
}
