// Descriptor exhaustion: the CLI server under a 64-descriptor limit faces
// 150 connections. It must shed the excess (accept and close), not spin a
// core, keep serving the connections it holds, and recover once they close.
import Foundation
import Glibc
import XCTest

final class DescriptorExhaustionTests: XCTestCase {
    /// The `peregrine` binary built beside the test bundle.
    private var cliPath: String {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [dir.appendingPathComponent("peregrine"), dir.deletingLastPathComponent().appendingPathComponent("peregrine")] {
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate.path }
        }
        return dir.appendingPathComponent("peregrine").path
    }

    private func cpuTicks(_ pid: Int32) -> Int {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)   // utime, stime
    }

    func testEMFILESheddingDoesNotSpinAndRecovers() throws {
        for (i, mode) in EngineMode.all.enumerated() {
            try exhaust(mode, port: 20000 + Int(getpid() % 5000) * 2 % 9000 + i)
        }
    }

    private func exhaust(_ mode: EngineMode, port: Int) throws {
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
        server.arguments = ["--nofile=64", cliPath, "serve", "--host", "127.0.0.1", "--port", "\(port)"] + mode.cliArguments
        let errPipe = Pipe()
        server.standardError = errPipe
        try server.run()
        defer { server.terminate(); server.waitUntilExit() }
        // Wait for the listener to answer.
        let ready = waitUntil(timeout: .seconds(5)) {
            (try? fetch(port: port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))?.status == 200
        }
        XCTAssertTrue(ready, "[\(mode)] server did not start")
        guard ready else { return }

        // Far more connections than the server has descriptors; each asks for hello.
        var clients = [TestSocket]()
        for _ in 0..<150 {
            let s = try TestSocket(port: port)
            try? s.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            clients.append(s)
        }
        // The storm has been dealt with: every client has its answer or its
        // close (one at a time: the first is being answered, the rest wait
        // in the backlog). The server now holds what descriptors it has.
        if mode.servesConcurrently {
            let settled = waitUntil(timeout: .seconds(5)) { clients.allSatisfy { $0.waitReadable(timeout: .zero) } }
            XCTAssertTrue(settled, "[\(mode)] \(clients.filter { !$0.waitReadable(timeout: .zero) }.count) clients neither answered nor shed")
        } else {
            XCTAssertTrue(clients[0].waitReadable(timeout: .seconds(5)), "[\(mode)] the first client was not answered")
        }
        let before = cpuTicks(server.processIdentifier)
        usleep(1_000_000)   // the subject: CPU spent over 1 s while out of descriptors
        let spent = cpuTicks(server.processIdentifier) - before   // clock ticks (1/100 s)
        XCTAssertLessThan(spent, 30, "[\(mode)] the server used \(spent) ticks of CPU in 1 s while out of descriptors: it spins")

        // Every client got either an answer or a clean close; none hangs.
        var answered = 0, shed = 0
        for s in clients {
            do {
                let r = try s.readResponse()
                XCTAssertEqual(r.status, 200, "[\(mode)]")
                answered += 1
            } catch ClientError.closed {
                shed += 1
            }
        }
        XCTAssertEqual(answered + shed, 150, "[\(mode)]")
        if mode.servesConcurrently {
            XCTAssertGreaterThan(answered, 0, "[\(mode)] no connection was served")
            XCTAssertGreaterThan(shed, 0, "[\(mode)] 150 connections fit in 64 descriptors?")
        } else {
            // One client at a time: the waiting ones sit in the kernel's
            // backlog, not in descriptors, so none is shed and all are served.
            XCTAssertEqual(answered, 150, "[\(mode)] the blocking engine serves every queued client in turn")
        }
        clients.forEach { $0.close() }

        // Descriptors free again: service resumes.
        let recovered = waitUntil(timeout: .seconds(4)) {
            (try? fetch(port: port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))?.status == 200
        }
        XCTAssertTrue(recovered, "[\(mode)] service did not resume after descriptors were freed")
        server.terminate()
        server.waitUntilExit()
        let log = String(decoding: errPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        guard mode.servesConcurrently else { return }
        XCTAssertTrue(log.contains("Too many open files") || log.contains("shedding"), "[\(mode)] exhaustion was not logged: \(log)")
    }
}
