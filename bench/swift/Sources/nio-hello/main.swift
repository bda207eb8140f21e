// nio-hello: the SwiftNIO anchor of Peregrine's side-by-side benchmarks.
//
//   nio-hello --host 127.0.0.1 --port 8080 [--threads 1]
//
// An HTTP/1.1 hello server written the usual NIO 2 way: one
// MultiThreadedEventLoopGroup, ServerBootstrap (backlog 1024, SO_REUSEADDR,
// TCP_NODELAY), configureHTTPServerPipeline(withPipeliningAssistance: true,
// withErrorHandling: true), and a handler that answers every request with
// 200 "Hello, World!" (Server, Date, Content-Type, Content-Length headers).
// Writes go out with one flush per read-complete. The response heads are built
// once per second per event loop (the Date changes), the body buffer once per
// event loop: a request builds no headers and no body.
// Runs until SIGTERM or SIGINT, then closes the listener and exits 0.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import NIOCore
import NIOHTTP1
import NIOPosix

// MARK: - Command line

struct Options {
    var host = "127.0.0.1"
    var port = 8080
    var threads = 1
}

func fail(_ message: String) -> Never {
    var err = StandardError()
    print("nio-hello: \(message)", to: &err)
    print("usage: nio-hello [--host 127.0.0.1] [--port 8080] [--threads 1]", to: &err)
    exit(2)
}

/// Unbuffered writes to file descriptor 2.
func writeToStderr(_ bytes: UnsafeRawBufferPointer) {
    var rest = bytes
    while !rest.isEmpty {
        let n = write(2, rest.baseAddress, rest.count)
        if n <= 0 { return }
        rest = UnsafeRawBufferPointer(rebasing: rest[n...])
    }
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        var string = string
        string.withUTF8 { writeToStderr(UnsafeRawBufferPointer($0)) }
    }
}

func parseOptions(_ arguments: [String]) -> Options {
    var options = Options()
    var i = 1
    func value(_ flag: String) -> String {
        i += 1
        guard i < arguments.count else { fail("\(flag) needs a value") }
        return arguments[i]
    }
    while i < arguments.count {
        let arg = arguments[i]
        switch arg {
        case "--host":
            options.host = value(arg)
        case "--port":
            guard let p = Int(value(arg)), (0...65535).contains(p) else { fail("bad --port") }
            options.port = p
        case "--threads":
            guard let t = Int(value(arg)), t >= 1 else { fail("bad --threads") }
            options.threads = t
        case "-h", "--help":
            print("usage: nio-hello [--host 127.0.0.1] [--port 8080] [--threads 1]")
            exit(0)
        default:
            fail("unknown argument \(arg)")
        }
        i += 1
    }
    return options
}

// MARK: - Date (RFC 9110 IMF-fixdate), formatted once per second

private let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
private let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

func httpDate(_ seconds: time_t) -> String {
    var t = seconds
    var tm = tm()
    gmtime_r(&t, &tm)
    func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
    return "\(weekdays[Int(tm.tm_wday)]), \(two(tm.tm_mday)) \(months[Int(tm.tm_mon)]) \(tm.tm_year + 1900) "
        + "\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)) GMT"
}

// MARK: - Per event loop response cache

/// Everything a response needs, shared by the connections of one event loop
/// and touched only on that loop's thread.
final class ResponseCache {
    let body: ByteBuffer
    private var second: time_t = -1
    private(set) var keepAliveHead = HTTPResponseHead(version: .http1_1, status: .ok)
    private(set) var keepAlive10Head = HTTPResponseHead(version: .http1_1, status: .ok)
    private(set) var closeHead = HTTPResponseHead(version: .http1_1, status: .ok)

    init(allocator: ByteBufferAllocator) {
        var body = allocator.buffer(capacity: 13)
        body.writeStaticString("Hello, World!")
        self.body = body
    }

