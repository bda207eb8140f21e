// What a server runs: an HTTP handler or a raw-TCP data handler.

/// Answers one request. `request` and `response` are valid only during the call.
public typealias HTTPHandler = @Sendable (Request, Response) -> Void

/// Receives bytes from a raw TCP connection and returns how many it
/// consumed; unconsumed bytes are offered again with the next arrival.
public typealias DataHandler = @Sendable (Connection, UnsafeRawBufferPointer) -> Int

public enum Application: Sendable {
    case http(HTTPHandler)
    case raw(DataHandler)
}

/// The applications the CLI and the benchmarks run.
public enum BuiltinApp: String, CaseIterable, Sendable {
    /// `Hello, World!` for every request.
    case hello
    /// Raw TCP echo: every byte back, with backpressure.
    case echo

    public var application: Application {
        switch self {
        case .hello:
            return .http { _, response in
                response.send(status: 200, contentType: "text/plain", body: "Hello, World!")
            }
        case .echo:
            return .raw { connection, bytes in
                connection.write(bytes) ? bytes.count : 0
            }
        }
    }
}
