// `--app stream` (BuiltinApp.stream): the chunks' count, size and timing
// over the wire, its bounds, and a client that leaves mid-stream (its job
// ends at its next chunk). Every engine streams it.
import Foundation
import Peregrine
import PeregrineCore
import XCTest

final class StreamAppTests: XCTestCase {
    /// Reads a chunked answer from `socket` after its head, returning each
    /// chunk's payload and the seconds from `start` to its arrival (the
    /// time its last byte was read). Bounded by the socket's 5 s timeouts.
    private func readChunks(_ socket: TestSocket, since start: DispatchTime) throws -> (head: String, chunks: [[UInt8]], times: [Double]) {
        var buffer: [UInt8] = []
        var tmp = [UInt8](repeating: 0, count: 65536)
        func more() throws {
            let n = try tmp.withUnsafeMutableBytes { try socket.recvRaw($0) }
            if n == 0 { throw ClientError.closed("after \(buffer.count) bytes") }
            buffer += tmp[0..<n]
        }
        func line() throws -> String {
            while true {
                if let i = (0..<max(0, buffer.count - 1)).first(where: { buffer[$0] == 13 && buffer[$0 + 1] == 10 }) {
                    let text = String(decoding: buffer[0..<i], as: UTF8.self)
                    buffer.removeFirst(i + 2)
                    return text
                }
                try more()
            }
        }
        var head = ""
        while true {
            let l = try line()
            if l.isEmpty { break }
            head += l + "\n"
        }
        var chunks: [[UInt8]] = [], times: [Double] = []
        while true {
            guard let size = Int(try line(), radix: 16) else { throw ClientError.malformed("chunk size") }
            while buffer.count < size + 2 { try more() }
            if size == 0 { break }
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9)
            chunks.append(Array(buffer[0..<size]))
            buffer.removeFirst(size + 2)
        }
        return (head, chunks, times)
    }

    /// `/?n=4&size=16&ms=150` on a raw connection: a 200, chunked, with 4
    /// chunks of 16 bytes (15 `x` and a newline), chunk i not before
    /// i × 150 ms after the request was sent and the last within its
    /// schedule plus 3 s (a loaded machine); the connection then serves
    /// its next request (the blocking engine: a new connection). The bounds' edges: n=1 with size=65536 and
    /// ms=60000 is one chunk at once; one past any bound is 400 naming them.
    func testChunkCountSizeTimingAndBounds() throws {
        try forEachEngine { mode in
            try withServer(mode, BuiltinApp.stream.application) { server in
                let (n, size, ms) = (4, 16, 150)
                let socket = try TestSocket(port: server.port)
                defer { socket.close() }
                let start = DispatchTime.now()
                try socket.send("GET /?n=\(n)&size=\(size)&ms=\(ms) HTTP/1.1\r\nHost: t\r\n\r\n")
                let (head, chunks, times) = try readChunks(socket, since: start)
                XCTAssertTrue(head.hasPrefix("HTTP/1.1 200"), "[\(mode)] \(head)")
                XCTAssertTrue(head.lowercased().contains("transfer-encoding: chunked"), "[\(mode)] \(head)")
                let expected = [UInt8](repeating: UInt8(ascii: "x"), count: size - 1) + [UInt8(ascii: "\n")]
                XCTAssertEqual(chunks, Array(repeating: expected, count: n), "[\(mode)]")
                for i in 1..<times.count {
                    XCTAssertGreaterThanOrEqual(times[i], Double(i * ms) / 1000, "[\(mode)] chunk \(i): \(times)")
                }
                XCTAssertLessThanOrEqual(times.last ?? 99, Double((n - 1) * ms) / 1000 + 3, "[\(mode)] \(times)")

                // The same connection (the blocking engine closes it: a new
                // one each): the bounds' edges, then one past.
                if !mode.keepsAlive { XCTAssertEqual(try socket.expectClose(), [], "[\(mode)] one request per connection") }
                func exchange(_ request: String) throws -> TestResponse {
                    let s = mode.keepsAlive ? socket : try TestSocket(port: server.port)
                    defer { if !mode.keepsAlive { s.close() } }
                    try s.send(request)
                    return try s.readResponse()
                }
                let one = try exchange("GET /?n=1&size=65536&ms=60000 HTTP/1.1\r\nHost: t\r\n\r\n")
                XCTAssertEqual(one.status, 200, "[\(mode)]")
                XCTAssertEqual(one.body, [UInt8](repeating: UInt8(ascii: "x"), count: 65535) + [UInt8(ascii: "\n")], "[\(mode)]")
                let bad = try exchange("GET /?n=10000&size=65537 HTTP/1.1\r\nHost: t\r\n\r\n")
                XCTAssertEqual(bad.status, 400, "[\(mode)]")
                XCTAssertEqual(bad.bodyString, "stream: /?n=N&size=S&ms=T with n 1...10000, size 1...65536, ms 0...60000\n", "[\(mode)]")
            }
        }
    }

    /// A client that leaves mid-stream ends its job: the stream's next
    /// write finds the peer gone and the job is not scheduled again (a job
    /// that missed it would go on for 10,000 chunks, 100 ms apart). Another
    /// client's stream is served meanwhile and after.
    func testClientLeavingMidStreamEndsItsJob() throws {
        try forEachEngine { mode in
            let ticker = Ticker()
            try withServer(mode, BuiltinApp.streamApplication(ticker: ticker), configure: { c in c.threads = 1 }) { server in
                let first = try TestSocket(port: server.port)
                try first.send("GET /?n=10000&size=8&ms=100 HTTP/1.1\r\nHost: t\r\n\r\n")
                var got: [UInt8] = []
                var tmp = [UInt8](repeating: 0, count: 4096)
                while !String(decoding: got, as: UTF8.self).contains("xxxxxxx\n") {
                    let n = try tmp.withUnsafeMutableBytes { try first.recvRaw($0) }
                    guard n > 0 else { return XCTFail("[\(mode)] closed before the first chunk: \(got)") }
                    got += tmp[0..<n]
                }
                XCTAssertEqual(ticker.liveJobs, 1, "[\(mode)] the stream's job is scheduled")
                first.close()

                let second = try TestSocket(port: server.port)
                defer { second.close() }
                try second.send("GET /?n=2&size=8&ms=100 HTTP/1.1\r\nHost: t\r\n\r\n")
                let (head, chunks, _) = try readChunks(second, since: DispatchTime.now())
                XCTAssertTrue(head.hasPrefix("HTTP/1.1 200"), "[\(mode)] \(head)")
                XCTAssertEqual(chunks.count, 2, "[\(mode)]")

                // Waits on the server: the left stream's job ends within a few of its ticks.
                let until = DispatchTime.now().uptimeNanoseconds + 5_000_000_000
                while ticker.liveJobs > 0 && DispatchTime.now().uptimeNanoseconds < until { usleep(10_000) }
                XCTAssertEqual(ticker.liveJobs, 0, "[\(mode)] the job of the stream whose client left ended")
            }
        }
    }
}
