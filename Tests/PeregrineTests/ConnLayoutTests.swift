// The Swift engine's connection record is its memory per idle keep-alive
// connection: 168 bytes is one 176-byte malloc chunk, as the C engine's
// prg_conn (the benchmark's target is at most 256 bytes per idle connection,
// kernel socket aside). Growing it grows every idle connection: move what
// only a busy connection needs into ConnBusy first (as the parser of a
// request that spans reads is).
import XCTest
@testable import PeregrineSwiftEpoll

final class ConnLayoutTests: XCTestCase {
    func testConnStateFitsA176ByteMallocChunk() {
        XCTAssertLessThanOrEqual(MemoryLayout<ConnState>.stride, 168)
    }
}
