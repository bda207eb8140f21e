// Async handlers over swift-http-types: the request head as an HTTPRequest,
// the body as an AsyncSequence of chunks, the answer through a
// ResponseWriter. Written once for every engine.
//
// How a request runs (AsyncDispatcher.handle, on the loop thread, inside the
// engine's request callback):
//  1. The head is written over the loop's last one (no allocation when no
//     handler kept that one) and the handler starts on the loop's executor,
//     on a handler task parked there by an earlier request (AsyncWorker) or
//     a new one; its job is run at once, on this thread, as that executor
//     (ResponseWriter.launch). The writer is the one allocation.
//  2. Until it first suspends, the writer buffers what it is given. A
//     handler that answers without suspending (a hello) is written inline,
//     through the engine's ordinary response writer, as a closure handler's.
//  3. A handler that suspends (it awaits other work, or the body) gets its
//     answer deferred (`Response.deferAnswer()`): what was buffered is
//     replayed into the engine's response stream, and from then on every
//     write goes there, suspending above the stream's high mark. It resumes
//     on the loop thread (the executor), so the writer is only ever touched
//     there.
// Engines with no loop (blocking, threaded) defer every answer and run the
// handler on the global executor, writing through the response stream (the
// connection's thread serves it meanwhile); see runDeferred.
#if canImport(Glibc)
import Glibc
#endif
import HTTPTypes
import Logging
import Synchronization

/// Answers one request: `request` is the head, `body` its body (read it or
/// not: what is not read is discarded), `writer` the answer. Runs as a task
/// on the loop thread that owns the connection. An error thrown before the
/// head is written gives `500`; after it, the connection is closed after
/// what was written. A handler that returns without finishing is finished
/// for it (or answered `500` if it wrote no head). The client leaving
/// cancels the task.
public typealias AsyncRequestHandler = @Sendable (HTTPRequest, RequestBody, ResponseWriter) async throws -> Void

// MARK: - The request

extension Request {
    /// The head as a swift-http-types request: `Host` becomes the
    /// authority, the target the path, the scheme is `http`; the other
    /// fields keep their order. nil when a name or method is not a token
    /// (the parsers refuse those first, so only for views built by hand).
    public func httpRequest() -> HTTPRequest? {
        guard let method = httpMethod() else { return nil }
        var fields = HTTPFields()
        var authority: String? = nil
        for i in 0..<headerCount {
            let name = headerName(at: i)
            if authority == nil && asciiEqualsIgnoringCase(name, "host") {
                authority = String(decoding: headerValue(at: i), as: UTF8.self)
                continue
            }
            guard let fieldName = HTTPField.Name(String(decoding: name, as: UTF8.self)) else { return nil }
            fields.append(HTTPField(name: fieldName, lenientValue: headerValue(at: i)))
        }
        return HTTPRequest(method: method, scheme: "http", authority: authority,
                           path: String(decoding: target, as: UTF8.self), headerFields: fields)
    }

    /// As `httpRequest()`, written over `parts.head` (the loop's last one,
    /// whose scheme is `http` already): a part equal to the last request's
    /// is kept as it is (no new string, no validation), and when nobody kept
    /// the last head its storage is reused (no allocation). The last parts'
    /// bytes are compared as `parts` keeps them (the head's getters copy
    /// fields and strings). false where `httpRequest()` gives nil.
    func updateHTTPRequest(_ parts: inout HandlerParts) -> Bool {
        var newMethod: HTTPRequest.Method? = nil
        if !parts.method.equals(method) {
            guard let m = httpMethod() else { return false }
            newMethod = m
        }
        var fields = HTTPFields()
        var host: UnsafeRawBufferPointer? = nil
        for i in 0..<headerCount {
            let name = headerName(at: i)
            if host == nil && asciiEqualsIgnoringCase(name, "host") {
                host = headerValue(at: i)
                continue
            }
            guard let fieldName = HTTPField.Name(String(decoding: name, as: UTF8.self)) else { return false }
            fields.append(HTTPField(name: fieldName, lenientValue: headerValue(at: i)))
        }
        if let newMethod {
            parts.head.method = newMethod
            parts.method.set(method)
        }
        if let host {
            if !parts.hasAuthority || !parts.authority.equals(host) {
                parts.head.authority = String(decoding: host, as: UTF8.self)
                parts.authority.set(host)
                parts.hasAuthority = true
            }
        } else if parts.hasAuthority {
            parts.head.authority = nil
            parts.hasAuthority = false
        }
        if !parts.path.equals(target) {
            parts.head.path = String(decoding: target, as: UTF8.self)
            parts.path.set(target)
        }
        if !(fields.isEmpty && !parts.hasFields) {
            parts.hasFields = !fields.isEmpty
            parts.head.headerFields = fields
        }
        return true
    }

    private func httpMethod() -> HTTPRequest.Method? {
        if methodIs("GET") { return .get }
        if methodIs("POST") { return .post }
        if methodIs("HEAD") { return .head }
        if methodIs("PUT") { return .put }
        if methodIs("DELETE") { return .delete }
        return HTTPRequest.Method(String(decoding: method, as: UTF8.self))
    }
}

/// The bytes of a part of the loop's last request head (HandlerParts):
/// what the next request's bytes are compared with.
struct LastBytes {
    private var bytes: [UInt8]

    init(_ text: String) { bytes = Array(text.utf8) }

