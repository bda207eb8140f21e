import CTestSupport
import Glibc
import Peregrine
import XCTest

/// The client's address costs nothing per request: on a PROXY listener, a
/// handler that reads `request.remoteAddress` (without formatting it) still
/// allocates nothing, on the C and the Swift engine.
final class ProxyAllocationTests: XCTestCase {
    /// Hello when the address is the PROXY header's, 500 otherwise (the
    /// client then never sees its Hello and fails).
    private static let helloToProxiedClient: Application = .http { request, response in
        alloc_counter_track_current_thread()
        var expected: (UInt8, UInt8, UInt8, UInt8) = (192, 0, 2, 1)
        let sameHost = withUnsafeBytes(of: &expected) { wanted in
            request.remoteAddress?.withUnsafeBytes { $0.elementsEqual(wanted) } ?? false
        }
        if sameHost && request.remoteAddress?.port == 56324 && request.remoteAddress?.family == .ipv4 {
            response.send(status: 200, contentType: "text/plain", body: "Hello, World!")
        } else {
            response.send(status: 500, contentType: "text/plain", body: "wrong address")
        }
    }

    func testReadingTheProxiedAddressAllocatesNothing() throws {
        try XCTSkipUnless(alloc_counter_available() == 1, "allocation counting is off under sanitizers (they own malloc)")
        let engines: [(String, Engine, Trigger)] = [("epoll/level", .epoll, .level), ("epoll/edge", .epoll, .edge),
                                                    ("swift/level", .swift, .level), ("swift/edge", .swift, .edge)]
        for (name, engine, trigger) in engines {
            var config = Configuration()
            config.host = "127.0.0.1"
            config.port = 0
            config.engine = engine
            config.trigger = trigger
            config.proxyProtocol = true
            let server = Server(configuration: config, application: Self.helloToProxiedClient)
            try server.start()
            defer { server.stop() }
            let client = try BlockingClient(port: server.port)
            defer { client.close() }
            let header = Array("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".utf8)
            XCTAssertEqual(header.withUnsafeBytes { send(client.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }, header.count)
            let request = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
            for _ in 0..<500 { try client.roundTrip(request, responses: 1) }   // warm-up
            let before = alloc_counter_total()
            for _ in 0..<3000 { try client.roundTrip(request, responses: 1) }
            let allocations = alloc_counter_total() - before
            print("alloc: proxied engine=\(name) requests=3000 allocations=\(allocations)")
            XCTAssertEqual(allocations, 0, "\(name): \(allocations) allocations in 3000 requests")
        }
    }
}
