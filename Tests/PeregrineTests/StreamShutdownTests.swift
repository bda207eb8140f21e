// A response stream open while the server shuts down or stops, on every
// engine mode (the blocking and threaded engines included: their
// connection threads serve the stream): a graceful shutdown lets the stream
// finish and then returns; a stop ends it at once and the producer's next
// write answers .peerGone; an async handler streaming through its writer
// is cancelled by the stop.
import Foundation
import HTTPTypes
import Peregrine
import XCTest

final class StreamShutdownTests: XCTestCase {
    /// Reads until `text` is in what the client received (5 s per read).
    private func read(_ socket: TestSocket, until text: String, into got: inout [UInt8]) throws -> Bool {
        var tmp = [UInt8](repeating: 0, count: 4096)
        while !String(decoding: got, as: UTF8.self).contains(text) {
            let n = try tmp.withUnsafeMutableBytes { try socket.recvRaw($0) }
            if n == 0 { return false }
            got += tmp[0..<n]
        }
        return true
    }

    /// The chunked body after the head (up to the last chunk), decoded.
    private func dechunk(_ raw: [UInt8]) -> String? {
        // Bytes, not Characters: Swift reads "\r\n" as one Character.
        func crlf(from i: Int) -> Int? { (i..<max(i, raw.count - 1)).first { raw[$0] == 13 && raw[$0 + 1] == 10 } }
        var at = 0
        while let e = crlf(from: at), e > at { at = e + 2 }   // the head's lines
        guard let blank = crlf(from: at), blank == at else { return nil }
        at += 2
        var body: [UInt8] = []
        while let e = crlf(from: at), let size = Int(String(decoding: raw[at..<e], as: UTF8.self), radix: 16) {
            if size == 0 { return String(decoding: body, as: UTF8.self) }
            guard e + 2 + size <= raw.count else { return nil }
            body += raw[(e + 2)..<(e + 2 + size)]
            at = e + 2 + size + 2
        }
        return nil
    }

    /// Graceful shutdown with a stream open: the stream goes on (writes
    /// accepted during the drain), ends, reaches the client whole, and
    /// shutdown returns once it did, well before its deadline.
    func testGracefulShutdownLetsAnOpenStreamFinish() throws {
        try forEachEngine { mode in
            let headed = DispatchSemaphore(value: 0)
            let go = DispatchSemaphore(value: 0)
            let results = LockedList<String>()
            let app = Application.offloaded { _, responder in
                guard let s = try? responder.stream() else { responder.send(status: 500, body: "no stream"); return }
                s.head(status: 200)
                s.write("first;")
                headed.signal()
                _ = go.wait(timeout: .now() + 20)
                for i in 0..<50 { results.append("\(s.write("part\(i);"))") }
                results.append("end \(s.end())")
            }
            let server = try startServer(mode, app)
            defer { server.stop() }
            let socket = try TestSocket(port: server.port)
            try socket.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            XCTAssertEqual(headed.wait(timeout: .now() + 10), .success, "[\(mode)] the stream began")
            var got: [UInt8] = []
            XCTAssertTrue(try read(socket, until: "first;", into: &got), "[\(mode)] the first chunk")
            let returned = DispatchSemaphore(value: 0)
            let shutdown = Thread {
                server.shutdown(deadline: .seconds(30))
                returned.signal()
            }
            shutdown.start()
            // The drain does not end the stream: shutdown is still waiting.
            XCTAssertEqual(returned.wait(timeout: .now() + 0.3), .timedOut, "[\(mode)] shutdown returned with a stream open")
            let start = DispatchTime.now()
            go.signal()
            XCTAssertTrue(try read(socket, until: "0\r\n\r\n", into: &got), "[\(mode)] the stream's end")
            let body = (0..<50).map { "part\($0);" }.joined()
            let text = String(decoding: got, as: UTF8.self)
            XCTAssertTrue(text.hasPrefix("HTTP/1.1 200"), "[\(mode)] \(text.prefix(200))")
            XCTAssertEqual(dechunk(got), "first;" + body, "[\(mode)] every chunk, in order")
            XCTAssertEqual(try socket.expectClose(), [], "[\(mode)] then the connection closes")
            XCTAssertEqual(returned.wait(timeout: .now() + 10), .success, "[\(mode)] shutdown did not return")
            let took = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
            XCTAssertLessThan(took, 10, "[\(mode)] shutdown waited for its deadline instead of the stream")
            XCTAssertEqual(results.all, Array(repeating: "ok", count: 50) + ["end ok"], "[\(mode)]")
        }
    }

    /// stop() with a stream open: its onWritable runs (the client is gone),
    /// the producer's next write answers .peerGone, and stop returns at once
    /// (it waits for the offload pool's handler, which hears the stop).
    func testStopEndsAnOpenStream() throws {
        try forEachEngine { mode in
            let headed = DispatchSemaphore(value: 0)
            let woken = DispatchSemaphore(value: 0)
            let results = LockedList<String>()
            let app = Application.offloaded { _, responder in
                guard let s = try? responder.stream() else { responder.send(status: 500, body: "no stream"); return }
                s.onWritable { woken.signal() }
                s.head(status: 200)
                s.write("first;")
                headed.signal()
                results.append("woken \(woken.wait(timeout: .now() + 10) == .success)")
                results.append("write \(s.write("late"))")
                results.append("end \(s.end())")
            }
            let server = try startServer(mode, app)
            let socket = try TestSocket(port: server.port)
            try socket.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            XCTAssertEqual(headed.wait(timeout: .now() + 10), .success, "[\(mode)] the stream began")
            let start = DispatchTime.now()
            server.stop()
            let took = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
            XCTAssertLessThan(took, 5, "[\(mode)] stop waited for the stream")
            let deadline = Date().addingTimeInterval(10)
            while results.all.count < 3 && Date() < deadline { usleep(10_000) }
            XCTAssertEqual(results.all, ["woken true", "write peerGone", "end peerGone"], "[\(mode)]")
        }
    }

    /// An async handler streaming through its writer: stop() cancels it
    /// (its suspended wait ends) and its next write throws.
    func testStopCancelsAStreamingAsyncHandler() throws {
        try forEachEngine { mode in
            let started = DispatchSemaphore(value: 0)
            let outcome = LockedList<String>()
            let app: Application = .async { _, _, writer in
                try await writer.writeHead(HTTPResponse(status: .ok))
                try await writer.write("first;")
                started.signal()
                do {
                    try await Task.sleep(for: .seconds(30))
                    outcome.append("slept")
                } catch {
                    outcome.append("cancelled")
                }
                do {
                    try await writer.write("late")
                    outcome.append("written")
                } catch {
                    outcome.append("\(error)")
                }
            }
            let server = try startServer(mode, app)
            let socket = try TestSocket(port: server.port)
            try socket.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            XCTAssertEqual(started.wait(timeout: .now() + 10), .success, "[\(mode)] the handler began")
            var got: [UInt8] = []
            XCTAssertTrue(try read(socket, until: "first;", into: &got), "[\(mode)] the first chunk")
            server.stop()
            let deadline = Date().addingTimeInterval(10)
            while outcome.all.count < 2 && Date() < deadline { usleep(10_000) }
            XCTAssertEqual(outcome.all.first, "cancelled", "[\(mode)]")
            XCTAssertEqual(outcome.all.count, 2, "[\(mode)] \(outcome.all)")
            XCTAssertNotEqual(outcome.all.last, "written", "[\(mode)] a write after the stop was taken")
        }
    }
}