    @inline(__always)
    func equals(_ other: UnsafeRawBufferPointer) -> Bool {
        bytes.withUnsafeBytes { have in
            have.count == other.count && (other.isEmpty || memcmp(have.baseAddress!, other.baseAddress!, other.count) == 0)
        }
    }

    /// Kept capacity: no allocation once the longest part was seen.
    mutating func set(_ other: UnsafeRawBufferPointer) {
        bytes.removeAll(keepingCapacity: true)
        bytes.append(contentsOf: other)
    }
}

@inline(__always)
private func asciiEqualsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ lower: StaticString) -> Bool {
    guard bytes.count == lower.utf8CodeUnitCount else { return false }
    let l = lower.utf8Start
    for i in 0..<bytes.count where bytes[i] | 0x20 != l[i] { return false }
    return true
}

/// The request body as chunks of bytes, in order. Single pass: one
/// iterator. Streamed bodies carry the connection's backpressure: a chunk is
/// read from the socket only when the iterator asks for it.
public struct RequestBody: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    public typealias Failure = any Error

    enum Source: Sendable {
        case empty
        case buffered([UInt8])
        case streamed(BodyChannel)
    }
    let source: Source

    init(_ source: Source) { self.source = source }

    /// A body of these bytes (for tests and adapters).
    public init(bytes: [UInt8]) { source = bytes.isEmpty ? .empty : .buffered(bytes) }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var source: Source
        public mutating func next() async throws -> [UInt8]? {
            switch source {
            case .empty:
                return nil
            case .buffered(let bytes):
                source = .empty
                return bytes
            case .streamed(let channel):
                return try await channel.next()
            }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(source: source) }

    /// The whole body, refusing more than `maxBytes`
    /// (`RequestBodyError.tooLarge`).
    public func collect(upTo maxBytes: Int) async throws -> [UInt8] {
        var all: [UInt8] = []
        for try await chunk in self {
            guard all.count + chunk.count <= maxBytes else { throw RequestBodyError.tooLarge(limit: maxBytes) }
            all += chunk
        }
        return all
    }
}

/// Why reading the body failed.
public enum RequestBodyError: Error, Sendable, Equatable, CustomStringConvertible {
    /// `collect(upTo:)`: the body is longer than asked for.
    case tooLarge(limit: Int)
    /// The body did not arrive whole; the engine already answered or closed
    /// (see `BodyEnd`).
    case ended(BodyEnd)
    /// A second iterator over a streamed body.
    case alreadyIterated

    public var description: String {
        switch self {
        case .tooLarge(let limit): "request body longer than \(limit) bytes"
        case .ended(let how): "request body ended early: \(how)"
        case .alreadyIterated: "a request body can be read once"
        }
    }
}

/// A streamed body between the engine's callbacks and the handler's
/// iterator. Everything happens on the loop thread: the engine's
/// callbacks, and the handler's task (the loop's executor).
final class BodyChannel: @unchecked Sendable {
    private(set) var consumer: BodyConsumer?
    private var held: [UInt8]? = nil
    private var end: BodyEnd? = nil
    private var waiter: CheckedContinuation<[UInt8]?, any Error>? = nil
    private var iterating = false
    /// Runs when the body fails (the client left...): cancels the handler.
    var onFailure: (@Sendable () -> Void)? = nil

    /// The consumer the engine streams into; starts paused (nothing is read
    /// until the iterator asks).
    func makeConsumer() -> BodyConsumer {
        let c = BodyConsumer(startsPaused: true, chunk: { [self] bytes, consumer in
            take(bytes, consumer)
        }, end: { [self] how, _ in
            finished(how)
        })
        consumer = c
        return c
    }

    private func take(_ bytes: UnsafeRawBufferPointer, _ consumer: BodyConsumer) -> Int {
        if discarding { return bytes.count }
        let chunk = Array(bytes)
        consumer.pause()   // one chunk in flight: the next is read when asked for
        if let w = waiter {
            waiter = nil
            w.resume(returning: chunk)
        } else {
            held = chunk
        }
        return bytes.count
    }

    private func finished(_ how: BodyEnd) {
        end = how
        consumer = nil
        if let w = waiter {
            waiter = nil
            if how == .complete { w.resume(returning: nil) } else { w.resume(throwing: RequestBodyError.ended(how)) }
        }
        if how != .complete { onFailure?() }
    }

    /// The handler is done with the body: what is left is read and dropped
    /// (the connection can then serve its next request).
    func discardRest() {
        discarding = true
        held = nil
        consumer?.resume()
    }
    private var discarding = false

    func next() async throws -> [UInt8]? {
        if discarding { return nil }
        if let chunk = held {
            held = nil
            return chunk
        }
        if let end { if end == .complete { return nil } else { throw RequestBodyError.ended(end) } }
        return try await withCheckedThrowingContinuation { c in
            waiter = c
            consumer?.resume()   // refused before the stream began: `attached` resumes it
        }
    }

    /// The engine began the stream: a reader already waiting gets its bytes.
    func attached(_ consumer: BodyConsumer) {
        if waiter != nil { consumer.resume() }
    }
}

// MARK: - The answer

/// Why a `ResponseWriter` operation failed.
public enum ResponseWriterError: Error, Sendable, Equatable, CustomStringConvertible {
    /// `writeHead` a second time.
    case headAlreadyWritten
    /// A body write or `finish` before `writeHead`.
    case headNotWritten
    /// An operation after `finish`.
    case finished
    /// The client left (or the server stopped): nothing more reaches it.
    case clientGone
    /// The engine refused (`StreamRefusal`: the handler timeout passed, a
    /// write beyond the declared Content-Length...).
    case refused(StreamRefusal)

