// How the bytes are handed to a parser and what a run produced: shared by
// ParserConformanceTests and the differential fuzz harness (fuzz/fuzz_diff.swift,
// `make fuzz-diff`), so both use one notion of "the C and Swift parsers agree".
// No XCTest here: the harness compiles this file outside SwiftPM.
import PeregrineSwiftEpoll

/// How the bytes are handed over.
struct Feeding: CustomStringConvertible {
    /// Prefix lengths of successive calls (the last is the whole input).
    var cuts: [Int]
    /// Every call gets a fresh allocation of exactly the bytes held (so a
    /// stored pointer or an over-read shows); otherwise one buffer in place.
    var copy: Bool
    /// Call compact after each incomplete call and shrink the buffer (conn.c).
    var compact: Bool
    var label: String
    var description: String { "\(label)\(copy ? ", fresh buffer per call" : "")\(compact ? ", compact" : ", no compact")" }
}

/// What one feeding produced, independent of how the bytes were fed.
struct Outcome: Equatable, CustomStringConvertible {
    struct Fields: Equatable {
        var method: [UInt8]
        var target: [UInt8]
        var versionMinor: Int
        var flags: UInt32
        var headers: [[UInt8]] // name, value, name, value...
        var body: [UInt8]
        var contentLength: Int64
    }
    /// > 0: bytes of the input the request used (after undoing compaction); else the parser's result.
    var result: Int
    var headComplete: Bool
    /// The parser's flags once the head is complete (0 before).
    var parserFlags: UInt32
    var fields: Fields?
    /// The input after the request: as left in the buffer, then the bytes not fed yet.
    var leftover: [UInt8]

    var description: String {
        var s = "result \(result), headComplete \(headComplete), flags \(parserFlags)"
        if let f = fields {
            s += ", \(str(f.method)) \(str(f.target)) 1.\(f.versionMinor) flags \(f.flags) cl \(f.contentLength)"
            s += " headers \(stride(from: 0, to: f.headers.count, by: 2).map { "\(str(f.headers[$0])): \(str(f.headers[$0 + 1]))" })"
            s += " body \(str(f.body))"
        }
        if !leftover.isEmpty { s += " leftover \(str(leftover))" }
        return s
    }
}

/// What must agree between C and Swift fed the same way: offsets and bytes.
struct ExactRun: Equatable {
    var snapshot: RequestSnapshot?
    var bufferBytes: [UInt8] // the buffer's first `result` bytes (decoded body in place)
    var bufferLength: Int
}

func str(_ b: [UInt8]) -> String {
    var s = ""
    for c in b {
        switch c {
        case 0x0D: s += "\\r"
        case 0x0A: s += "\\n"
        case 0x20...0x7E: s.unicodeScalars.append(Unicode.Scalar(c))
        default: s += "\\x" + String(c, radix: 16, uppercase: true)
        }
    }
    return "\"" + s + "\""
}

/// Feeds `raw` to a fresh parser of type P as `feeding` says. Problems with
/// the parser's own contract (sticky errors, head_complete monotone, slices
/// inside the buffer...) go to `problems`.
func feed<P: ParserUnderTest>(_: P.Type, _ raw: [UInt8], limits: HTTP1Limits, _ feeding: Feeding,
                             problems: inout [String]) -> (Outcome, ExactRun) {
    let headers = UnsafeMutableRawPointer.allocate(byteCount: max(limits.maxHeaders, 1) * 32, alignment: 16)
    defer { headers.deallocate() }
    headers.initializeMemory(as: UInt8.self, repeating: 0xEE, count: max(limits.maxHeaders, 1) * 32)
    var parser = P(limits: limits, headers: headers)
    var storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(feeding.copy ? 1 : raw.count, 1), alignment: 1)
    defer { storage.deallocate() }
    var len = 0, fed = 0, shrunk = 0, r = 0
    var wasComplete = false, headFlags: UInt32 = 0

    for cut in feeding.cuts {
        if feeding.copy {
            let fresh = UnsafeMutableRawBufferPointer.allocate(byteCount: max(len + cut - fed, 1), alignment: 1)
            fresh.copyMemory(from: UnsafeRawBufferPointer(rebasing: storage[0..<len]))
            storage.deallocate()
            storage = fresh
        }
        raw.withUnsafeBytes { src in
            (storage.baseAddress! + len).copyMemory(from: src.baseAddress! + fed, byteCount: cut - fed)
        }
        len += cut - fed
        fed = cut
        r = parser.parse(UnsafeMutableRawBufferPointer(rebasing: storage[0..<len]))
        if r != 0 { break }
        if parser.headComplete {
            if wasComplete && parser.parserFlags != headFlags { problems.append("flags changed while waiting for the body") }
            wasComplete = true
            headFlags = parser.parserFlags
        } else if wasComplete {
            problems.append("headComplete went back to false")
        }
        if feeding.compact {
            let d = parser.compact(UnsafeMutableRawBufferPointer(rebasing: storage[0..<len]))
            if d < 0 || d > len { problems.append("compact returned \(d) for \(len) bytes") }
            len -= d
            shrunk += d
        }
    }

    let buffer = UnsafeMutableRawBufferPointer(rebasing: storage[0..<len])
    let base = UnsafeRawPointer(storage.baseAddress!)
    var outcome = Outcome(result: r, headComplete: parser.headComplete,
                          parserFlags: parser.headComplete ? parser.parserFlags : 0, fields: nil, leftover: [])
    var exact = ExactRun(snapshot: nil, bufferBytes: [], bufferLength: len)
    if r > 0 {
        if r > len { problems.append("consumed \(r) of \(len) bytes"); return (outcome, exact) }
        let snap = parser.snapshot(relativeTo: base)
        func bytes(_ s: RequestSnapshot.Slice, _ what: String) -> [UInt8] {
            if s.count == 0 { return [] }
            guard s.offset >= 0, s.offset + s.count <= r else {
                problems.append("\(what) slice \(s) outside the request's \(r) bytes")
                return []
            }
            return Array(UnsafeRawBufferPointer(start: base + s.offset, count: s.count))
        }
        if !snap.headersIsTable { problems.append("request.headers is not the table passed") }
        if snap.headerCount > limits.maxHeaders { problems.append("headerCount > maxHeaders") }
        if snap.flags != parser.parserFlags { problems.append("request flags != parser flags") }
        if !parser.headComplete { problems.append("complete but headComplete is false") }
        outcome.fields = Outcome.Fields(
            method: bytes(snap.method, "method"), target: bytes(snap.target, "target"), versionMinor: snap.versionMinor,
            flags: snap.flags, headers: snap.headers.flatMap { [bytes($0.name, "name"), bytes($0.value, "value")] },
            body: bytes(snap.body, "body"), contentLength: snap.contentLength)
        outcome.result = r + shrunk
        // what the buffer holds after the request, then what was not fed yet
        outcome.leftover = Array(UnsafeRawBufferPointer(rebasing: buffer[r...])) + raw[fed...]
        exact = ExactRun(snapshot: snap, bufferBytes: Array(UnsafeRawBufferPointer(rebasing: buffer[0..<r])),
                         bufferLength: len)
        // A repeated call after completion gives the same answer.
        let again = parser.parse(buffer)
        if again != r || parser.snapshot(relativeTo: base) != snap { problems.append("repeated call after completion differs") }
    } else if r < 0 {
        if parser.headComplete { problems.append("error but headComplete is true") }
        if parser.parse(buffer) != r { problems.append("error not sticky") }
    }
    return (outcome, exact)
}
