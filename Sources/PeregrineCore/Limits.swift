// The request limits every parser and engine applies. In a file of its own,
// with no import beyond the standard library, so the parsers' differential
// fuzzer (make fuzz-diff) can build the parsers' dependencies without the
// rest of PeregrineCore (swift-log, swift-metrics).

/// Request limits; each violation is answered with its status and a close.
public struct Limits: Sendable, Equatable {
    /// Request line without CRLF; 414 beyond.
    public var maxRequestLine = 8 * 1024
    /// Whole header section; 431 beyond.
    public var maxHeaderBytes = 16 * 1024
    /// Header fields; 431 beyond.
    public var maxHeaders = 100
    /// Decoded body; 413 beyond, without reading the rest.
    public var maxBody = 1 << 20

    public init() {}

    public init(maxRequestLine: Int, maxHeaderBytes: Int, maxHeaders: Int, maxBody: Int) {
        self.maxRequestLine = maxRequestLine
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaders = maxHeaders
        self.maxBody = maxBody
    }
}