    public var description: String {
        switch self {
        case .headAlreadyWritten: "the response head was written already"
        case .headNotWritten: "write the response head first"
        case .finished: "the response is finished"
        case .clientGone: "the client is gone"
        case .refused(let why): "the engine refused the write: \(why)"
        }
    }
}

/// The answer to one request: a head, body parts, optional trailers, the
/// end. Use it from the handler's task (one operation at a time). Writes
/// copy the bytes; above the stream's high mark (256 KiB queued) a write
/// suspends until the client has taken enough.
public final class ResponseWriter: @unchecked Sendable {
    // @unchecked: touched by the handler's task, which runs on the loop
    // thread (its executor), and by the dispatcher on that thread while the
    // task is suspended; on the blocking engines by the task, then (after
    // it ended, through a lock's happens-before) the connection's thread.

    private enum Phase {
        /// Buffering: the handler has not suspended yet (or the engine has no loop).
        case buffering
        /// Answered through the engine's deferred handle.
        case deferred(any DeferredAnswerEngine)
        /// Finished or aborted: the handle is given back.
        case done
    }
    // @exclusivity(unchecked): one thread at a time touches the state (see
    // above), and in ways that never overlap; the runtime's access checks
    // cost about 80 instructions each, a dozen per request.
    @exclusivity(unchecked) private var phase = Phase.buffering
    /// Given and not yet sent.
    @exclusivity(unchecked) private var head: HTTPResponse? = nil
    @exclusivity(unchecked) private var headWritten = false
    @exclusivity(unchecked) private var headSent = false
    @exclusivity(unchecked) private var body: [UInt8] = []
    @exclusivity(unchecked) private var trailers: HTTPFields? = nil
    @exclusivity(unchecked) private(set) var finished = false
    /// The handler returned or threw.
    @exclusivity(unchecked) private(set) var returned = false
    /// A write waiting for room, or (nil) nobody: then a peer-gone
    /// notification cancels the task instead.
    @exclusivity(unchecked) private var waiter: CheckedContinuation<Void, Never>? = nil
    @exclusivity(unchecked) var task: Task<Void, Never>? = nil
    /// Engines without a loop (runDeferred): the engine's on_writable runs on
    /// the connection's thread, the task elsewhere; the wake-up goes through
    /// this (set before the task starts, never changed after).
    @exclusivity(unchecked) fileprivate var crossThread: CrossThreadWake? = nil

    // The exchange this writer answers: everything the handler's task
    // needs, in this one object, so the task's closure captures only it
    // (no context allocation per request). Variables: a loop reuses a
    // writer answered inline for its next request (`recycled`).
    private let handler: AsyncRequestHandler
    @exclusivity(unchecked) private var request: HTTPRequest
    @exclusivity(unchecked) private var requestBody: RequestBody
    private let executor: LoopExecutor?
    private let failures: FailureLog
    @exclusivity(unchecked) private var channel: BodyChannel?

    /// The client this answer goes to: its address, or with the PROXY
    /// protocol the source the proxy named (`Request.remoteAddress`).
    @exclusivity(unchecked) public private(set) var remoteAddress: SocketAddress?

    /// A loop's writer answered inline, and held by nobody else: made ready
    /// for the loop's next request (an allocation and a deinit saved).
    /// Its handler and failure log stay: a loop's spare writer is its
    /// dispatcher's (`HandlerParts.spareWriterOwner`).
    func renew(request: HTTPRequest, body: RequestBody, channel: BodyChannel?, remoteAddress: SocketAddress?) {
        self.request = request
        self.requestBody = body
        self.channel = channel
        self.remoteAddress = remoteAddress
    }

    /// No weak or unowned reference to this writer exists (the uniqueness
    /// check sees strong ones only): a handler that kept one must never
    /// reach the next client's answer through it. The runtime's counts
    /// (what debuggers read) are 1 for an object with none.
    var hasNoWeakOrUnownedReferences: Bool {
        _getUnownedRetainCount(self) == 1 && _getWeakRetainCount(self) <= 1
    }

    /// After an inline answer: back to a new writer's state, letting go of
    /// this request's parts (the loop's last request head can then be
    /// written over in place, and the response head is the loop's memo's).
    /// An inline answer never had a task, a waiter or a cross-thread
    /// wake-up, and `writeInline` left the body empty.
    @inline(__always) fileprivate func recycled() -> ResponseWriter {
        request = noRequest
        requestBody = RequestBody(.empty)
        channel = nil
        remoteAddress = nil
        phase = .buffering
        head = nil
        headWritten = false
        headSent = false
        trailers = nil
        finished = false
        returned = false
        sentStatus = 0
        bytesWritten = 0
        return self
    }

    init(handler: @escaping AsyncRequestHandler, request: HTTPRequest, body: RequestBody, executor: LoopExecutor?,
         failures: FailureLog, channel: BodyChannel?, remoteAddress: SocketAddress?) {
        self.remoteAddress = remoteAddress
        self.handler = handler
        self.request = request
        self.requestBody = body
        self.executor = executor
        self.failures = failures
        self.channel = channel
    }

