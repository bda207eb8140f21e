import CTestSupport
import Glibc
import Peregrine
import XCTest

/// The hot-path budget: a hello-world request costs no heap allocation on the
/// thread that serves it (engine and Swift handler together), in steady state,
/// on every engine that keeps connections alive.
/// Hello, with the loop thread marked for counting (a thread-local store):
/// the application every allocation test serves.
let countedHello: Application = {
    guard case .http(let hello) = BuiltinApp.hello.application else { fatalError("hello is HTTP") }
    return .http { request, response in
        alloc_counter_track_current_thread()
        hello(request, response)
    }
}()

final class AllocationTests: XCTestCase {
    /// Every engine that keeps connections alive, in every mode. The blocking
    /// engine is not here: it answers one request per connection, so each
    /// request pays for accepting and setting up a connection by design.
    private static let engines: [(name: String, configure: @Sendable (inout Configuration) -> Void)] = {
        var list: [(name: String, configure: @Sendable (inout Configuration) -> Void)] = []
        for t in Trigger.allCases { list.append(("epoll/\(t)", { $0.engine = .epoll; $0.trigger = t })) }
        for b in LibevBackend.allCases { list.append(("libev/\(b)", { $0.engine = .libev; $0.libevBackend = b })) }
        for t in [Trigger.level, .edge] { list.append(("swift/\(t)", { $0.engine = .swift; $0.trigger = t })) }
        list.append(("threaded", { $0.engine = .threaded }))
        return list
    }()

    private func allocationsPerRequest(configure: (inout Configuration) -> Void, pipelineDepth: Int) throws -> (allocations: UInt64, requests: Int) {
        var config = Configuration()
        config.host = "127.0.0.1"
        config.port = 0
        configure(&config)
        let server = Server(configuration: config, application: countedHello)
        try server.start()
        defer { server.stop() }
        let client = try BlockingClient(port: server.port)
        defer { client.close() }
        let batch = String(repeating: "GET / HTTP/1.1\r\nHost: t\r\n\r\n", count: pipelineDepth)
        // Warm-up: pools fill, Swift metadata and lazy globals are created.
        for _ in 0..<500 { try client.roundTrip(batch, responses: pipelineDepth) }
        let before = alloc_counter_total()
        let rounds = 5000 / pipelineDepth
        for _ in 0..<rounds { try client.roundTrip(batch, responses: pipelineDepth) }
        let after = alloc_counter_total()
        return (after - before, rounds * pipelineDepth)
    }

    func testHelloAllocatesNothingPerRequest() throws {
        try XCTSkipUnless(alloc_counter_available() == 1, "allocation counting is off under sanitizers (they own malloc)")
        for engine in Self.engines {
            for depth in [1, 16] {
                let (allocations, requests) = try allocationsPerRequest(configure: engine.configure, pipelineDepth: depth)
                print("alloc: engine=\(engine.name) depth=\(depth) requests=\(requests) allocations=\(allocations)")
                // Target 0 per request: allow none at all over the run.
                XCTAssertEqual(allocations, 0, "\(engine.name), depth \(depth): \(allocations) allocations in \(requests) requests")
            }
        }
    }

    func testCounterSeesAllocations() throws {
        // Guards the test above against a counter that counts nothing.
        try XCTSkipUnless(alloc_counter_available() == 1, "allocation counting is off under sanitizers (they own malloc)")
        alloc_counter_track_current_thread()
        // The test thread is the client in the other test: stop counting it.
        defer { alloc_counter_untrack_current_thread() }
        let before = alloc_counter_total()
        let p = malloc(64)
        free(p)
        var array = [Int]()
        array.append(contentsOf: 0..<100)
        XCTAssertGreaterThanOrEqual(alloc_counter_total() - before, 2, "interposed malloc must count")
        XCTAssertEqual(array.count, 100)
    }
}

/// Minimal blocking keep-alive client: sends a batch, reads until that many
/// `Hello, World!` bodies have arrived.
struct BlockingClient {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw POSIXErrorCode(rawValue: errno).map { POSIXError($0) } ?? POSIXError(.EIO) }
    }

    func roundTrip(_ batch: String, responses: Int) throws {
        var batch = batch
        let sent = batch.withUTF8 { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == batch.utf8.count else { throw POSIXError(.EIO) }
        let marker = Array("Hello, World!".utf8)
        var seen = 0, matched = 0
        var buffer = [UInt8](repeating: 0, count: 65536)
        while seen < responses {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw POSIXError(.ECONNRESET) }
            for i in 0..<n {
                if buffer[i] == marker[matched] {
                    matched += 1
                    if matched == marker.count { seen += 1; matched = 0 }
                } else {
                    matched = buffer[i] == marker[0] ? 1 : 0
                }
            }
        }
    }

    func close() { Glibc.close(fd) }
}
