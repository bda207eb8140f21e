// With metrics on, counting a request allocates nothing itself: the handles
// come from ServerMetrics' tables, and a backend whose handlers do not
// allocate (as here: atomics) keeps the hello request at 0 allocations.
import CTestSupport
import CoreMetrics
import Glibc
import Peregrine
import Synchronization
import XCTest

/// A metrics backend that only adds into atomics (Double values as Int64 bits
/// would need a loop; these count whole units, enough for this test).
private final class AtomicHandler: CounterHandler, FloatingPointCounterHandler, MeterHandler, RecorderHandler, TimerHandler, Sendable {
    let value = Atomic<Int64>(0)
    let updates = Atomic<Int64>(0)
    func increment(by amount: Int64) { value.add(amount, ordering: .relaxed); updates.add(1, ordering: .relaxed) }
    func increment(by amount: Double) { increment(by: Int64(amount)) }
    func decrement(by amount: Double) { value.subtract(Int64(amount), ordering: .relaxed); updates.add(1, ordering: .relaxed) }
    func set(_ value: Int64) { self.value.store(value, ordering: .relaxed); updates.add(1, ordering: .relaxed) }
    func set(_ value: Double) { set(Int64(value)) }
    func record(_ value: Int64) { set(value) }
    func record(_ value: Double) { set(Int64(value)) }
    func recordNanoseconds(_ duration: Int64) { updates.add(1, ordering: .relaxed) }
    func reset() { value.store(0, ordering: .relaxed) }
}

private final class AtomicMetrics: MetricsFactory, Sendable {
    let handlers = Mutex<[String: AtomicHandler]>([:])
    private func handler(_ label: String, _ dimensions: [(String, String)]) -> AtomicHandler {
        let key = label + dimensions.map { "|\($0.0)=\($0.1)" }.joined()
        return handlers.withLock { table in
            if let h = table[key] { return h }
            let h = AtomicHandler()
            table[key] = h
            return h
        }
    }
    func updates(_ label: String, _ dimensions: [(String, String)] = []) -> Int64 {
        handler(label, dimensions).updates.load(ordering: .relaxed)
    }
    func makeCounter(label: String, dimensions: [(String, String)]) -> CounterHandler { handler(label, dimensions) }
    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> FloatingPointCounterHandler { handler(label, dimensions) }
    func makeMeter(label: String, dimensions: [(String, String)]) -> MeterHandler { handler(label, dimensions) }
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> RecorderHandler { handler(label, dimensions) }
    func makeTimer(label: String, dimensions: [(String, String)]) -> TimerHandler { handler(label, dimensions) }
    func destroyCounter(_ handler: CounterHandler) {}
    func destroyMeter(_ handler: MeterHandler) {}
    func destroyRecorder(_ handler: RecorderHandler) {}
    func destroyTimer(_ handler: TimerHandler) {}
}

final class MetricsAllocationTests: XCTestCase {
    func testCountingARequestAllocatesNothing() throws {
        try XCTSkipUnless(alloc_counter_available() == 1, "allocation counting is off under sanitizers (they own malloc)")
        let engines: [(String, Engine, Trigger)] = [("epoll/level", .epoll, .level), ("swift/edge", .swift, .edge), ("libev", .libev, .level)]
        for (name, engine, trigger) in engines {
            let metrics = AtomicMetrics()
            var config = Configuration()
            config.host = "127.0.0.1"
            config.port = 0
            config.engine = engine
            config.trigger = trigger
            config.metricsFactory = metrics
            let server = Server(configuration: config, application: countedHello)
            try server.start()
            defer { server.stop() }
            let client = try BlockingClient(port: server.port)
            defer { client.close() }
            let request = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
            for _ in 0..<500 { try client.roundTrip(request, responses: 1) }   // warm-up: the tables fill
            let before = alloc_counter_total()
            for _ in 0..<5000 { try client.roundTrip(request, responses: 1) }
            let allocations = alloc_counter_total() - before
            print("alloc: metrics on, engine=\(name) requests=5000 allocations=\(allocations)")
            XCTAssertEqual(allocations, 0, "\(name): \(allocations) allocations in 5000 requests with metrics on")
            // The requests were counted (the warm-up's too).
            XCTAssertEqual(metrics.updates(ServerMetrics.requestsLabel, [("status", "200")]), 5500, name)
        }
    }
}