    /// The handler's task: runs it and finishes what it left open. Inlined
    /// into the handler task's loop: as a call of its own it costs an
    /// executor check (about 240 instructions) per request.
    @inline(__always) func run() async {
        var failure: (any Error)? = nil
        do {
            try await handler(request, requestBody, self)
        } catch {
            failure = error
            failures.warning("async handler for \(request.method) \(request.path ?? ""): \(error)")
        }
        handlerEnded(failure)
        channel?.discardRest()
        if let executor { executor.tasksInFlight -= 1 }
        task = nil   // the task may serve other requests now (AsyncWorker): no cancelling it from here
    }

    /// Starts the handler on `executor` (the loop thread), on a parked
    /// handler task if one waits (AsyncWorker): it runs at once, here, until
    /// it first suspends. `task` is its task while it runs.
    func launch(on executor: LoopExecutor) {
        executor.tasksInFlight += 1
        let running = AsyncWorker.launch(self, on: executor)
        if !returned { task = running }
    }

    /// The status of the head written (nil before `writeHead`).
    public var status: Int? { headWritten ? sentStatus : nil }
    /// The head's status code, read once (HTTPResponse parses it from its
    /// pseudo-header field on every read).
    @exclusivity(unchecked) private var sentStatus = 0
    /// Body bytes accepted so far.
    @exclusivity(unchecked) public private(set) var bytesWritten = 0

    /// The response head (status and fields). A `Content-Length` field fixes
    /// the body's length; without one the body is chunked (HTTP/1.1) — or,
    /// for an answer given whole before the handler first suspends, gets its
    /// length added.
    public func writeHead(_ response: HTTPResponse) async throws {
        try takeHead(response)
    }

    // The operations' bodies are synchronous: an answer given whole before
    // the first suspension (a hello) makes no async call beyond the one
    // the handler makes (each costs a frame and an executor check).
    private func takeHead(_ response: HTTPResponse) throws {
        if finished { throw ResponseWriterError.finished }
        if headWritten { throw ResponseWriterError.headAlreadyWritten }
        headWritten = true
        head = response
        sentStatus = statusCode(response)
    }

    /// The head's status code; on a loop, remembered with the head
    /// (`ResponseHeadMemo`: apps answer with a head made once).
    private func statusCode(_ response: HTTPResponse) -> Int {
        guard let executor else { return Self.readStatus(response) }
        if executor.handlerParts.response.holds(response) { return executor.handlerParts.response.status }
        let code = Self.readStatus(response)
        executor.handlerParts.response = ResponseHeadMemo(response, status: code)
        return code
    }

    /// `response.status.code` without the `Status` (its getter also copies
    /// the reason phrase): the status field's three digits.
    private static func readStatus(_ response: HTTPResponse) -> Int {
        var digits = response.pseudoHeaderFields.status.value
        return digits.withUTF8 { d in
            // Always three digits (HTTPResponse checks them when set).
            d.count == 3 ? Int(d[0] &- 48) * 100 + Int(d[1] &- 48) * 10 + Int(d[2] &- 48) : response.status.code
        }
    }

    /// Copies `bytes` into the response body.
    public func write(_ bytes: UnsafeRawBufferPointer) async throws {
        let wait = try accept(bytes)
        if wait != .none { await pause(wait) }
    }

    public func write(_ bytes: [UInt8]) async throws {
        let wait = try put(bytes)
        if wait != .none { await pause(wait) }
    }

    private func put(_ bytes: [UInt8]) throws -> Pause {
        if case .buffering = phase, headWritten, !finished {   // kept as it is: no copy
            bytesWritten += bytes.count
            if body.isEmpty { body = bytes } else { body += bytes }
            return body.count >= Int(highWaterMark) ? .yield : .none
        }
        return try bytes.withUnsafeBytes { try accept($0) }
    }

    /// What a write waits for after its bytes were taken.
    private enum Pause { case none, yield, writable }

    private func accept(_ bytes: UnsafeRawBufferPointer) throws -> Pause {
        if finished { throw ResponseWriterError.finished }
        guard headWritten else { throw ResponseWriterError.headNotWritten }
        if bytes.isEmpty { return .none }
        bytesWritten += bytes.count
        switch phase {
        case .buffering:
            body.append(contentsOf: bytes)
            // Much buffered without a pause: let the dispatcher defer the
            // answer, so the rest streams under the watermarks.
            return body.count >= Int(highWaterMark) ? .yield : .none
        case .deferred(let d):
            try sendHeadIfHeld(d)
            crossThread?.arm()   // a wake-up may come before this write returns
            let code = d.streamWrite(bytes)
            if code != 1 { crossThread?.disarm() }
            try check(code)
            return code == 1 ? .writable : .none
        case .done:
            throw ResponseWriterError.finished
        }
    }

    private func pause(_ what: Pause) async {
        switch what {
        case .none: return
        case .yield: await Task.yield()
        case .writable:   // above the high mark: wait for the low one (or the client leaving)
            if let crossThread { return await crossThread.wait() }
            await withCheckedContinuation { waiter = $0 }
        }
    }

    public func write(_ text: String) async throws {
        try await write(Array(text.utf8))
    }

    /// Ends the answer; `trailers` go after a chunked body (left out
    /// otherwise).
    public func finish(trailers: HTTPFields? = nil) async throws {
        try finishNow(trailers: trailers)
    }

    private func finishNow(trailers: HTTPFields?) throws {
        if finished { throw ResponseWriterError.finished }
        guard headWritten else { throw ResponseWriterError.headNotWritten }
        finished = true
        self.trailers = trailers
        if case .deferred(let d) = phase { try endDeferred(d) }
    }

