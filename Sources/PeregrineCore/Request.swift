// The request view every engine hands to a handler.

/// A parsed HTTP/1.x request, borrowed from the engine.
///
/// Zero-copy: every field is a slice of the connection's receive buffer.
/// **Valid only during the handler call**: the bytes are reused as soon as it
/// returns. Copy what must outlive it (`String(decoding:as:)`, `Array(...)`).
public struct Request {
    /// The method token, e.g. `GET`.
    public let method: UnsafeRawBufferPointer
    /// The request-target as sent, e.g. `/path?query`.
    public let target: UnsafeRawBufferPointer
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    public let versionMinor: Int
    /// Whether the connection stays open after this response.
    public let keepAlive: Bool
    /// The body (chunked bodies arrive decoded), empty when there is none.
    public let body: UnsafeRawBufferPointer
    /// Header records, 32 bytes each: name pointer, name length, value
    /// pointer, value length (the C `prg_header` layout; the Swift engine
    /// writes the same layout).
    @usableFromInline let headerTable: UnsafeRawPointer?
    /// Number of header fields.
    public let headerCount: Int
    /// Where `remoteAddress` comes from: a value, or the connection's record,
    /// read only when asked (most handlers never ask).
    @usableFromInline enum RemoteSource {
        case value(SocketAddress?)
        case lookup(OpaquePointer, ConnectionFunctions.RemoteAddress)
    }
    @usableFromInline let remote: RemoteSource

    /// The client: the peer address, or the source of the connection's
    /// PROXY header (`Configuration.proxyProtocol`); nil when the peer is
    /// not IP. A plain value: formatting it (`host`, `description`) allocates.
    public var remoteAddress: SocketAddress? {
        switch remote {
        case .value(let address):
            return address
        case .lookup(let handle, let lookup):
            return withUnsafeTemporaryAllocation(of: SocketAddress.self, capacity: 1) { storage in
                lookup(handle, UnsafeMutableRawPointer(storage.baseAddress)) == 0 ? storage.baseAddress!.move() : nil
            }
        }
    }

    @inlinable
    package init(method: UnsafeRawBufferPointer, target: UnsafeRawBufferPointer, versionMinor: Int,
                keepAlive: Bool, headerTable: UnsafeRawPointer?, headerCount: Int,
                body: UnsafeRawBufferPointer, remoteAddress: SocketAddress? = nil) {
        self.init(method: method, target: target, versionMinor: versionMinor, keepAlive: keepAlive,
                  headerTable: headerTable, headerCount: headerCount, body: body, remote: .value(remoteAddress))
    }

    /// The client is looked up from the connection `handle` when asked
    /// (`lookup` as `ConnectionFunctions.remoteAddress`).
    @inlinable
    package init(method: UnsafeRawBufferPointer, target: UnsafeRawBufferPointer, versionMinor: Int,
                keepAlive: Bool, headerTable: UnsafeRawPointer?, headerCount: Int,
                body: UnsafeRawBufferPointer, connection handle: OpaquePointer,
                remoteLookup lookup: ConnectionFunctions.RemoteAddress) {
        self.init(method: method, target: target, versionMinor: versionMinor, keepAlive: keepAlive,
                  headerTable: headerTable, headerCount: headerCount, body: body, remote: .lookup(handle, lookup))
    }

    @inlinable
    init(method: UnsafeRawBufferPointer, target: UnsafeRawBufferPointer, versionMinor: Int,
         keepAlive: Bool, headerTable: UnsafeRawPointer?, headerCount: Int,
         body: UnsafeRawBufferPointer, remote: RemoteSource) {
        self.method = method
        self.target = target
        self.versionMinor = versionMinor
        self.keepAlive = keepAlive
        self.headerTable = headerTable
        self.headerCount = headerCount
        self.body = body
        self.remote = remote
    }

    /// Size of one header record in `headerTable`.
    @usableFromInline package static let headerRecordSize = 32

    @inlinable
    func slice(_ index: Int, _ field: Int) -> UnsafeRawBufferPointer {
        precondition(index >= 0 && index < headerCount, "header index out of range")
        let record = headerTable! + index * Request.headerRecordSize + field * 16
        let start = record.load(as: UnsafeRawPointer?.self)
        let count = record.load(fromByteOffset: 8, as: Int.self)
        return UnsafeRawBufferPointer(start: start, count: count)
    }

    /// Name of header `index` as sent (case preserved).
    @inlinable public func headerName(at index: Int) -> UnsafeRawBufferPointer { slice(index, 0) }
    /// Value of header `index`, surrounding whitespace removed.
    @inlinable public func headerValue(at index: Int) -> UnsafeRawBufferPointer { slice(index, 1) }

    /// The value of the first header named `name` (ASCII case-insensitive),
    /// without allocating.
    @inlinable
    public func header(_ name: StaticString) -> UnsafeRawBufferPointer? {
        let wanted = UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount)
        for i in 0..<headerCount where Request.equalsIgnoringCase(headerName(at: i), wanted) {
            return headerValue(at: i)
        }
        return nil
    }

    /// The value of the first header named `name`, as a `String` (allocates).
    public func header(named name: String) -> String? {
        var name = name
        return name.withUTF8 { wanted in
            for i in 0..<headerCount where Request.equalsIgnoringCase(headerName(at: i), UnsafeRawBufferPointer(wanted)) {
                return String(decoding: headerValue(at: i), as: UTF8.self)
            }
            return nil
        }
    }

    /// True when the method is exactly `name` (case-sensitive, as RFC 9110 says).
    @inlinable
    public func methodIs(_ name: StaticString) -> Bool {
        let wanted = UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount)
        return method.elementsEqual(wanted)
    }

    /// The path part of the target (before `?`).
    @inlinable
    public var path: UnsafeRawBufferPointer {
        guard let q = target.firstIndex(of: UInt8(ascii: "?")) else { return target }
        return UnsafeRawBufferPointer(rebasing: target[..<q])
    }

    /// Copies, for logging and tests (allocate).
    public var methodString: String { String(decoding: method, as: UTF8.self) }
    public var targetString: String { String(decoding: target, as: UTF8.self) }
    public var bodyString: String { String(decoding: body, as: UTF8.self) }

    @inlinable
    static func equalsIgnoringCase(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count {
            var x = a[i], y = b[i]
            if x >= 65 && x <= 90 { x |= 0x20 }
            if y >= 65 && y <= 90 { y |= 0x20 }
            if x != y { return false }
        }
        return true
    }
}
