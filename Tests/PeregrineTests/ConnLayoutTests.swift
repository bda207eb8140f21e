// The Swift engine's connection record is its memory per idle keep-alive
// connection: 248 bytes is one 256-byte malloc chunk (issue 15's target).
// Growing it past that grows every idle connection: move what only a busy
// connection needs into ConnBusy first.
import XCTest
@testable import PeregrineSwiftEpoll

final class ConnLayoutTests: XCTestCase {
    func testConnStateFitsA256ByteMallocChunk() {
        XCTAssertLessThanOrEqual(MemoryLayout<ConnState>.stride, 248)
    }
}
