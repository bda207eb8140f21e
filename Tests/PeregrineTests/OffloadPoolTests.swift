// The offload pool's wake economy (a job queued while a worker is looking
// wakes nobody; a taken job hands the queue on) must keep its contract:
// blocking jobs spread over every worker, a burst of short jobs all run,
// the queue limit holds, and a pool runs again after shutdown.
import Foundation
import PeregrineCore
import Synchronization
import XCTest

final class OffloadPoolTests: XCTestCase {
    /// Counts arrivals; `wait` returns true once `n` arrived (bounded).
    private final class Arrivals: Sendable {
        private let count = Mutex(0)
        private let reached = DispatchSemaphore(value: 0)
        let n: Int
        init(_ n: Int) { self.n = n }
        func arrive() { if count.withLock({ $0 += 1; return $0 }) == n { reached.signal() } }
        func wait(seconds: Double) -> Bool { reached.wait(timeout: .now() + seconds) == .success }
        var value: Int { count.withLock { $0 } }
    }

    /// 4 jobs submitted at once onto 4 workers each block until all 4 are
    /// running: they pass only if every worker was woken (one wake per
    /// submit is gone, so the hand-on from a taken job must do it).
    func testBlockingJobsSubmittedTogetherRunOnEveryWorker() throws {
        for _ in 0..<20 {
            let pool = OffloadPool(threads: 4, queueLimit: 16)
            XCTAssertEqual(pool.start(), 0)
            let running = Arrivals(4)
            let release = DispatchSemaphore(value: 0)
            let done = Arrivals(4)
            for _ in 0..<4 {
                XCTAssertTrue(pool.submit {
                    running.arrive()
                    _ = release.wait(timeout: .now() + 10)
                    done.arrive()
                })
            }
            XCTAssertTrue(running.wait(seconds: 10), "only \(running.value) of 4 jobs ran at once")
            for _ in 0..<4 { release.signal() }
            XCTAssertTrue(done.wait(seconds: 10))
            pool.shutdown()
        }
    }

    /// A job submitted while every other worker blocks still gets the idle
    /// one (it was asleep: the submit must wake it).
    func testJobReachesTheLastIdleWorkerWhileOthersBlock() throws {
        let pool = OffloadPool(threads: 3, queueLimit: 4)
        XCTAssertEqual(pool.start(), 0)
        defer { pool.shutdown() }
        let release = DispatchSemaphore(value: 0)
        let blocked = Arrivals(2)
        for _ in 0..<2 {
            XCTAssertTrue(pool.submit { blocked.arrive(); _ = release.wait(timeout: .now() + 10) })
        }
        XCTAssertTrue(blocked.wait(seconds: 10))
        let third = Arrivals(1)
        XCTAssertTrue(pool.submit { third.arrive() })
        XCTAssertTrue(third.wait(seconds: 10), "the third worker was not woken")
        release.signal(); release.signal()
    }

    /// 20,000 short jobs from 2 submitting threads all run exactly once.
    func testBurstOfShortJobsAllRun() throws {
        let pool = OffloadPool(threads: 4, queueLimit: 100_000)
        XCTAssertEqual(pool.start(), 0)
        defer { pool.shutdown() }
        let total = 20_000
        let ran = Arrivals(total)
        DispatchQueue.concurrentPerform(iterations: 2) { _ in
            for _ in 0..<(total / 2) { XCTAssertTrue(pool.submit { ran.arrive() }) }
        }
        XCTAssertTrue(ran.wait(seconds: 30), "\(ran.value) of \(total) ran")
        XCTAssertEqual(ran.value, total)
    }

    /// threads + queueLimit jobs are taken while the workers block; the next
    /// is refused; after they finish the pool takes jobs again.
    func testQueueLimitHoldsAndFrees() throws {
        let pool = OffloadPool(threads: 2, queueLimit: 3)
        XCTAssertEqual(pool.start(), 0)
        defer { pool.shutdown() }
        let release = DispatchSemaphore(value: 0)
        let done = Arrivals(5)
        for _ in 0..<5 {
            XCTAssertTrue(pool.submit { _ = release.wait(timeout: .now() + 10); done.arrive() })
        }
        XCTAssertFalse(pool.submit {}, "a 6th job was taken beyond 2 workers + 3 queued")
        for _ in 0..<5 { release.signal() }
        XCTAssertTrue(done.wait(seconds: 10))
        let after = Arrivals(1)
        XCTAssertTrue(pool.submit { after.arrive() })
        XCTAssertTrue(after.wait(seconds: 10))
    }

    /// A pool shut down and started again wakes its new workers.
    func testRestartAfterShutdownRunsJobs() throws {
        let pool = OffloadPool(threads: 2, queueLimit: 4)
        for round in 0..<3 {
            XCTAssertEqual(pool.start(), 0)
            let ran = Arrivals(4)
            for _ in 0..<4 { XCTAssertTrue(pool.submit { ran.arrive() }) }
            XCTAssertTrue(ran.wait(seconds: 10), "round \(round): \(ran.value) of 4")
            pool.shutdown()
            XCTAssertFalse(pool.submit {}, "round \(round): a stopped pool took a job")
        }
    }
}