    /// The head, the whole body and the end at once (with its length,
    /// unless the head says otherwise).
    public func respond(_ response: HTTPResponse, body: [UInt8] = []) async throws {
        guard case .deferred(let d) = phase else {
            try takeHead(response)
            if !body.isEmpty {
                let wait = try put(body)
                if wait != .none { await pause(wait) }
            }
            return try finishNow(trailers: nil)
        }
        if finished { throw ResponseWriterError.finished }
        if headWritten { throw ResponseWriterError.headAlreadyWritten }
        headWritten = true
        headSent = true
        finished = true
        sentStatus = statusCode(response)
        bytesWritten += body.count
        defer { release() }
        var headers: [(name: String, value: String)] = []
        for field in response.headerFields { headers.append((field.name.rawName, field.value)) }
        if !d.complete(OffloadAnswer(status: sentStatus, headers: headers, body: body)) {
            throw ResponseWriterError.clientGone
        }
    }

    public func respond(_ response: HTTPResponse, body: String) async throws {
        try await respond(response, body: Array(body.utf8))
    }

    // MARK: Engine side

    /// The dispatcher, on the loop thread, with the engine's response still
    /// valid: writes what the handler gave as one inline answer.
    func writeInline(_ response: Response) {
        phase = .done
        guard let head else {
            response.send(status: 500, contentType: "text/plain", body: "Internal Server Error\n")
            return
        }
        let code = sentStatus
        if sendsWhole(head, code, response) { return }
        guard response.begin(status: code) else { return }   // the engine answers 500
        var hasLength = false
        for field in head.headerFields {
            if field.name == .contentLength { hasLength = true }
            _ = response.header(field.name.rawName, field.value)
        }
        if !hasLength && code != 204 && code != 304 && !(100..<200).contains(code) {
            _ = response.header("Content-Length", String(body.count))
        }
        if !body.isEmpty { body.withUnsafeBytes { _ = response.write($0) } }
        _ = response.end()
        body = []
    }

    /// An answer whose only field is `Content-Type` (or none) and whose
    /// status carries a body goes out in one engine call, as a closure
    /// handler's `send`: the same bytes as begin, header, header, write and
    /// end (the engine adds the length), in a quarter of the instructions.
    private func sendsWhole(_ head: HTTPResponse, _ code: Int, _ response: Response) -> Bool {
        guard code >= 200 && code != 204 && code != 304 && code <= 999 else { return false }
        let status = Int32(truncatingIfNeeded: code)
        guard let executor, executor.handlerParts.response.holds(head) else {
            var (whole, contentType) = ResponseHeadMemo.shape(of: head)
            guard whole else { return false }
            send(status, &contentType, response)
            return true
        }
        guard executor.handlerParts.response.sendsWhole() else { return false }
        send(status, &executor.handlerParts.response.contentType, response)
        return true
    }

    /// `sendsWhole`'s engine call. inout: the type's bytes are read in
    /// place (a copy would retain them).
    private func send(_ status: Int32, _ contentType: inout String?, _ response: Response) {
        body.withUnsafeBytes { b in
            guard contentType != nil else {
                _ = response.functions.send(response.sink, status, nil, 0, b.baseAddress, b.count)
                return
            }
            contentType!.withUTF8 { ct in
                _ = response.functions.send(response.sink, status,
                                            UnsafeRawPointer(ct.baseAddress)?.assumingMemoryBound(to: CChar.self),
                                            ct.count, b.baseAddress, b.count)
            }
        }
        body = []
    }

    /// The dispatcher, on the loop thread, after the handler suspended: from
    /// now on the answer goes through `d`; what was buffered goes first.
    func attach(_ d: any DeferredAnswerEngine) throws {
        phase = .deferred(d)
        d.streamOnWritable { [self] in writable() }
        if !body.isEmpty {
            let bytes = body
            body = []
            try sendHeadIfHeld(d)
            let code = bytes.withUnsafeBytes { d.streamWrite($0) }
            try check(code)
        }
        if finished { try endDeferred(d) }
    }

    /// The loop thread: room again, or the client left.
    private func writable() {
        if let crossThread { return crossThread.wake() }
        if let w = waiter {
            waiter = nil
            w.resume()
        } else {
            task?.cancel()
        }
    }

    private func sendHeadIfHeld(_ d: any DeferredAnswerEngine) throws {
        guard let head, !headSent else { return }
        headSent = true
        for field in head.headerFields { _ = d.streamHeader(name: field.name.rawName, value: field.value) }
        try check(d.streamHead(status: sentStatus))
    }

    private func endDeferred(_ d: any DeferredAnswerEngine) throws {
        defer { release() }
        if !headSent && trailers == nil, let head {
            // Nothing streamed: one answer, with its length.
            headSent = true
            var headers: [(name: String, value: String)] = []
            for field in head.headerFields { headers.append((field.name.rawName, field.value)) }
            if !d.complete(OffloadAnswer(status: sentStatus, headers: headers, body: [])) {
                throw ResponseWriterError.clientGone
            }
            return
        }
        try sendHeadIfHeld(d)
        if let trailers { for field in trailers { _ = d.streamTrailer(name: field.name.rawName, value: field.value) } }
        try check(d.streamEnd())
    }

    /// Gives the engine's handle back: unanswered, the client gets 500;
    /// after the head without the end, the connection closes after what was
    /// written.
    func release() {
        if case .deferred(let d) = phase { d.streamOnWritable(nil) }
        crossThread?.release()
        phase = .done
        if let w = waiter {
            waiter = nil
            w.resume()
        }
    }

