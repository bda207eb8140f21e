// The response writer every engine hands to a handler.
#if canImport(Glibc)
import Glibc
#endif

/// The functions an engine provides to write a response. They match the C
/// core's `prg_respond` / `prg_write_header` / `prg_write_body` / `prg_end` /
/// `prg_send` / `prg_response_status`, so the C engine passes those functions
/// themselves: writing a response costs no Swift thunk and no allocation.
/// Every function returns 0 on success and -1 on failure.
@usableFromInline package struct ResponseWriterFunctions: Sendable {
    @usableFromInline package typealias Respond = @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, Int) -> Int32
    @usableFromInline package typealias WriteHeader = @convention(c) (OpaquePointer?, UnsafePointer<CChar>?, Int, UnsafePointer<CChar>?, Int) -> Int32
    @usableFromInline package typealias WriteBody = @convention(c) (OpaquePointer?, UnsafeRawPointer?, Int) -> Int32
    @usableFromInline package typealias End = @convention(c) (OpaquePointer?) -> Int32
    @usableFromInline package typealias Send = @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, Int, UnsafeRawPointer?, Int) -> Int32
    @usableFromInline package typealias Status = @convention(c) (OpaquePointer?) -> Int32
    @usableFromInline package typealias Replace = @convention(c) (OpaquePointer?, Int32) -> Int32
    /// `prg_write_file`: (sink, fd, offset, length); takes fd whatever it returns.
    @usableFromInline package typealias WriteFile = @convention(c) (OpaquePointer?, Int32, Int64, Int64) -> Int32

    @usableFromInline package var respond: Respond
    @usableFromInline package var writeHeader: WriteHeader
    @usableFromInline package var writeBody: WriteBody
    @usableFromInline package var end: End
    @usableFromInline package var send: Send
    @usableFromInline package var status: Status
    @usableFromInline package var writeFile: WriteFile
    /// `prg_response_replace`: nil for a writer that cannot take back a response.
    @usableFromInline package var replace: Replace?
    /// Answer later: stores the engine's handle at the second argument, an
    /// initialized `(any DeferredAnswerEngine)?` (typed by the engine, so the
    /// caller casts nothing), and returns `true`; `false` when an answer
    /// already began (or no memory for the handle). nil: the writer cannot
    /// defer.
    @usableFromInline package typealias DeferAnswer = @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Bool
    @usableFromInline package var deferAnswer: DeferAnswer?

    package init(respond: Respond, writeHeader: WriteHeader, writeBody: WriteBody, end: End,
                send: Send, status: Status, writeFile: WriteFile, replace: Replace? = nil,
                deferAnswer: DeferAnswer? = nil) {
        self.respond = respond
        self.writeHeader = writeHeader
        self.writeBody = writeBody
        self.end = end
        self.send = send
        self.status = status
        self.writeFile = writeFile
        self.replace = replace
        self.deferAnswer = deferAnswer
    }
}

/// Why `Response.sendFile` refused a file range. The descriptor is closed
/// in every case.
public enum FileSendError: Error, Equatable, CustomStringConvertible {
    /// An argument out of range: `descriptor`, `offset` or `length` was negative.
    case invalidArgument(name: String, value: Int64)
    /// The writer refused: no `Content-Length` was declared, or it has less
    /// room left than `length`, or the body is finished, or the connection
    /// is closing (or memory ran out).
    case refused(length: Int64)

    public var description: String {
        switch self {
        case .invalidArgument(let name, let value):
            return "sendFile: \(name) must be >= 0 (got \(value))"
        case .refused(let length):
            return "sendFile: \(length) bytes refused: declare a Content-Length with room for them first, before end()"
        }
    }
}

/// Writes the answer to one request straight into the connection's send
/// buffer. Valid only during the handler call.
///
/// Either call `send(...)` once, or `begin`, any `header`s, any `write`s and
/// `end`. Without a `Content-Length` header the body is sent chunked
/// (HTTP/1.1) or delimited by closing the connection (HTTP/1.0). A handler
/// that returns without answering gets a 500; one that began but did not end
/// is ended for it.
public struct Response {
    @usableFromInline let sink: OpaquePointer
    @usableFromInline let functions: ResponseWriterFunctions

    @inlinable
    package init(sink: OpaquePointer, functions: ResponseWriterFunctions) {
        self.sink = sink
        self.functions = functions
    }

    /// One-shot answer with a static body: no allocation.
    @inlinable @discardableResult
    public func send(status: Int = 200, contentType: StaticString = "text/plain", body: StaticString) -> Bool {
        contentType.withUTF8Buffer { ct in
            functions.send(sink, Int32(truncatingIfNeeded: status),
                           UnsafeRawPointer(ct.baseAddress)?.assumingMemoryBound(to: CChar.self), ct.count,
                           UnsafeRawPointer(body.utf8Start), body.utf8CodeUnitCount) == 0
        }
    }

    /// One-shot answer with a byte body.
    @inlinable @discardableResult
    public func send(status: Int = 200, contentType: StaticString = "text/plain", bytes: UnsafeRawBufferPointer) -> Bool {
        contentType.withUTF8Buffer { ct in
            functions.send(sink, Int32(truncatingIfNeeded: status),
                           UnsafeRawPointer(ct.baseAddress)?.assumingMemoryBound(to: CChar.self), ct.count,
                           bytes.baseAddress, bytes.count) == 0
        }
    }

