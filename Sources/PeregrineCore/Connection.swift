// The raw-TCP side of the handler API.

/// The functions an engine provides for raw connections (the C engine passes
/// `prg_conn_write`, `prg_conn_close`, `prg_conn_id` themselves).
@usableFromInline package struct ConnectionFunctions: Sendable {
    @usableFromInline package typealias Write = @convention(c) (OpaquePointer?, UnsafeRawPointer?, Int) -> Int32
    @usableFromInline package typealias Close = @convention(c) (OpaquePointer?) -> Void
    @usableFromInline package typealias Identifier = @convention(c) (OpaquePointer?) -> UInt64
    @usableFromInline package typealias Pending = @convention(c) (OpaquePointer?) -> Int
    /// Stores the connection's `SocketAddress` at the pointer and returns
    /// 0, or returns -1 when none is known.
    @usableFromInline package typealias RemoteAddress = @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Int32

    @usableFromInline package var write: Write
    @usableFromInline package var close: Close
    @usableFromInline package var id: Identifier
    @usableFromInline package var pendingOutput: Pending
    @usableFromInline package var remoteAddress: RemoteAddress?

    package init(write: Write, close: Close, id: Identifier, pendingOutput: Pending, remoteAddress: RemoteAddress? = nil) {
        self.write = write
        self.close = close
        self.id = id
        self.pendingOutput = pendingOutput
        self.remoteAddress = remoteAddress
    }
}

/// A raw TCP connection as seen from a data handler. Valid only during the
/// handler call.
public struct Connection {
    @usableFromInline let handle: OpaquePointer
    @usableFromInline let functions: ConnectionFunctions

    @inlinable
    package init(handle: OpaquePointer, functions: ConnectionFunctions) {
        self.handle = handle
        self.functions = functions
    }

    /// Queues bytes for sending. `false` when the connection is closing.
    /// The engine stops reading from this client while too much is queued.
    @inlinable @discardableResult
    public func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        functions.write(handle, bytes.baseAddress, bytes.count) == 0
    }

    /// Closes once the queued output is sent.
    @inlinable public func close() { functions.close(handle) }
    /// Unique for the life of the server.
    @inlinable public var id: UInt64 { functions.id(handle) }
    /// Bytes queued and not yet sent.
    @inlinable public var pendingOutput: Int { functions.pendingOutput(handle) }
    /// The client: the peer address, or the source of the connection's
    /// PROXY header; nil when the peer is not IP.
    public var remoteAddress: SocketAddress? {
        guard let lookup = functions.remoteAddress else { return nil }
        return withUnsafeTemporaryAllocation(of: SocketAddress.self, capacity: 1) { storage in
            lookup(handle, UnsafeMutableRawPointer(storage.baseAddress)) == 0 ? storage.baseAddress!.move() : nil
        }
    }
}