    private func check(_ code: Int32) throws {
        switch StreamWriteResult(code: code) {
        case .ok, .wouldBlock: return
        case .peerGone: throw ResponseWriterError.clientGone
        case .ended: throw ResponseWriterError.finished
        case .refused(let why): throw ResponseWriterError.refused(why)
        }
    }

    /// The handler returned (or threw): finish what it left open.
    func handlerEnded(_ error: (any Error)?) {
        returned = true
        if error == nil && !finished && headWritten {
            finished = true
            if case .deferred(let d) = phase { try? endDeferred(d) }
            return
        }
        if error != nil || !headWritten {
            // Nothing usable: before the head the client gets 500 (the
            // engine's answer for a released handle, or the inline one);
            // after it the connection closes after what was written.
            if !headSent {
                head = nil
                headWritten = false
                body = []
                finished = true
            }
            release()
        }
    }

    /// The handler ended while buffering: its answer can be written inline.
    var bufferedAnswerReady: Bool { returned && trailers == nil }
}

/// What a recycled writer holds instead of a request (made once).
private let noRequest = HTTPRequest(method: .get, scheme: nil, authority: nil, path: nil)

/// `503` with `Retry-After: 1`: the limit on tasks in flight was reached.
private func sendUnavailable(_ response: Response) {
    guard response.begin(status: 503) else { return }
    _ = response.header("Retry-After", "1")
    _ = response.header("Content-Type", "text/plain")
    _ = response.header("Content-Length", "20")
    _ = response.write("Service Unavailable\n")
    _ = response.end()
}

/// The stream's marks, as the engines' (csrc/offload.c PRG_STREAM_*_WATER).
let highWaterMark: UInt32 = 256 * 1024

// MARK: - Dispatch

/// Runs an `.async` application's handler for each request, on the loop
/// thread's executor (`LoopExecutor.current`), at most `limit` at once per
/// loop: beyond, requests wait for a slot (their answers owed, in arrival
/// order) up to `limit` more, and beyond that get `503` + `Retry-After` at once.
package final class AsyncDispatcher: Sendable {
    let handler: AsyncRequestHandler
    let failures: FailureLog
    package let limit: Int

    package init(handler: @escaping AsyncRequestHandler, limit: Int, logger: Logger) {
        self.handler = handler
        self.limit = max(1, limit)
        self.failures = FailureLog(logger: logger)
    }

    /// The engine's request callback (a request with its whole body).
    package func handle(_ request: Request, _ response: Response) {
        let executor = LoopExecutor.current
        guard let head = Self.head(of: request, on: executor) else {
            response.send(status: 400, contentType: "text/plain", body: "Bad Request\n")
            return
        }
        let body = RequestBody(request.body.isEmpty ? .empty : .buffered(Array(request.body)))
        start(head, body, response, client: request.remoteAddress, executor: executor)
    }

    /// The request's head as an HTTPRequest: on a loop, written over the
    /// loop's last one (`Request.updateHTTPRequest`).
    private static func head(of request: Request, on executor: LoopExecutor?) -> HTTPRequest? {
        guard let executor else { return request.httpRequest() }
        return request.updateHTTPRequest(&executor.handlerParts) ? executor.handlerParts.head : nil
    }

    /// `.streaming`'s head callback for an `.async` application: the body
    /// streams to the handler's `RequestBody` (read on demand). nil when
    /// answered already, or on engines without a loop (the body is then
    /// buffered and `handle` runs).
    package func handleHead(_ request: Request, _ response: Response) -> BodyConsumer? {
        guard let executor = LoopExecutor.current else { return nil }
        guard let head = Self.head(of: request, on: executor) else {
            response.send(status: 400, contentType: "text/plain", body: "Bad Request\n")
            return nil
        }
        let channel = BodyChannel()
        let consumer = channel.makeConsumer()
        return start(head, RequestBody(.streamed(channel)), response, client: request.remoteAddress,
                     executor: executor, channel: channel) ? consumer : nil
    }

    /// Starts the handler (or parks it); `true` when the answer is owed
    /// (deferred now, or once the engine began the body stream), `false`
    /// when it was answered here.
    @discardableResult
    private func start(_ head: HTTPRequest, _ body: RequestBody, _ response: Response, client: SocketAddress?,
                       executor: LoopExecutor?, channel: BodyChannel? = nil) -> Bool {
        guard let executor else {
            let writer = ResponseWriter(handler: handler, request: head, body: body, executor: nil,
                                        failures: failures, channel: nil, remoteAddress: client)
            return runDeferred(writer, response)
        }
        let waits = executor.tasksInFlight >= limit
        if waits && executor.parkedCount >= limit {
            failures.warning("async handlers: \(limit) running and \(limit) waiting on this loop: 503 for \(head.method) \(head.path ?? "")")
            sendUnavailable(response)
            return false
        }
        var writer: ResponseWriter
        if executor.handlerParts.spareWriterOwner == ObjectIdentifier(self),
           let spare = executor.handlerParts.spareWriter.take() {
            spare.renew(request: head, body: body, channel: channel, remoteAddress: client)
            writer = spare
        } else {
            writer = ResponseWriter(handler: handler, request: head, body: body, executor: executor,
                                    failures: failures, channel: channel, remoteAddress: client)
        }
        if !waits {
            writer.launch(on: executor)
            if writer.bufferedAnswerReady {
                writer.writeInline(response)   // answered without suspending: as a closure handler
                // Nobody kept it (the handler may have): the next request's,
                // unless the loop ended (retire let go of its spare).
                if isKnownUniquelyReferenced(&writer) && writer.hasNoWeakOrUnownedReferences
                    && !executor.handlerParts.retired {
                    executor.handlerParts.spareWriter = writer.recycled()
                    executor.handlerParts.spareWriterOwner = ObjectIdentifier(self)
                }
                return false
            }
        }
        let owed = writer
        if waits {
            // Over the limit: the answer is owed from now on, the handler
            // starts when a running one ends (LoopExecutor.runJobs).
            executor.park(limit: limit) { owed.launch(on: executor) }
        }
        // Owed from now on; with a body, the engine streams it while the
        // answer is owed (deferring first is an order every engine takes).
        deferAnswer(owed, response, head)
        if let channel {
            channel.onFailure = { owed.task?.cancel() }
            channel.consumer?.onAttach = { consumer in channel.attached(consumer) }
        }
        return true
    }

    private func deferAnswer(_ writer: ResponseWriter, _ response: Response, _ head: HTTPRequest) {
        guard let d = response.deferAnswer() else {
            failures.warning("async handler for \(head.method) \(head.path ?? ""): the engine cannot defer: 500")
            writer.task?.cancel()
            writer.handlerEnded(CancellationError())
            writer.writeInline(response)
            return
        }
        do { try writer.attach(d) } catch { writer.task?.cancel() }
    }

    /// Engines without a loop (blocking, threaded): the answer is deferred
    /// and the handler runs on the global executor, writing through the
    /// engine's response stream (suspending above its high mark) while the
    /// connection's thread serves the stream and the client. `true`: owed.
    private func runDeferred(_ writer: ResponseWriter, _ response: Response) -> Bool {
        guard let d = response.deferAnswer() else {
            runWaiting(writer, response)   // no handle (out of memory): the answer whole, waited for
            return false
        }
        let wake = CrossThreadWake()
        writer.crossThread = wake
        try? writer.attach(d)   // nothing buffered, not finished: cannot throw
        wake.started(Task { await writer.run() })
        return true
    }

    /// Runs the handler on the global executor and waits for it; the
    /// answer is written whole (when the engine cannot defer).
    private func runWaiting(_ writer: ResponseWriter, _ response: Response) {
        guard let latch = AnswerLatch.make() else {
            response.send(status: 500, contentType: "text/plain", body: "no memory to wait for the handler\n")
            return
        }
        Task {
            await writer.run()
            latch.put(OffloadAnswer())
        }
        _ = latch.wait()
        writer.writeInline(response)
    }
}


