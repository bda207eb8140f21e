// A response written over time, from any thread: the Swift face of the
// engines' response-stream model (csrc/offload.c, prg_stream_*). Each
// operation is a state transition checked by the engine
//     OPEN --head--> HEADED --write*--> --end--> ENDED
// and the engine may end it first (handler timeout before the head: the
// client got 503; the client left). The engine answers every operation
// with the C core's codes (0, 1 = above the high mark, -errno); the
// mapping to `StreamWriteResult` is written once, here, for every engine.
#if canImport(Glibc)
import Glibc
#endif

/// What an engine provides for a response stream. Codes as prg_stream_*:
/// `0` taken, `1` taken but above the high mark (wait for `onWritable`),
/// `-EPROTO`, `-EALREADY`, `-ECONNRESET`, `-ETIMEDOUT`, `-EMSGSIZE`,
/// `-ENOMEM`, `-EINVAL`. The engine gives its handle back when the object
/// goes (deinit): before the head the client gets 500, after it the
/// connection is closed after what was written.
package protocol ResponseStreamEngine: AnyObject, Sendable {
    /// A header for the head (before `head`).
    func streamHeader(name: String, value: String) -> Int32
    func streamHead(status: Int) -> Int32
    func streamWrite(_ bytes: UnsafeRawBufferPointer) -> Int32
    func streamTrailer(name: String, value: String) -> Int32
    func streamEnd() -> Int32
    /// Runs `callback` on the engine's loop when a writer told `.wouldBlock`
    /// may write again, or the client left. nil stops it.
    func streamOnWritable(_ callback: (@Sendable () -> Void)?)
}

/// A request's answer owed later (`Response.deferAnswer()`): either one
/// complete answer, or a stream (the `ResponseStreamEngine` operations).
/// Released without either: the client gets 500.
package protocol DeferredAnswerEngine: ResponseStreamEngine {
    /// The one-shot answer (a head, one write and the end, posted at once).
    /// `true` when it will reach the client.
    func complete(_ answer: OffloadAnswer) -> Bool
}

/// Why an operation was refused (other than the client leaving or the end).
public enum StreamRefusal: Sendable, Equatable {
    /// A write, trailer or end before `head`.
    case notHeaded
    /// No head within `Configuration.handlerTimeout`: the client got 503.
    case timedOut
    /// A write beyond the `Content-Length` given in the head (nothing was
    /// queued), or an end short of it (the connection closes after the body).
    case contentLength
    case noMemory
    case invalidArgument
    /// Another errno from the engine.
    case failed(Int32)
}

public enum StreamWriteResult: Sendable, Equatable {
    /// Taken.
    case ok
    /// Taken, but the stream holds more than its high mark (256 KiB): wait
    /// for `onWritable` before writing more.
    case wouldBlock
    /// The client left (or the server stopped): nothing more reaches it.
    case peerGone
    /// Already ended (or the head given twice).
    case ended
    case refused(StreamRefusal)

    /// The result for an engine code.
    package init(code: Int32) {
        switch code {
        case 0: self = .ok
        case 1: self = .wouldBlock
        case -ECONNRESET: self = .peerGone
        case -EALREADY: self = .ended
        case -EPROTO: self = .refused(.notHeaded)
        case -ETIMEDOUT: self = .refused(.timedOut)
        case -EMSGSIZE: self = .refused(.contentLength)
        case -ENOMEM: self = .refused(.noMemory)
        case -EINVAL: self = .refused(.invalidArgument)
        default: self = .refused(.failed(-code))
        }
    }

    /// `.ok` or `.wouldBlock`: the bytes will reach the client.
    public var isAccepted: Bool { self == .ok || self == .wouldBlock }
}

/// `Responder.stream()` on a responder whose answer is waited for, not
/// deferred (the engine could not defer it, or a wrapper answers once).
public struct ResponseStreamUnsupported: Error, Sendable, Equatable, CustomStringConvertible {
    public let engine: String
    public init(engine: String) { self.engine = engine }
    public var description: String {
        "this responder answers once (Responder.send), it cannot stream: \(engine)"
    }
}

/// `Responder.stream()` after the responder answered (or streamed) already.
public struct ResponseStreamUnavailable: Error, Sendable, Equatable, CustomStringConvertible {
    public init() {}
    public var description: String { "the responder has answered already: no stream" }
}

/// A response given over time. Usable from any thread, one operation at a
/// time. Framing: a `Content-Length` header in `head` fixes the length;
/// without one the body is chunked (HTTP/1.1; trailers allowed) or ends
/// with the connection (HTTP/1.0). Released without `end`: before the head
/// the client gets 500; after it the connection is closed after what was
/// written (the client sees a truncated body).
public final class ResponseStream: Sendable {
    private let engine: any ResponseStreamEngine

    package init(engine: any ResponseStreamEngine) { self.engine = engine }

    /// Sends the head. A header the engine refuses is left out (as
    /// `Response.header`); the result is the head's.
    @discardableResult
    public func head(status: Int = 200, headers: [(name: String, value: String)] = []) -> StreamWriteResult {
        for (name, value) in headers { _ = engine.streamHeader(name: name, value: value) }
        return StreamWriteResult(code: engine.streamHead(status: status))
    }

    /// Copies the bytes and queues them for the client.
    @discardableResult
    public func write(_ bytes: UnsafeRawBufferPointer) -> StreamWriteResult {
        StreamWriteResult(code: engine.streamWrite(bytes))
    }

    @discardableResult
    public func write(_ bytes: [UInt8]) -> StreamWriteResult { bytes.withUnsafeBytes { write($0) } }

    @discardableResult
    public func write(_ text: String) -> StreamWriteResult {
        var text = text
        return text.withUTF8 { write(UnsafeRawBufferPointer($0)) }
    }

    /// A trailer, sent at the end when the body is chunked (left out otherwise).
    @discardableResult
    public func trailer(name: String, value: String) -> StreamWriteResult {
        StreamWriteResult(code: engine.streamTrailer(name: name, value: value))
    }

    /// Ends the answer (the last chunk and the trailers when chunked).
    @discardableResult
    public func end() -> StreamWriteResult { StreamWriteResult(code: engine.streamEnd()) }

    /// Runs `callback` on the engine's loop thread after a `.wouldBlock`,
    /// once the stream is back at its low mark (64 KiB), and once when the
    /// client left (waiting or not). It must not block; it may write. nil stops it.
    public func onWritable(_ callback: (@Sendable () -> Void)?) { engine.streamOnWritable(callback) }
}
