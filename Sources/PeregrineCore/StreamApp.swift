// The built-in `stream` app (BuiltinApp.stream, `peregrine serve --app
// stream`): `/?n=N&size=S&ms=T` answers N chunks of S bytes, one every T ms.
// An async handler: it writes each chunk itself after a `Task.sleep`, on
// the loop that owns the connection (no pool, no timer thread); a client
// that reads slowly makes its write suspend at the high mark, and a client
// that leaves cancels the sleep.
#if canImport(Glibc)
import Glibc
#endif
import HTTPTypes

/// What `/?n=N&size=S&ms=T` asks for; nil when a value is missing its
/// number, out of bounds, or the key is unknown.
struct StreamAppRequest: Equatable {
    static let chunks = 1...10_000
    static let chunkSize = 1...65_536
    static let intervalMs = 0...60_000
    static let bounds = "stream: /?n=N&size=S&ms=T with n 1...10000, size 1...65536, ms 0...60000\n"

    var n = 10
    var size = 64
    var ms = 100

    init?(query: Substring?) {
        guard let query, !query.isEmpty else { return }
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard kv.count == 2, let v = Int(kv[1]) else { return nil }
            switch kv[0] {
            case "n": guard Self.chunks.contains(v) else { return nil }; n = v
            case "size": guard Self.chunkSize.contains(v) else { return nil }; size = v
            case "ms": guard Self.intervalMs.contains(v) else { return nil }; ms = v
            default: return nil
            }
        }
    }
}

/// The bytes every answer's chunks are cut from: 65,535 `x` and a newline,
/// made once; a chunk of S bytes is the last S (no copy per stream).
private final class StreamAppBytes: @unchecked Sendable {
    // @unchecked: written once in init, only read afterwards.
    static let shared = StreamAppBytes()
    let bytes: UnsafeRawBufferPointer

    private init() {
        let count = StreamAppRequest.chunkSize.upperBound
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 1)
        b.initializeMemory(as: UInt8.self, repeating: UInt8(ascii: "x"))
        b[count - 1] = UInt8(ascii: "\n")
        bytes = UnsafeRawBufferPointer(b)   // kept for the process's life
    }

    /// `size` bytes: `size - 1` times `x`, then a newline.
    func chunk(_ size: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[(bytes.count - size)...])
    }
}

extension BuiltinApp {
    /// The `stream` app: an async handler per answer. Chunk i is written at
    /// i × T after the request started (absolute times: a late wake-up does
    /// not delay the chunks after it).
    static func streamApplication() -> Application {
        let ok = HTTPResponse(status: .ok, headerFields: [.contentType: "text/plain"])
        let bad = HTTPResponse(status: .badRequest, headerFields: [.contentType: "text/plain"])
        let bounds = Array(StreamAppRequest.bounds.utf8)
        return .async { request, _, writer in
            let path = request.path ?? ""
            let query = path.firstIndex(of: "?").map { path[path.index(after: $0)...] }
            guard let asked = StreamAppRequest(query: query) else {
                return try await writer.respond(bad, body: bounds)
            }
            // The handler's first job runs on the loop thread of the engines
            // that have one; the blocking and threaded engines run it on the
            // global executor and buffer the whole answer: no stream there.
            guard LoopExecutor.current != nil else {
                return try await writer.respond(HTTPResponse(status: .notImplemented, headerFields: [.contentType: "text/plain"]),
                                                body: "stream: this engine cannot stream a response (blocking, threaded)\n")
            }
            let chunk = StreamAppBytes.shared.chunk(asked.size)
            let start = ContinuousClock.now
            do {
                try await writer.writeHead(ok)
                for i in 0..<asked.n {
                    if i > 0 && asked.ms > 0 {
                        try await Task.sleep(until: start + .milliseconds(i * asked.ms), clock: .continuous)
                    }
                    try await writer.write(chunk)
                }
                try await writer.finish()
            } catch is CancellationError {
                // The client left (or the server stops): the writer ends
                // what was written; nothing to log.
            } catch ResponseWriterError.clientGone {
            }
        }
    }
}
