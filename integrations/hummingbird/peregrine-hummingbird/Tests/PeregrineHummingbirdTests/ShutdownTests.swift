// HummingbirdServer as a swift-service-lifecycle Service: graceful shutdown
// of its ServiceGroup answers the request in flight, takes no new ones, and
// returns; cancellation stops it at once.
import Hummingbird
import PeregrineHummingbird
import ServiceLifecycle
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// True once connecting to `port` is refused.
func connectionRefused(port: Int) -> Bool {
    do {
        let c = try TestConnection(port: port)
        c.close()
        return false
    } catch ClientError.system(_, let e) {
        return e == ECONNREFUSED
    } catch {
        return false
    }
}

/// Waits (bounded) until the server has a port.
func boundPort(_ server: Server) async throws -> Int {
    let deadline = ContinuousClock.now + .seconds(10)
    while server.port == 0 {
        guard ContinuousClock.now < deadline else { throw ClientError.timeout("the server did not start") }
        try await Task.sleep(for: .milliseconds(5))
    }
    return server.port
}

final class ShutdownTests: XCTestCase {
    func testGracefulShutdownAnswersTheRequestInFlight() async throws {
        for mode in EngineMode.underTest {
            let gate = Gate()
            let router = Router(context: PeregrineRequestContext.self)
            router.get("/slow") { _, _ in
                await gate.pass()
                return "finished after the shutdown began"
            }
            let service = HummingbirdServer(router: router, configuration: mode.configuration(), logger: quietLogger)
            let group = ServiceGroup(configuration: .init(services: [service], logger: quietLogger))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                let port = try await boundPort(service.server)
                let c = try TestConnection(port: port)
                try c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                let arrived = try await blocking { gate.waitForArrival() }
                XCTAssertTrue(arrived, "[\(mode)] the request reached its handler")

                await group.triggerGracefulShutdown()
                // Draining: the listener is closed (bounded wait), the request still open.
                let refused = try await blocking {
                    let deadline = ContinuousClock.now + .seconds(10)
                    while !connectionRefused(port: port) {
                        if ContinuousClock.now > deadline { return false }
                        usleep(5_000)
                    }
                    return true
                }
                XCTAssertTrue(refused, "[\(mode)] new connections are refused once shutdown began")

                gate.open()
                let r = try await blocking { try c.readResponse() }
                XCTAssertEqual(r.status, 200, "[\(mode)] \(r)")
                XCTAssertEqual(r.bodyString, "finished after the shutdown began", "[\(mode)]")
                // The group's run returns once the server is stopped.
                try await tasks.next()
            }
        }
    }

    func testCancellationStopsTheServer() async throws {
        for mode in EngineMode.underTest {
            let router = Router(context: PeregrineRequestContext.self)
            router.get("/") { _, _ in "up" }
            let service = HummingbirdServer(router: router, configuration: mode.configuration(), logger: quietLogger)
            let task = Task { try await service.run() }
            let port = try await boundPort(service.server)
            let r = try await blocking { try fetch(port: port, "/") }
            XCTAssertEqual(r.bodyString, "up", "[\(mode)]")
            task.cancel()
            _ = try? await task.value   // returns: the server stopped
            XCTAssertTrue(connectionRefused(port: port), "[\(mode)] nothing listens after cancellation")
        }
    }
}
