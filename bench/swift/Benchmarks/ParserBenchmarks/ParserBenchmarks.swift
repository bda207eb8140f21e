// Parser micro-benchmarks: the C HTTP/1.1 parser (csrc/http1.c, prg_http_parse)
// and the pure-Swift engine's port of it (PeregrineSwiftEpoll.HTTP1Parser) on
// the same fixed set of requests, as "C/<name>" and "Swift/<name>".
// Metrics: wall clock and mallocCountTotal.
//
// Each benchmark iteration parses its request 1000 times (scalingFactor .kilo).
// The text table and `--format histogramPercentiles` report per parse (the
// `*` after a metric name means "scaled": divided by 1000, rounded); the raw
// per-iteration values (1000 parses) are what `--format influx` prints.
//
//   cd bench/swift && swift package benchmark --target ParserBenchmarks
//
// Every parse resets the parser first (prg_http_parser_reset / reset()), uses
// the default limits (prg_http_limits_default / HTTP1Limits()) and a header
// array of 100 entries allocated once, before measurement. The request bytes live in a buffer
// allocated once as well. The chunked request is decoded in place by the
// parser, so its buffer is restored (one memcpy of its ~120 bytes) before
// each parse; that copy is part of its measured time.

import Benchmark
import CPeregrine
import PeregrineSwiftEpoll

// MARK: - The requests

struct ParseCase: Sendable {
    /// Benchmark name suffix, shared by the C and (later) Swift parser sets.
    let name: String
    let bytes: [UInt8]
    /// How many requests `bytes` holds back to back (pipelined).
    let requests: Int
    /// The parser rewrites the buffer (chunked decoding in place): restore it before each parse.
    let mutatesBuffer: Bool
}

private func ascii(_ s: String) -> [UInt8] { Array(s.utf8) }

private let getMinimal = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"

private let getBrowser =
    "GET /docs/index.html?lang=en&page=2 HTTP/1.1\r\n"
    + "Host: www.example.com\r\n"
    + "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    + "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    + "Accept-Language: en-US,en;q=0.5\r\n"
    + "Accept-Encoding: gzip, deflate, br\r\n"
    + "Connection: keep-alive\r\n"
    + "Cookie: session=3f2a9c1e7b4d8a06; theme=dark\r\n"
    + "Upgrade-Insecure-Requests: 1\r\n"
    + "\r\n"

private let body64 = String(repeating: "0123456789abcdef", count: 4)  // 64 bytes

private let postContentLength =
    "POST /api/items HTTP/1.1\r\n"
    + "Host: localhost\r\n"
    + "Content-Type: application/octet-stream\r\n"
    + "Content-Length: 64\r\n"
    + "\r\n"
    + body64

private let postChunked =
    "POST /upload HTTP/1.1\r\n"
    + "Host: localhost\r\n"
    + "Content-Type: text/plain\r\n"
    + "Transfer-Encoding: chunked\r\n"
    + "\r\n"
    + "10\r\n0123456789abcdef\r\n"
    + "8\r\nghijklmn\r\n"
    + "1a\r\nopqrstuvwxyzABCDEFGHIJKLMN\r\n"
    + "0\r\n\r\n"

let parseCases: [ParseCase] = [
    ParseCase(name: "get-minimal", bytes: ascii(getMinimal), requests: 1, mutatesBuffer: false),
    ParseCase(name: "get-browser", bytes: ascii(getBrowser), requests: 1, mutatesBuffer: false),
    ParseCase(name: "post-content-length-64", bytes: ascii(postContentLength), requests: 1, mutatesBuffer: false),
    ParseCase(name: "post-chunked-3", bytes: ascii(postChunked), requests: 1, mutatesBuffer: true),
    ParseCase(
        name: "pipelined-16x-get-minimal",
        bytes: ascii(String(repeating: getMinimal, count: 16)),
        requests: 16,
        mutatesBuffer: false
    ),
]

// MARK: - C parser

/// Buffers allocated once per benchmark, outside measurement.
final class CParseFixture: @unchecked Sendable {
    let pristine: UnsafeMutableBufferPointer<UInt8>
    let buffer: UnsafeMutableBufferPointer<UInt8>
    let headers: UnsafeMutablePointer<prg_header>
    let parser: UnsafeMutablePointer<prg_http_parser>
    let request: UnsafeMutablePointer<prg_request>
    let limits: UnsafeMutablePointer<prg_http_limits>
    let testCase: ParseCase

    static let headerCapacity = 100