/// A response writer's wake-ups on an engine without a loop: the engine's
/// on_writable runs on the connection's thread while the handler's task runs
/// on the global executor, so the hand-over is locked. A wake-up that comes
/// while a write is under way (armed) is kept for the wait that follows it;
/// one that comes while nobody writes is the client leaving: the task is
/// cancelled, as on the loop engines.
final class CrossThreadWake: Sendable {
    private struct State {
        var waiter: CheckedContinuation<Void, Never>? = nil
        var armed = false
        var woken = false
        var done = false
        var gone = false
        var task: Task<Void, Never>? = nil
    }
    private let state = Mutex(State())

    /// The task, before a write (it may answer "wait").
    func arm() { state.withLock { $0.armed = true; $0.woken = false } }
    func disarm() { state.withLock { $0.armed = false } }

    /// The task, after a write answered "wait": until the wake-up (or the release).
    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                s.armed = false
                if s.woken || s.done {
                    s.woken = false
                    return true
                }
                s.waiter = c
                return false
            }
            if now { c.resume() }
        }
    }

    /// The connection's thread: room again, or the client left.
    func wake() {
        let (waiter, cancel) = state.withLock { s -> (CheckedContinuation<Void, Never>?, Task<Void, Never>?) in
            if let w = s.waiter {
                s.waiter = nil
                return (w, nil)
            }
            if s.armed {
                s.woken = true
                return (nil, nil)
            }
            s.gone = true
            return (nil, s.task)
        }
        waiter?.resume()
        cancel?.cancel()
    }

    /// The handle was given back: a waiting write goes on (and fails).
    func release() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.done = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    /// The handler's task, once made (a client gone before cancels it now).
    func started(_ task: Task<Void, Never>) {
        let gone = state.withLock { s -> Bool in
            s.task = task
            return s.gone
        }
        if gone { task.cancel() }
    }
}

// MARK: - Handler tasks kept between requests

/// What async handlers reuse on one loop (`LoopExecutor.handlerParts`, loop
/// thread only).
struct HandlerParts {
    /// The last request head handed out; the next is written over it
    /// (its scheme is always `http`).
    var head = HTTPRequest(method: .get, scheme: "http", authority: nil, path: "/")
    /// `head`'s method, authority (when it has one), path as bytes, and
    /// whether it has fields (`updateHTTPRequest`).
    var method = LastBytes("GET")
    var authority = LastBytes("")
    var hasAuthority = false
    var path = LastBytes("/")
    var hasFields = false
    /// The last response head a handler gave, and what was read from it.
    var response = ResponseHeadMemo()
    /// A writer answered inline, for the next request (`ResponseWriter.renew`).
    var spareWriter: ResponseWriter? = nil
    /// The dispatcher whose handler it runs.
    var spareWriterOwner: ObjectIdentifier? = nil
    /// Handler tasks parked for the next request, newest last.
    fileprivate var idle: [AsyncWorker] = []
    /// The loop ended: handler tasks end instead of parking.
    fileprivate var retired = false

