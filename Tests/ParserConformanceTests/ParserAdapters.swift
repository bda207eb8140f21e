// The two parsers behind one small interface, so the runner feeds them alike.
import CPeregrine
import PeregrineSwiftEpoll

/// What a complete request looked like, as offsets from the buffer start
/// (so the C and Swift slices can be compared exactly) plus the header table.
struct RequestSnapshot: Equatable {
    struct Slice: Equatable, CustomStringConvertible {
        var offset: Int
        var count: Int
        var description: String { "\(offset)+\(count)" }
    }
    var method: Slice
    var target: Slice
    var versionMinor: Int
    var flags: UInt32
    var headerCount: Int
    var headersIsTable: Bool
    var headers: [(name: Slice, value: Slice)]
    var body: Slice
    var contentLength: Int64

    static func == (a: RequestSnapshot, b: RequestSnapshot) -> Bool {
        a.method == b.method && a.target == b.target && a.versionMinor == b.versionMinor
            && a.flags == b.flags && a.headerCount == b.headerCount && a.headersIsTable == b.headersIsTable
            && a.headers.count == b.headers.count
            && zip(a.headers, b.headers).allSatisfy { $0.name == $1.name && $0.value == $1.value }
            && a.body == b.body && a.contentLength == b.contentLength
    }
}

/// One parser under test: both keep their state between calls on a buffer
/// whose address may change.
protocol ParserUnderTest {
    static var label: String { get }
    init(limits: HTTP1Limits, headers: UnsafeMutableRawPointer)
    mutating func parse(_ buffer: UnsafeMutableRawBufferPointer) -> Int
    mutating func compact(_ buffer: UnsafeMutableRawBufferPointer) -> Int
    var headComplete: Bool { get }
    var parserFlags: UInt32 { get }
    /// The last complete request, relative to `buffer`.
    func snapshot(relativeTo buffer: UnsafeRawPointer) -> RequestSnapshot
}

private func slice(_ p: UnsafeRawPointer?, _ n: Int, _ base: UnsafeRawPointer) -> RequestSnapshot.Slice {
    .init(offset: p.map { $0 - base } ?? -1, count: n)
}

/// Reads the 32-byte records both parsers write (the C prg_header layout).
private func headerSlices(_ table: UnsafeRawPointer, _ count: Int, _ base: UnsafeRawPointer)
    -> [(name: RequestSnapshot.Slice, value: RequestSnapshot.Slice)]
{
    (0..<count).map { i in
        let r = table + i * 32
        return (slice(r.load(as: UnsafeRawPointer?.self), r.load(fromByteOffset: 8, as: Int.self), base),
                slice(r.load(fromByteOffset: 16, as: UnsafeRawPointer?.self), r.load(fromByteOffset: 24, as: Int.self), base))
    }
}

extension prg_http_limits {
    init(_ l: HTTP1Limits) {
        self.init(max_request_line: l.maxRequestLine, max_header_bytes: l.maxHeaderBytes,
                  max_headers: l.maxHeaders, max_body: l.maxBody)
    }
}

/// csrc/http1.c through its public API.
struct CParser: ParserUnderTest {
    static let label = "C"
    var p = prg_http_parser()
    var limits: prg_http_limits
    var request = prg_request()
    let headers: UnsafeMutableRawPointer

    init(limits: HTTP1Limits, headers: UnsafeMutableRawPointer) {
        self.limits = prg_http_limits(limits)
        self.headers = headers
        prg_http_parser_reset(&p)
    }

    mutating func parse(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        let hdrs = headers.assumingMemoryBound(to: prg_header.self)
        let buf = buffer.baseAddress?.assumingMemoryBound(to: UInt8.self)
        return Int(prg_http_parse(&p, buf, buffer.count, &limits, &request, hdrs))
    }

    mutating func compact(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        Int(prg_http_compact(&p, buffer.baseAddress?.assumingMemoryBound(to: UInt8.self), buffer.count))
    }

    var headComplete: Bool {
        var copy = p
        return prg_http_head_complete(&copy) != 0
    }

    var parserFlags: UInt32 { p.flags }

    func snapshot(relativeTo base: UnsafeRawPointer) -> RequestSnapshot {
        let r = request
        let table = UnsafeRawPointer(r.headers)
        return RequestSnapshot(
            method: slice(r.method.ptr, r.method.len, base),
            target: slice(r.target.ptr, r.target.len, base),
            versionMinor: Int(r.version_minor),
            flags: r.flags,
            headerCount: r.header_count,
            headersIsTable: table == UnsafeRawPointer(headers),
            headers: table.map { headerSlices($0, r.header_count, base) } ?? [],
            body: slice(r.body.ptr, r.body.len, base),
            contentLength: r.content_length)
    }
}

/// Sources/PeregrineSwiftEpoll/HTTP1Parser.swift.
struct SwiftParser: ParserUnderTest {
    static let label = "Swift"
    var p = HTTP1Parser()
    let limits: HTTP1Limits
    var request = ParsedRequest()
    let headers: UnsafeMutableRawPointer

    init(limits: HTTP1Limits, headers: UnsafeMutableRawPointer) {
        self.limits = limits
        self.headers = headers
        p.reset()
    }

    mutating func parse(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        p.parse(buffer, limits: limits, headers: headers, into: &request)
    }

    mutating func compact(_ buffer: UnsafeMutableRawBufferPointer) -> Int { p.compact(buffer) }

    var headComplete: Bool { p.headComplete }
    var parserFlags: UInt32 { p.flags.rawValue }

    func snapshot(relativeTo base: UnsafeRawPointer) -> RequestSnapshot {
        let r = request
        return RequestSnapshot(
            method: slice(r.method.baseAddress, r.method.count, base),
            target: slice(r.target.baseAddress, r.target.count, base),
            versionMinor: r.versionMinor,
            flags: r.flags.rawValue,
            headerCount: r.headerCount,
            headersIsTable: r.headers == UnsafeRawPointer(headers),
            headers: r.headers.map { headerSlices($0, r.headerCount, base) } ?? [],
            body: slice(r.body.baseAddress, r.body.count, base),
            contentLength: r.contentLength)
    }
}
