// What a server runs: an HTTP handler or a raw-TCP data handler.
#if canImport(Glibc)
import Glibc
#endif
import HTTPTypes

/// Answers one request. `request` and `response` are valid only during the call.
public typealias HTTPHandler = @Sendable (Request, Response) -> Void

/// Receives bytes from a raw TCP connection and returns how many it
/// consumed; unconsumed bytes are offered again with the next arrival.
public typealias DataHandler = @Sendable (Connection, UnsafeRawBufferPointer) -> Int

/// Answers a request on the loop thread and returns `true`, or returns
/// `false` without answering (see `Application.offloaded`).
public typealias InlineRoute = @Sendable (Request, Response) -> Bool

public enum Application: Sendable {
    case http(HTTPHandler)
    case raw(DataHandler)
    /// HTTP, answered later: the handler gets a copy of the request and a
    /// `Responder`, and runs on the server's offload pool
    /// (`Configuration.offloadThreads` workers, `offloadQueue` waiting at
    /// most; beyond, `503` at once), where it may block. The loop goes on
    /// serving meanwhile; answers still leave in request order.
    ///
    /// `inline`, when given, sees every request first, on the loop thread,
    /// with the borrowed `Request` and `Response` of an `.http` handler:
    /// it returns `true` when it answered there (a fast route: no copy, no
    /// thread hop, no pool slot), `false` to send the request to the pool.
    case offloaded(OffloadedHandler, inline: InlineRoute? = nil)
    /// HTTP, answered by an async handler (`AsyncRequestHandler`): the head
    /// as a swift-http-types `HTTPRequest`, the body as an `AsyncSequence`
    /// read on demand, the answer through a `ResponseWriter`. It runs as a
    /// task on the loop thread that owns the connection (the loop is its
    /// executor): a handler that awaits nothing else never changes thread.
    /// At most `Configuration.asyncLimit` run at once per loop; beyond,
    /// `503`. Do not block in it: use `.offloaded` for blocking work.
    case async(AsyncRequestHandler)
    /// HTTP with streamed request bodies. `head` sees every request that
    /// has a body (Content-Length > 0 or chunked) once its head is parsed,
    /// before the body is read, and decides:
    /// - return a `BodyConsumer`: the body arrives through it as it comes,
    ///   decoded, with backpressure (`Configuration.maxStreamedBody`
    ///   applies; `100 Continue` goes out when the server first waits for
    ///   body bytes);
    /// - answer through the `Response` (and return nil): the body is never
    ///   read (an `Expect: 100-continue` client never sends it), the answer
    ///   carries `Connection: close` and the connection closes after it;
    /// - return nil without answering: the body is buffered
    ///   (`Limits.maxBody`) and `request` answers the whole request.
    /// Requests without a body go to `request` directly.
    case streaming(head: StreamingHeadHandler, request: HTTPHandler)
}

/// The applications the CLI and the benchmarks run.
package enum BuiltinApp: String, CaseIterable, Sendable {
    /// `Hello, World!` for every request.
    case hello
    /// `Hello, World!` from an async handler (`.async`), for benchmarks.
    case helloAsync = "hello-async"
    /// Raw TCP echo: every byte back, with backpressure.
    case echo
    /// Sleeps `sleepMilliseconds` on the offload pool, then answers
    /// `slept N ms` (`?ms=N` sets the time per request); `/hello` answers at
    /// once on the loop. Other clients are not delayed on the event engines.
    case sleep
    /// Takes any request body as a stream, discards it, and answers
    /// `received N bytes` (N decoded bytes; 0 without a body).
    case upload
    /// The files under a root directory (`StaticFiles`): GET and HEAD,
    /// ranges, ETag / Last-Modified, sent with sendfile(2). Needs a root:
    /// `application(sleepMilliseconds:root:)`.
    case staticFiles = "static"
    /// `/?n=N&size=S&ms=T`: N chunks of S bytes, one every T ms, chunked,
    /// through a `ResponseStream` (defaults 10, 64, 100; bounds n 1...10000,
    /// size 1...65536, ms 0...60000, 400 beyond). Every engine streams it.
    case stream

    /// The application (`staticFiles` has no root here: every request gets
    /// 500 saying so; use `application(sleepMilliseconds:root:)`).
    package var application: Application { application(sleepMilliseconds: 100) }

    /// The application with what the built-in apps take: `sleepMilliseconds`
    /// is the `sleep` app's delay, `root` the `static` app's directory
    /// (required there, refused for the others). Throws when the root is
    /// missing, is not a directory, or is given to another app.
    package func application(sleepMilliseconds: Int, root: String?) throws(StaticFilesError) -> Application {
        guard self == .staticFiles else {
            if root != nil { throw .rootNotApplicable(app: rawValue) }
            return application(sleepMilliseconds: sleepMilliseconds)
        }
        guard let root else { throw .rootMissing }
        return try StaticFiles(root: root).application
    }

    /// The application; `sleepMilliseconds` is the `sleep` app's delay
    /// (`?ms=N` in the target overrides it per request). `staticFiles` has
    /// no root here: every request gets 500 saying so.
    package func application(sleepMilliseconds: Int) -> Application {
        switch self {
        case .staticFiles:
            return .http { _, response in
                response.send(status: 500, contentType: "text/plain",
                              body: "static: no root directory (BuiltinApp.application(sleepMilliseconds:root:))\n")
            }
        case .hello:
            return .http { _, response in
                response.send(status: 200, contentType: "text/plain", body: "Hello, World!")
            }
        case .helloAsync:
            // Made once: each answer shares them (no allocation per request).
            let head = HTTPResponse(status: .ok, headerFields: [.contentType: "text/plain"])
            let body = Array("Hello, World!".utf8)
            return .async { _, _, writer in
                try await writer.respond(head, body: body)
            }
        case .echo:
            return .raw { connection, bytes in
                connection.write(bytes) ? bytes.count : 0
            }
        case .sleep:
            // /hello answers at once on the loop; anything else sleeps on the pool.
            return .offloaded({ request, responder in
                var ms = sleepMilliseconds
                if let q = request.query, q.hasPrefix("ms="), let n = Int(q.dropFirst(3)), n >= 0 { ms = n }
                if ms > 0 {   // 0: no sleep system call (the benchmark's bare offloaded round trip)
                    var ts = timespec(tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000)
                    var left = timespec()
                    while nanosleep(&ts, &left) != 0 && errno == EINTR { ts = left }
                }
                responder.send(body: "slept \(ms) ms")
            }, inline: { request, response in
                guard request.path.elementsEqual("/hello".utf8) else { return false }
                response.send(status: 200, contentType: "text/plain", body: "Hello, World!")
                return true
            })
        case .stream:
            return BuiltinApp.streamApplication()
        case .upload:
            return .streaming(head: { _, _ in
                BodyConsumer(chunk: { bytes, _ in bytes.count }, end: { how, body in
                    if how == .complete { body.response?.send(body: "received \(body.received) bytes\n") }
                })
            }, request: { request, response in
                response.send(body: "received \(request.body.count) bytes\n")
            })
        }
    }
}