    init(_ testCase: ParseCase) {
        self.testCase = testCase
        pristine = .allocate(capacity: testCase.bytes.count)
        _ = pristine.initialize(from: testCase.bytes)
        buffer = .allocate(capacity: testCase.bytes.count)
        _ = buffer.initialize(from: testCase.bytes)
        headers = .allocate(capacity: Self.headerCapacity)
        headers.initialize(repeating: prg_header(), count: Self.headerCapacity)
        parser = .allocate(capacity: 1)
        parser.initialize(to: prg_http_parser())
        request = .allocate(capacity: 1)
        request.initialize(to: prg_request())
        limits = .allocate(capacity: 1)
        limits.initialize(to: prg_http_limits())
        prg_http_limits_default(limits)
        precondition(limits.pointee.max_headers <= Self.headerCapacity)
    }

    deinit {
        pristine.deallocate()
        buffer.deallocate()
        headers.deallocate()
        parser.deallocate()
        request.deallocate()
        limits.deallocate()
    }

    /// Parses every request in the buffer once; returns the bytes consumed
    /// (traps if a request does not parse completely).
    @inline(__always)
    func parseAll() -> Int {
        let base = buffer.baseAddress!
        let count = buffer.count
        if testCase.mutatesBuffer {
            base.update(from: pristine.baseAddress!, count: count)
        }
        var offset = 0
        for _ in 0..<testCase.requests {
            prg_http_parser_reset(parser)
            let r = prg_http_parse(parser, base + offset, count - offset, limits, request, headers)
            if r <= 0 { fatalError("\(testCase.name): prg_http_parse returned \(r) at offset \(offset)") }
            offset += Int(r)
        }
        return offset
    }
}

// MARK: - Swift parser

/// The same buffers and the same work as `CParseFixture`, for HTTP1Parser.
final class SwiftParseFixture: @unchecked Sendable {
    let pristine: UnsafeMutableRawBufferPointer
    let buffer: UnsafeMutableRawBufferPointer
    let headers: UnsafeMutableRawPointer
    // Behind pointers like the C fixture's: a class's stored `var` would add
    // dynamic exclusivity checks to every parse that are no part of the parser.
    let parser: UnsafeMutablePointer<HTTP1Parser>
    let request: UnsafeMutablePointer<ParsedRequest>
    let limits = HTTP1Limits()
    let testCase: ParseCase

    init(_ testCase: ParseCase) {
        self.testCase = testCase
        pristine = .allocate(byteCount: testCase.bytes.count, alignment: 16)
        pristine.copyBytes(from: testCase.bytes)
        buffer = .allocate(byteCount: testCase.bytes.count, alignment: 16)
        buffer.copyBytes(from: testCase.bytes)
        headers = .allocate(byteCount: CParseFixture.headerCapacity * 32, alignment: 16)
        headers.initializeMemory(as: UInt8.self, repeating: 0, count: CParseFixture.headerCapacity * 32)
        parser = .allocate(capacity: 1)
        parser.initialize(to: HTTP1Parser())
        request = .allocate(capacity: 1)
        request.initialize(to: ParsedRequest())
        precondition(limits.maxHeaders <= CParseFixture.headerCapacity)
    }

    deinit {
        pristine.deallocate()
        buffer.deallocate()
        headers.deallocate()
        parser.deallocate()
        request.deallocate()
    }

    /// Parses every request in the buffer once; returns the bytes consumed
    /// (traps if a request does not parse completely).
    @inline(__always)
    func parseAll() -> Int {
        let base = buffer.baseAddress!
        let count = buffer.count
        if testCase.mutatesBuffer {
            base.copyMemory(from: pristine.baseAddress!, byteCount: count)
        }
        var offset = 0
        for _ in 0..<testCase.requests {
            parser.pointee.reset()
            let r = parser.pointee.parse(UnsafeMutableRawBufferPointer(start: base + offset, count: count - offset),
                                         limits: limits, headers: headers, into: &request.pointee)
            if r <= 0 { fatalError("\(testCase.name): HTTP1Parser.parse returned \(r) at offset \(offset)") }
            offset += r
        }
        return offset
    }
}

// MARK: - Registration

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: 100,
        scalingFactor: .kilo,          // 1000 parses per iteration; tables print per parse
        maxDuration: .seconds(2),
        maxIterations: 1_000_000
    )

    for testCase in parseCases {
        // C parser (csrc/http1.c).
        let c = CParseFixture(testCase)
        // Check once, outside measurement, that the whole buffer parses.
        precondition(c.parseAll() == testCase.bytes.count, "\(testCase.name) did not consume all bytes")
        Benchmark("C/\(testCase.name)") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(c.parseAll())
            }
        }

        // Swift parser (PeregrineSwiftEpoll.HTTP1Parser), same bytes, same work.
        let swift = SwiftParseFixture(testCase)
        precondition(swift.parseAll() == testCase.bytes.count, "\(testCase.name) did not consume all bytes (Swift)")
        Benchmark("Swift/\(testCase.name)") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(swift.parseAll())
            }
        }
    }
}