    /// Rebuilds the heads when the second has changed since the last request.
    @inline(__always)
    func refresh() {
        let now = time(nil)
        if now != second {
            rebuild(now)
        }
    }

    private func rebuild(_ now: time_t) {
        second = now
        let date = httpDate(now)
        let base: [(String, String)] = [
            ("Server", "nio-hello"),
            ("Date", date),
            ("Content-Type", "text/plain"),
            ("Content-Length", "13"),
        ]
        keepAliveHead = HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders(base))
        keepAlive10Head = HTTPResponseHead(
            version: .http1_1, status: .ok, headers: HTTPHeaders(base + [("Connection", "keep-alive")]))
        closeHead = HTTPResponseHead(
            version: .http1_1, status: .ok, headers: HTTPHeaders(base + [("Connection", "close")]))
    }
}

/// Hands each channel the cache of its own event loop. Built before the
/// server starts and read-only afterwards; each cache is only used on its loop.
final class ResponseCaches: @unchecked Sendable {
    private let caches: [ObjectIdentifier: ResponseCache]

    init(group: MultiThreadedEventLoopGroup) {
        var caches: [ObjectIdentifier: ResponseCache] = [:]
        for loop in group.makeIterator() {
            caches[ObjectIdentifier(loop)] = ResponseCache(allocator: ByteBufferAllocator())
        }
        self.caches = caches
    }

    func cache(for loop: any EventLoop) -> ResponseCache {
        guard let cache = caches[ObjectIdentifier(loop)] else {
            preconditionFailure("nio-hello: channel on an unknown event loop")
        }
        return cache
    }
}

// MARK: - Handler

final class HelloHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let cache: ResponseCache
    private var keepAlive = true
    private var isHTTP10 = false

    init(cache: ResponseCache) {
        self.cache = cache
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            keepAlive = head.isKeepAlive
            isHTTP10 = head.version.minor == 0
        case .body:
            break
        case .end:
            respond(context: context)
        }
    }

    private func respond(context: ChannelHandlerContext) {
        cache.refresh()
        let head: HTTPResponseHead
        if !keepAlive {
            head = cache.closeHead
        } else if isHTTP10 {
            head = cache.keepAlive10Head
        } else {
            head = cache.keepAliveHead
        }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(cache.body))), promise: nil)
        if keepAlive {
            context.write(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            let promise = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: promise)
            promise.futureResult.assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

// MARK: - Main

let options = parseOptions(CommandLine.arguments)
let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
let caches = ResponseCaches(group: group)

let bootstrap = ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            let sync = channel.pipeline.syncOperations
            try sync.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
            try sync.addHandler(HelloHandler(cache: caches.cache(for: channel.eventLoop)))
        }
    }
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.maxMessagesPerRead, value: 16)

let serverChannel: any Channel
do {
    serverChannel = try bootstrap.bind(host: options.host, port: options.port).wait()
} catch {
    var err = StandardError()
    print("nio-hello: cannot listen on \(options.host):\(options.port): \(error)", to: &err)
    try? group.syncShutdownGracefully()
    exit(1)
}

// SIGTERM / SIGINT: close the listener; the main thread then shuts down and exits 0.
// (A function, so the handler is not main-actor isolated like top-level closures.)
func installSignalHandlers(closing channel: any Channel) -> [any DispatchSourceSignal] {
    let queue = DispatchQueue(label: "nio-hello.signals")
    return [SIGTERM, SIGINT].map { sig in
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
        source.setEventHandler { @Sendable in
            channel.close(promise: nil)
        }
        source.resume()
        return source
    }
}
let signalSources = installSignalHandlers(closing: serverChannel)

let boundPort = serverChannel.localAddress?.port ?? options.port
var stderrStream = StandardError()
print("nio-hello: listening on \(options.host):\(boundPort)", to: &stderrStream)

try serverChannel.closeFuture.wait()
try? group.syncShutdownGracefully()
withExtendedLifetime(signalSources) {}
exit(0)
