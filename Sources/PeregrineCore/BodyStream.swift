// Streamed request bodies: the types every engine shares (the C engines
// through prg_body_* in peregrine.h, the Swift engine through its own).

/// How a streamed request body ended (the C `prg_body_end`).
public enum BodyEnd: Int32, Sendable, CustomStringConvertible {
    /// Every byte was delivered (chunked: the trailer section was validated and dropped).
    case complete = 0
    /// The client closed or reset the connection before the end of the body.
    case clientGone = 1
    /// No body byte arrived for `idleTimeout` seconds: `408` was answered and the connection closes.
    case timedOut = 2
    /// Malformed chunked framing or trailers: `400` (or `431`) was answered and the connection closes.
    case badFraming = 3
    /// Over `maxStreamedBody`: `413` was answered and the connection closes.
    case tooLarge = 4
    /// The server stopped or closed the connection itself, or the application closed it.
    case closed = 5

    public var description: String {
        switch self {
        case .complete: "complete"
        case .clientGone: "client gone"
        case .timedOut: "timed out"
        case .badFraming: "bad framing"
        case .tooLarge: "too large"
        case .closed: "closed"
        }
    }
}

/// The functions an engine provides for streamed bodies (the C engines pass
/// `prg_body_stream`, `prg_body_pause`, `prg_body_resume`,
/// `prg_conn_receive_capacity` themselves). 0 = done, -1 = refused.
package struct BodyStreamFunctions: Sendable {
    package typealias Begin = @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Int32
    package typealias Control = @convention(c) (OpaquePointer?) -> Int32
    package typealias Capacity = @convention(c) (OpaquePointer?) -> Int

    package var begin: Begin
    package var pause: Control
    package var resume: Control
    package var receiveCapacity: Capacity

    package init(begin: Begin, pause: Control, resume: Control, receiveCapacity: Capacity) {
        self.begin = begin
        self.pause = pause
        self.resume = resume
        self.receiveCapacity = receiveCapacity
    }
}

/// Decides, from the head of a request that has a body, how the body is
/// taken (see `Application.streaming`): return a `BodyConsumer` to stream
/// it, answer through `Response` to refuse it unread, or return `nil`
/// without answering to have it buffered.
public typealias StreamingHeadHandler = @Sendable (Request, Response) -> BodyConsumer?

/// Takes one request body as it arrives, as decoded spans of the
/// connection's receive buffer.
///
/// Every call comes on the connection's loop thread: `chunk` for each span
/// (valid only during the call; return how many bytes you took: fewer holds
/// the rest and stops reading, like `pause()`), then `end` exactly once with
/// how the body ended. `response` may be written at any time until `end`
/// returns (after `.complete` a consumer that wrote nothing gets `500`; after
/// a failure the server's error answer was already given). `pause()` and
/// `resume()` must be called on the connection's loop thread: from this
/// consumer's callbacks or another request's handler on the same loop.
///
/// One instance per request: it is allocated by the head handler, which is
/// why streaming is off the allocation-free hello path.
public final class BodyConsumer: @unchecked Sendable {
    // @unchecked: touched only on the connection's loop thread.
    public typealias Chunk = (UnsafeRawBufferPointer, BodyConsumer) -> Int
    public typealias End = (BodyEnd, BodyConsumer) -> Void

    let chunkHandler: Chunk
    let endHandler: End
    private var endObservers: [End] = []
    private var handle: OpaquePointer?
    private var functions: BodyStreamFunctions?
    private var responseFunctions: ResponseWriterFunctions?
    /// Decoded body bytes taken so far.
    public private(set) var received = 0
    /// How the body ended, once `end` ran.
    public private(set) var ended: BodyEnd?

    /// Start held back, as if `pause()` were called before the first byte:
    /// no body byte is read (and no `100 Continue` sent) until `resume()`.
    /// The blocking and threaded engines cannot hold a stream: there it starts at once.
    public let startsPaused: Bool

    public init(startsPaused: Bool = false, chunk: @escaping Chunk, end: @escaping End) {
        self.startsPaused = startsPaused
        chunkHandler = chunk
        endHandler = end
    }

    /// Engines: the stream has begun on `handle`.
    package func attach(_ handle: OpaquePointer, functions: BodyStreamFunctions, response: ResponseWriterFunctions) {
        self.handle = handle
        self.functions = functions
        self.responseFunctions = response
        if startsPaused { _ = functions.pause(handle) }   // refused on the blocking engines: starts at once
        if let attached = onAttach {
            onAttach = nil
            attached(self)
        }
    }

    /// Runs once the stream has begun (`attach`), still inside the head
    /// callback: `response` and `pause`/`resume` work from here on.
    public var onAttach: ((BodyConsumer) -> Void)? = nil

    /// Engines: a decoded span arrived; returns the bytes taken.
    package func deliver(_ bytes: UnsafeRawBufferPointer) -> Int {
        let took = min(max(chunkHandler(bytes, self), 0), bytes.count)
        received += took
        return took
    }

    /// Engines: the body ended; the connection may not be used after this.
    package func finish(_ how: BodyEnd) {
        guard ended == nil else { return }
        ended = how
        endHandler(how, self)
        for observer in endObservers { observer(how, self) }
        handle = nil
    }

    /// Also runs `observer` at the end, after the consumer's own `end`
    /// (while `response` is still valid: e.g. to log the status it got).
    public func onEnd(_ observer: @escaping End) {
        endObservers.append(observer)
    }

    /// The answer to this request (valid until `end` returns).
    public var response: Response? {
        guard let handle, let responseFunctions else { return nil }
        return Response(sink: handle, functions: responseFunctions)
    }

    /// Stops taking body bytes: the connection stops reading (what arrived
    /// stays in its receive buffer) and no timeout runs until `resume()`.
    /// `false` once the body ended, or on the blocking and threaded engines,
    /// where a consumer holds the body back by blocking in `chunk` instead.
    @discardableResult
    public func pause() -> Bool {
        guard let handle, let functions, ended == nil else { return false }
        return functions.pause(handle) == 0
    }

    /// Delivers what is held and reads again. `false` once the body ended.
    @discardableResult
    public func resume() -> Bool {
        guard let handle, let functions, ended == nil else { return false }
        return functions.resume(handle) == 0
    }

    /// Bytes of the connection's receive buffer now (0 when it holds none):
    /// streaming never grows it past one block.
    public var receiveBufferCapacity: Int {
        guard let handle, let functions, ended == nil else { return 0 }
        return functions.receiveCapacity(handle)
    }
}

/// The value of `Configuration.maxStreamedBody` when not set: 1 GiB.
public let defaultMaxStreamedBody = 1 << 30
