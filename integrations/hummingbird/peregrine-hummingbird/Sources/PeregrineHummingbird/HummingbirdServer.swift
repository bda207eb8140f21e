// Hummingbird applications on Peregrine: any Hummingbird `HTTPResponder` (a
// `Router`, with its middleware) served by Peregrine's engines through the
// async API (`Application.async`, PeregrineCore/AsyncHTTP.swift).
//
// Per request (PeregrineHummingbird.respond):
//  - the head arrives as a swift-http-types `HTTPRequest` and becomes
//    Hummingbird's `Request(head:body:)` as it is;
//  - the body becomes a Hummingbird `RequestBody` over Peregrine's body
//    sequence (`PeregrineRequestBody`): each chunk is read from the socket
//    only when the handler asks for the next one (Peregrine's backpressure),
//    and copied once into a `ByteBuffer`;
//  - the context is made from a `PeregrineRequestContextSource` (a logger
//    carrying `hb.request.id`, as Hummingbird's own server does, and the
//    client's address);
//  - the `Response`'s head goes to Peregrine's `ResponseWriter`, its body
//    through a `ResponseBodyWriter` (`PeregrineBodyWriter`) whose writes
//    suspend above Peregrine's high mark.
// Everything runs as one task on the loop thread that owns the connection; a
// handler that awaits nothing else (a hello) is answered without a thread hop
// and without the response stream (Peregrine writes it inline).
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Peregrine
import ServiceLifecycle
import UnixSignals

// What a user of this module needs of Peregrine without importing it whole
// (Peregrine's Request, Response, ResponseWriter and RequestBody share their
// names with Hummingbird's).
@_exported import struct PeregrineCore.Configuration
@_exported import enum PeregrineCore.Engine
@_exported import enum PeregrineCore.Trigger
@_exported import class Peregrine.Server

/// What Peregrine gives a Hummingbird request context: a logger and the
/// client's address. (Hummingbird's own `ApplicationRequestContextSource`
/// carries a NIO `Channel`, which Peregrine has none of.)
public struct PeregrineRequestContextSource: RequestContextSource, Sendable {
    /// The request's logger: the server's, with `hb.request.id` set.
    public let logger: Logger
    /// The client's address (with `Configuration.proxyProtocol`, the source the
    /// proxy named); nil where the engine does not know it.
    public let remoteAddress: PeregrineCore.SocketAddress?

    public init(logger: Logger, remoteAddress: PeregrineCore.SocketAddress? = nil) {
        self.logger = logger
        self.remoteAddress = remoteAddress
    }
}

/// Hummingbird's `BasicRequestContext` for Peregrine: the core context
/// (logger, parameters, endpoint path) and nothing else. A context of your
/// own works the same way: `typealias Source = PeregrineRequestContextSource`.
public struct PeregrineRequestContext: RequestContext {
    public typealias Source = PeregrineRequestContextSource
    public var coreContext: CoreRequestContextStorage
    /// The client's address (see `PeregrineRequestContextSource.remoteAddress`).
    public let remoteAddress: PeregrineCore.SocketAddress?

    public init(source: Source) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.remoteAddress
    }
}

/// A Hummingbird responder as a Peregrine async handler.
public struct HummingbirdResponderHandler<Responder: HTTPResponder>: Sendable
where Responder.Context: InitializableFromSource<PeregrineRequestContextSource> {
    public let responder: Responder
    public let logger: Logger

    public init(responder: Responder, logger: Logger) {
        self.responder = responder
        self.logger = logger
    }

    /// Answers one request; an `AsyncRequestHandler`.
    public func respond(_ head: HTTPRequest, _ body: PeregrineCore.RequestBody,
                        _ writer: PeregrineCore.ResponseWriter) async throws {
        var logger = self.logger
        logger[metadataKey: "hb.request.id"] = .stringConvertible(RequestID())
        let response = await withLogger(logger) { logger in
            await Self.response(responder, HummingbirdCore.Request(head: head, body: Self.body(head, body)),
                                .init(logger: logger, remoteAddress: writer.remoteAddress))
        }
        try await writer.writeHead(response.head)
        try await response.body.write(PeregrineBodyWriter(writer: writer))
    }

    /// The responder's answer; an error it throws (other than the
    /// `HTTPResponseError`s a Router turns into answers itself) is a `500`
    /// with an empty body, as on Hummingbird's own server.
    private static func response(_ responder: Responder, _ request: HummingbirdCore.Request,
                                 _ source: PeregrineRequestContextSource) async -> HummingbirdCore.Response {
        let context = Responder.Context(source: source)
        do {
            return try await responder.respond(to: request, context: context)
        } catch {
            source.logger.debug("Unrecognised Error", metadata: ["error.type": "\(error)"])
            return HummingbirdCore.Response(status: .internalServerError, body: .init())
        }
    }

    /// A request without body framing has no body: an empty buffer (no
    /// sequence to make); otherwise Peregrine's body, read on demand.
    private static func body(_ head: HTTPRequest, _ body: PeregrineCore.RequestBody) -> HummingbirdCore.RequestBody {
        let fields = head.headerFields
        if fields[.transferEncoding] == nil, fields[.contentLength] == nil || fields[.contentLength] == "0" {
            return HummingbirdCore.RequestBody(buffer: ByteBuffer())
        }
        return HummingbirdCore.RequestBody(asyncSequence: PeregrineRequestBody(body))
    }
}