    /// One-shot answer with a `String` (or `Substring`) body. Generic and
    /// disfavoured so that a literal body (`send(body: "Hello")`) takes the
    /// StaticString overload above, which passes the bytes straight through:
    /// a non-generic `String` overload wins over it for literals, even
    /// disfavoured (Swift 6.3), and costs a String's copies per call.
    @_disfavoredOverload @discardableResult @inlinable
    public func send<Body: StringProtocol>(status: Int = 200, contentType: String = "text/plain", body: Body) -> Bool {
        var contentType = contentType, body = String(body)
        return contentType.withUTF8 { ct in
            body.withUTF8 { b in
                functions.send(sink, Int32(truncatingIfNeeded: status),
                               UnsafeRawPointer(ct.baseAddress)?.assumingMemoryBound(to: CChar.self), ct.count,
                               UnsafeRawPointer(b.baseAddress), b.count) == 0
            }
        }
    }

    /// Starts a response: status line, `Server` and `Date`. `false` if one
    /// was already started or the status is outside 200...999 (interim 1xx
    /// answers belong to the engine: it sends `100 Continue` itself).
    @discardableResult
    public func begin(status: Int, reason: String? = nil) -> Bool {
        guard var reason else { return functions.respond(sink, Int32(truncatingIfNeeded: status), nil, 0) == 0 }
        return reason.withUTF8 { r in
            functions.respond(sink, Int32(truncatingIfNeeded: status),
                              UnsafeRawPointer(r.baseAddress)?.assumingMemoryBound(to: CChar.self), r.count) == 0
        }
    }

    /// Adds a header. `false` (and nothing written) when the name is not a
    /// token, the value holds CR, LF or NUL, or the head is already ended.
    /// Framing and keep-alive are the engine's: `Transfer-Encoding` is
    /// refused, and `Connection` is accepted only as `close`.
    @discardableResult
    public func header(_ name: String, _ value: String) -> Bool {
        var name = name, value = value
        return name.withUTF8 { n in
            value.withUTF8 { v in
                functions.writeHeader(sink, UnsafeRawPointer(n.baseAddress)?.assumingMemoryBound(to: CChar.self), n.count,
                                      UnsafeRawPointer(v.baseAddress)?.assumingMemoryBound(to: CChar.self), v.count) == 0
            }
        }
    }

    /// Appends body bytes.
    @inlinable @discardableResult
    public func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        functions.writeBody(sink, bytes.baseAddress, bytes.count) == 0
    }

    /// Appends a `String` as body bytes.
    @discardableResult
    public func write(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { functions.writeBody(sink, UnsafeRawPointer($0.baseAddress), $0.count) == 0 }
    }

    /// Appends `length` bytes of the open file `descriptor`, from `offset`,
    /// to the body without copying them through user space: the engine
    /// queues the range in its place among the body bytes written before and
    /// after, and sends it with sendfile(2) when its turn comes.
    ///
    /// Declare the length first: `begin`, `header("Content-Length", ...)`
    /// with room for `length` (a file range is never chunked), then
    /// `sendFile`, then `end()`. On a HEAD request (or a 304) nothing is sent
    /// and the length still counts.
    ///
    /// Ownership: the descriptor is the engine's from this call on, whether
    /// it returns or throws. It is closed once the range is sent, when the
    /// connection closes (a client that leaves mid-file), or at once when
    /// nothing is sent or the call throws. Do not close or reuse it. A file
    /// that turns out shorter than `length` closes the connection.
    public func sendFile(descriptor: Int32, offset: Int64 = 0, length: Int64) throws(FileSendError) {
        func refuse(_ error: FileSendError) -> FileSendError {
            if descriptor >= 0 { _ = close(descriptor) }
            return error
        }
        guard descriptor >= 0 else { throw refuse(.invalidArgument(name: "descriptor", value: Int64(descriptor))) }
        guard offset >= 0 else { throw refuse(.invalidArgument(name: "offset", value: offset)) }
        guard length >= 0 else { throw refuse(.invalidArgument(name: "length", value: length)) }
        // The engine closes the descriptor itself when it refuses.
        if functions.writeFile(sink, descriptor, offset, length) != 0 { throw .refused(length: length) }
    }

    /// Finishes the response. `false` when the body did not match the
    /// declared `Content-Length` (the connection is then closed).
    @inlinable @discardableResult
    public func end() -> Bool { functions.end(sink) == 0 }

    /// The engine's handle for the connection being answered (for engines:
    /// the C core's `prg_conn`, the Swift engine's connection record).
    @inlinable package var engineHandle: OpaquePointer { sink }

    /// This request will be answered later, from any thread, through the
    /// returned handle (the handler may return at once; later pipelined
    /// answers wait behind it). nil when an answer already began (or the
    /// engine is out of memory for the handle).
    package func deferAnswer() -> (any DeferredAnswerEngine)? {
        guard let make = functions.deferAnswer else { return nil }
        var made: (any DeferredAnswerEngine)? = nil
        guard withUnsafeMutablePointer(to: &made, { make(sink, UnsafeMutableRawPointer($0)) }),
              let engine = made else { return nil }
        return AnswerWatch.wrap(engine)   // under the access log or metrics: reported when complete
    }

    /// The status written so far (0 before `begin`/`send`).
    @inlinable public var status: Int { Int(functions.status(sink)) }

    /// Takes back the response begun in this handler (nothing of it has
    /// left yet) and answers `status` (400...599) with `Connection: close`
    /// instead. `false` when no response was begun in this handler call (or
    /// the writer cannot take one back): the one begun is then ended as is.
    @discardableResult
    public func replace(status: Int) -> Bool {
        guard let replace = functions.replace else { return false }
        return replace(sink, Int32(truncatingIfNeeded: status)) == 0
    }
}
