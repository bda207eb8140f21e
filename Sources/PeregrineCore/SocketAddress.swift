// The client's address, as every engine reports it (`Request.remoteAddress`,
// `Connection.remoteAddress`): the peer recorded at accept, or the source a
// PROXY protocol header gave (`Configuration.proxyProtocol`).
#if canImport(Glibc)
import Glibc
#endif

/// An IP address and port. A plain value (20 bytes of storage, nothing
/// allocated); `host` and `description` format it, and allocate, only when
/// asked.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    public enum Family: UInt8, Sendable {
        case ipv4 = 4
        case ipv6 = 6
    }

    public let family: Family
    /// Host order.
    public let port: UInt16
    /// The address in network order; IPv4 uses the first 4 bytes (the rest
    /// are zero).
    @usableFromInline let storage: (UInt64, UInt64)

    /// `bytes`: 4 (IPv4) or 16 (IPv6) bytes in network order; nil when the
    /// count does not match the family.
    @inlinable
    public init?(family: Family, bytes: UnsafeRawBufferPointer, port: UInt16) {
        guard bytes.count == (family == .ipv4 ? 4 : 16) else { return nil }
        var s: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &s) { $0.copyMemory(from: bytes) }
        self.family = family
        self.port = port
        self.storage = s
    }

    /// The 4 or 16 address bytes, network order.
    @inlinable
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try Swift.withUnsafeBytes(of: storage) { try body(UnsafeRawBufferPointer(rebasing: $0[..<(family == .ipv4 ? 4 : 16)])) }
    }

    /// `192.0.2.1`, `2001:db8::1` (inet_ntop's form).
    public var host: String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let af = family == .ipv4 ? AF_INET : AF_INET6
        let ok = withUnsafeBytes { bytes in text.withUnsafeMutableBufferPointer { inet_ntop(af, bytes.baseAddress, $0.baseAddress, socklen_t($0.count)) != nil } }
        guard ok else { return "?" }
        return text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// `192.0.2.1:443`, `[2001:db8::1]:443`.
    public var description: String { family == .ipv4 ? "\(host):\(port)" : "[\(host)]:\(port)" }

    /// A `sockaddr_in`/`sockaddr_in6` (what accept4 and getpeername give);
    /// nil for another family. An IPv4 client of a dual-stack listener
    /// (`::ffff:a.b.c.d`) is reported as IPv4, as the C core does.
    package init?(sockaddr pointer: UnsafeRawPointer) {
        let family = pointer.load(as: sa_family_t.self)
        if family == sa_family_t(AF_INET) {
            let sin = pointer.loadUnaligned(as: sockaddr_in.self)
            var addr = sin.sin_addr
            let ok = Swift.withUnsafeBytes(of: &addr) { SocketAddress(family: .ipv4, bytes: $0, port: UInt16(bigEndian: sin.sin_port)) }
            guard let ok else { return nil }
            self = ok
        } else if family == sa_family_t(AF_INET6) {
            let sin6 = pointer.loadUnaligned(as: sockaddr_in6.self)
            var addr = sin6.sin6_addr
            let port = UInt16(bigEndian: sin6.sin6_port)
            let made: SocketAddress? = Swift.withUnsafeBytes(of: &addr) { b in
                let mapped = b[0..<10].allSatisfy { $0 == 0 } && b[10] == 0xFF && b[11] == 0xFF
                return mapped ? SocketAddress(family: .ipv4, bytes: UnsafeRawBufferPointer(rebasing: b[12..<16]), port: port)
                    : SocketAddress(family: .ipv6, bytes: b, port: port)
            }
            guard let made else { return nil }
            self = made
        } else {
            return nil
        }
    }

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        a.family == b.family && a.port == b.port && a.storage.0 == b.storage.0 && a.storage.1 == b.storage.1
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(family)
        hasher.combine(port)
        hasher.combine(storage.0)
        hasher.combine(storage.1)
    }
}