/// Peregrine's request body as the `ByteBuffer` sequence a Hummingbird
/// `RequestBody` reads: nothing is read ahead (the next chunk is read from
/// the socket when `next()` asks for it); each chunk is copied once into a
/// `ByteBuffer`. Single pass, as Peregrine's body.
public struct PeregrineRequestBody: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    let base: PeregrineCore.RequestBody

    public init(_ base: PeregrineCore.RequestBody) {
        self.base = base
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: PeregrineCore.RequestBody.AsyncIterator

        public mutating func next() async throws -> ByteBuffer? {
            guard let chunk = try await base.next() else { return nil }
            return ByteBuffer(bytes: chunk)
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: base.makeAsyncIterator())
    }
}

/// A Hummingbird response body written onto Peregrine's `ResponseWriter`:
/// each `ByteBuffer` is copied once into a `[UInt8]` the writer takes as it is
/// (buffered for an inline answer, or copied into the response stream); a
/// write suspends while the stream holds more than its high mark.
public struct PeregrineBodyWriter: ResponseBodyWriter {
    let writer: PeregrineCore.ResponseWriter

    public init(writer: PeregrineCore.ResponseWriter) {
        self.writer = writer
    }

    public mutating func write(_ buffer: ByteBuffer) async throws {
        if buffer.readableBytes == 0 { return }
        try await writer.write(Array(buffer.readableBytesView))
    }

    public consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        try await writer.finish(trailers: trailingHeaders)
    }
}

extension PeregrineCore.Application {
    /// A Hummingbird responder (a `Router`'s `buildResponder()`) as a Peregrine
    /// application; `logger` is the requests' (Hummingbird's `context.logger`).
    public static func hummingbird<Responder: HTTPResponder>(_ responder: Responder, logger: Logger) -> Self
    where Responder.Context: InitializableFromSource<PeregrineRequestContextSource> {
        let handler = HummingbirdResponderHandler(responder: responder, logger: logger)
        return .async { head, body, writer in try await handler.respond(head, body, writer) }
    }
}

/// A Hummingbird application on Peregrine: Hummingbird's `Application(router:)`
/// with Peregrine's engines underneath. A swift-service-lifecycle `Service`:
/// `run()` serves until graceful shutdown (requests in flight are answered,
/// within `configuration.shutdownDeadline`) or cancellation.
///
/// ```swift
/// let router = Router(context: PeregrineRequestContext.self)
/// router.get("/hello") { _, _ in "Hello" }
/// var config = Configuration()
/// config.port = 8080
/// try await HummingbirdServer(router: router, configuration: config).runService()
/// ```
public struct HummingbirdServer<Responder: HTTPResponder>: Service, Sendable
where Responder.Context: InitializableFromSource<PeregrineRequestContextSource> {
    /// The Peregrine server (its `port` once started; `start`/`shutdown` for
    /// callers that do not run it as a Service).
    public let server: Server
    public let logger: Logger

    /// Serves `responder`. `logger` (default: `configuration.logger`) is the
    /// requests' logger.
    public init(responder: Responder, configuration: Configuration = Configuration(), logger: Logger? = nil) {
        let logger = logger ?? configuration.logger
        self.logger = logger
        self.server = Server(configuration: configuration, application: .hummingbird(responder, logger: logger))
    }

    /// Serves what `router` builds (`router.buildResponder()`).
    public init<Builder: HTTPResponderBuilder>(router: Builder, configuration: Configuration = Configuration(),
                                               logger: Logger? = nil) where Builder.Responder == Responder {
        self.init(responder: router.buildResponder(), configuration: configuration, logger: logger)
    }

    /// Serves until graceful shutdown (the drain) or cancellation (at once).
    public func run() async throws {
        try await server.run()
    }

    /// Runs in a `ServiceGroup` of its own that shuts down gracefully on
    /// `gracefulShutdownSignals`, as Hummingbird's `runService`.
    public func runService(gracefulShutdownSignals: [UnixSignal] = [.sigterm, .sigint]) async throws {
        let group = ServiceGroup(configuration: .init(services: [self], gracefulShutdownSignals: gracefulShutdownSignals,
                                                      logger: logger))
        try await group.run()
    }
}
