import CTestSupport
import Glibc
import Peregrine
import XCTest

/// The loop's once-a-second tick (Date header, timeout sweep) is part of the
/// steady state too: serving across it allocates nothing. libev's first timer
/// expiry used to allocate once, a second after the first connection, which
/// AllocationTests (a few hundred ms of requests) only saw when the machine
/// was slow enough to stretch it past that second.
final class TickAllocationTests: XCTestCase {
    /// The event-loop engines (the tick is theirs; the threaded engine's
    /// per-connection threads wake from their receive timeout instead).
    private static let engines: [(name: String, configure: @Sendable (inout Configuration) -> Void)] = {
        var list: [(name: String, configure: @Sendable (inout Configuration) -> Void)] = []
        list.append(("epoll/level", { $0.engine = .epoll; $0.trigger = .level }))
        for b in LibevBackend.allCases { list.append(("libev/\(b)", { $0.engine = .libev; $0.libevBackend = b })) }
        list.append(("swift/level", { $0.engine = .swift; $0.trigger = .level }))
        return list
    }()

    /// Time is what is under test here: the window must hold the loop's first
    /// tick, which comes at most a second after the first connection made a
    /// timeout pending.
    private static let window: Duration = .milliseconds(1600)

    func testServingAcrossTheTickAllocatesNothing() throws {
        try XCTSkipUnless(alloc_counter_available() == 1, "allocation counting is off under sanitizers (they own malloc)")
        for engine in Self.engines {
            var config = Configuration()
            config.host = "127.0.0.1"
            config.port = 0
            engine.configure(&config)
            let server = Server(configuration: config, application: countedHello)
            try server.start()
            defer { server.stop() }
            let clock = ContinuousClock()
            let connected = clock.now
            let client = try BlockingClient(port: server.port)
            defer { client.close() }
            let request = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
            for _ in 0..<500 { try client.roundTrip(request, responses: 1) }   // warm-up: pools fill
            let before = alloc_counter_total()
            var requests = 0
            while clock.now - connected < Self.window {
                try client.roundTrip(request, responses: 1)
                requests += 1
            }
            let allocations = alloc_counter_total() - before
            print("alloc: across the tick, engine=\(engine.name) requests=\(requests) allocations=\(allocations)")
            XCTAssertEqual(allocations, 0, "\(engine.name): \(allocations) allocations in \(requests) requests across the loop's first tick")
        }
    }
}