    /// The loop ends: the parked tasks end (their jobs are queued here).
    mutating func retire() {
        retired = true
        // The spare writer holds the executor (and the app's handler): kept,
        // it would keep both alive after the loop and its server are gone.
        spareWriter = nil
        spareWriterOwner = nil
        let parked = idle
        idle = []
        for worker in parked { worker.resume(with: nil) }
    }
}

/// The last response head a handler gave on a loop, and what was read from
/// it. Apps answer with a head made once: a head with the same bits refers
/// to the same storage, so it reads the same (kept here, that storage
/// cannot be freed and reused, nor changed in place: a change copies it).
/// Compared by its bits (a copy of the head would retain its storage).
struct ResponseHeadMemo {
    /// Keeps the storage alive.
    private var head: HTTPResponse? = nil
    /// `head`'s bytes (an HTTPResponse is two references today; a larger
    /// one is never remembered).
    private var bits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    private(set) var status = 0
    /// Whether `head` can go out in one engine call, with its only field's
    /// value when that is `Content-Type`: read when first needed (`sendsWhole()`).
    private var shapeKnown = false
    private var whole = false
    /// Not private(set): the engine call reads it in place (inout), a copy would retain it.
    var contentType: String? = nil

    init() {}

    init(_ head: HTTPResponse, status: Int) {
        guard let bits = Self.bits(of: head) else { return }
        self.head = head
        self.bits = bits
        self.status = status
    }

    private static func bits(of head: HTTPResponse) -> (UInt64, UInt64, UInt64, UInt64)? {
        withUnsafeBytes(of: head) { b -> (UInt64, UInt64, UInt64, UInt64)? in
            guard b.count <= 32 else { return nil }
            var bits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
            withUnsafeMutableBytes(of: &bits) { $0.copyMemory(from: b) }
            return bits
        }
    }

    /// Whether the remembered head can go out in one engine call (then
    /// `contentType` is its type).
    mutating func sendsWhole() -> Bool {
        if !shapeKnown, let head {
            (whole, contentType) = Self.shape(of: head)
            shapeKnown = true
        }
        return whole
    }

    /// Whether `head` can go out in one engine call (`sendsWhole`), with
    /// its only field's value when that is `Content-Type`.
    static func shape(of head: HTTPResponse) -> (whole: Bool, contentType: String?) {
        // By count and index: an iterator copies the fields (and retains
        // their storage) and its second `next()` copies again.
        let fields = head.headerFields
        switch fields.count {
        case 0:
            return (true, nil)
        case 1:
            let field = fields[fields.startIndex]
            guard field.name.rawName == "Content-Type" else { return (false, nil) }
            return (true, field.value)
        default:
            return (false, nil)
        }
    }

    /// Whether `other` is the remembered head, bit for bit.
    func holds(_ other: HTTPResponse) -> Bool {
        guard head != nil, let theirs = Self.bits(of: other) else { return false }
        return bits == theirs
    }
}

/// At most this many handler tasks wait parked on one loop; beyond, a task
/// whose handler returned ends.
private let maxParkedWorkers = 64

/// A task that runs async handlers one after another on its loop: when a
/// handler returns, the task parks (a continuation) and the next request
/// resumes it, instead of making a task per request (a task costs two
/// allocations, its own and its first allocator slab, and its set-up and
/// tear-down). A task whose handler was cancelled ends (cancelling cannot
/// be undone), and so does one beyond `maxParkedWorkers`.
final class AsyncWorker: @unchecked Sendable {
    // @unchecked: touched on its loop thread only (its task runs there, and
    // the dispatcher resumes it there).
    @exclusivity(unchecked) private var parked: UnsafeContinuation<ResponseWriter?, Never>? = nil
    @exclusivity(unchecked) private var first: ResponseWriter? = nil
    @exclusivity(unchecked) private var task: Task<Void, Never>? = nil

    /// Runs `writer`'s handler on `executor`, the loop thread: its first
    /// job runs at once, here, as the loop's executor (every nonisolated
    /// await inside stays put instead of hopping onto the loop's queue),
    /// until the handler first suspends. Returns the task it runs on.
    static func launch(_ writer: ResponseWriter, on executor: LoopExecutor) -> Task<Void, Never> {
        let mark = executor.queuedHere
        let task: Task<Void, Never>
        if let worker = executor.handlerParts.idle.popLast(), let parkedTask = worker.task {
            task = parkedTask
            worker.resume(with: writer)   // its job is queued here, at `mark`
        } else {
            let worker = AsyncWorker()
            worker.first = writer
            task = Task(executorPreference: executor) { await worker.serve(on: executor) }
            worker.task = task
        }
        executor.runQueuedHere(from: mark)
        return task
    }

    fileprivate func resume(with writer: ResponseWriter?) {
        guard let c = parked else { return }
        parked = nil
        c.resume(returning: writer)
    }

    private func serve(on executor: LoopExecutor) async {
        var next = first.take()
        while next != nil {
            do {   // the writer is let go here, not kept while parked
                let writer = next.take()!
                await writer.run()
            }
            // Its own handle (set before its first job ran): no lookup of
            // the current task.
            if task?.isCancelled ?? true || executor.handlerParts.retired
                || executor.handlerParts.idle.count >= maxParkedWorkers { break }
            next = await withUnsafeContinuation { c in
                parked = c
                executor.handlerParts.idle.append(self)
            }
        }
        task = nil
    }
}
