// What a connection costs: TCP_NODELAY comes from the listener (no setsockopt
// per connection), and it is in effect on every accepted socket all the same.
import Foundation
import Glibc
import Peregrine
import XCTest

final class ConnectionCostTests: XCTestCase {
    private func port(_ fd: Int32, peer: Bool) -> Int? {
        var addr = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { peer ? getpeername(fd, $0, &len) : getsockname(fd, $0, &len) }
        }
        guard rc == 0 else { return nil }
        switch Int32(addr.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) } }
        case AF_INET6:
            return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) } }
        default:
            return nil
        }
    }

    /// The server runs in this process: its end of the client's connection is
    /// the descriptor bound to the server's port whose peer is the client.
    private func acceptedSocket(serverPort: Int, clientPort: Int) -> Int32? {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return nil }
        for name in names {
            guard let fd = Int32(name) else { continue }
            if port(fd, peer: false) == serverPort && port(fd, peer: true) == clientPort { return fd }
        }
        return nil
    }

    /// TCP_NODELAY is set once on the listener and accepted sockets copy it:
    /// with noDelay each accepted socket has it, without it none has.
    func testAcceptedSocketsHaveTCPNoDelayAsConfigured() throws {
        try forEachEngine { mode in
            for noDelay in [true, false] {
                try withServer(mode, BuiltinApp.hello.application, configure: { $0.noDelay = noDelay }) { server in
                    let client = try TestSocket(port: server.port)   // sends nothing: the server is waiting for it
                    defer { client.close() }
                    let clientPort = try XCTUnwrap(port(client.fd, peer: false), "[\(mode)] client port")
                    let deadline = ContinuousClock.now + .seconds(10)
                    var accepted: Int32?
                    while accepted == nil && ContinuousClock.now < deadline {
                        accepted = acceptedSocket(serverPort: server.port, clientPort: clientPort)
                        if accepted == nil { usleep(10_000) }   // the server's loop has not accepted yet
                    }
                    let fd = try XCTUnwrap(accepted, "[\(mode)] the server did not accept within 10 s")
                    var value: Int32 = -1
                    var len = socklen_t(MemoryLayout<Int32>.size)
                    XCTAssertEqual(getsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &value, &len), 0, "[\(mode)] getsockopt")
                    XCTAssertEqual(value != 0, noDelay, "[\(mode)] noDelay=\(noDelay): TCP_NODELAY on the accepted socket is \(value)")
                }
            }
        }
    }
}
