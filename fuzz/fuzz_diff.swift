// fuzz_diff.swift: differential libFuzzer harness. Every input goes to the C
// parser (csrc/http1.c) and to the Swift port (PeregrineSwiftEpoll's
// HTTP1Parser) and the two must agree on everything: return value, parser
// state, method, target, version, flags, Content-Length, every header name
// and value (offsets into the buffer and bytes), the body, and the buffer as
// left after in-place chunked decoding. Any disagreement aborts with a
// message naming the field (libFuzzer then saves the input).
//
// Built by `make fuzz-diff` (see the Makefile): http1.c under clang with
// ASan + UBSan, the Swift parser and this harness under swiftc with ASan,
// the parsers (not the harness) instrumented for coverage. The feeding and
// the notion of agreement are the conformance suite's own
// (Tests/ParserConformanceTests/Feeding.swift and ParserAdapters.swift,
// compiled in).
//
// Each input is fed, at the default limits and at small limits derived from
// the input (so 413, 414 and 431 are reached):
//   - whole, in one call on one buffer;
//   - split in two calls at an offset derived from the input, with compact
//     between them as csrc/conn.c's process_http does, and a fresh buffer of
//     exactly the bytes held for the second call (ASan sees over-reads and
//     stored pointers).
// A complete request followed by more bytes: the rest is fed as the next
// pipelined request (fresh parsers, as process_http resets), a few deep.
//
// Replay a saved input: SWIFT_BACKTRACE=enable=no .build/fuzz-diff/fuzz_diff FILE
// PRG_FUZZ_DUMP_SEEDS=dir: write the raw inputs (up to 4 kB) of the parser
// case table, Tests/ParserCases/cases.txt (or $PRG_PARSER_CASES), to dir as
// seed files and exit (the Makefile adds them to the corpus).
import CPeregrine
import Glibc
import PeregrineSwiftEpoll

/// To stderr, unbuffered (Swift 6 will not touch the C `stderr` global).
private func eprint(_ s: String) {
    var s = s
    s.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

/// Where a run came from, spelled out only on a finding (building it for
/// every call would cost more than the parses).
private struct Context {
    var label: String
    var feeding: Feeding
    var limits: HTTP1Limits
    var raw: [UInt8]
    var text: String { "\(label), \(feeding), \(limits)\n  input (\(raw.count) bytes) \(str(raw))" }
}

private func fail(_ what: String, _ context: Context, c: String, swift: String) -> Never {
    eprint("\nfuzz-diff: C and Swift parsers disagree: \(what)\n  C     \(c)\n  Swift \(swift)\n  \(context.text)\n")
    abort()
}

private func failContract(_ parser: String, _ problems: [String], _ context: Context) -> Never {
    eprint("\nfuzz-diff: \(parser) parser broke its contract: \(problems.joined(separator: "; "))\n  \(context.text)\n")
    abort()
}

private func same<T: Equatable>(_ what: @autoclosure () -> String, _ a: T, _ b: T, _ context: Context) {
    if a != b { fail(what(), context, c: "\(a)", swift: "\(b)") }
}

private func sameBytes(_ what: @autoclosure () -> String, _ a: [UInt8], _ b: [UInt8], _ context: Context) {
    if a == b { return }
    let at = (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
    fail("\(what()) (\(a.count) vs \(b.count) bytes, first difference at byte \(at))", context, c: str(a), swift: str(b))
}

/// Feeds `raw` to both parsers the same way; aborts on any disagreement.
/// Returns the (agreed) outcome.
private func compare(_ raw: [UInt8], _ limits: HTTP1Limits, _ feeding: Feeding, _ label: String) -> Outcome {
    var cProblems: [String] = [], sProblems: [String] = []
    let (c, ce) = feed(CParser.self, raw, limits: limits, feeding, problems: &cProblems)
    let (s, se) = feed(SwiftParser.self, raw, limits: limits, feeding, problems: &sProblems)
    let ctx = Context(label: label, feeding: feeding, limits: limits, raw: raw)
    if !cProblems.isEmpty { failContract("C", cProblems, ctx) }
    if !sProblems.isEmpty { failContract("Swift", sProblems, ctx) }

    // Outcome: what the request was, as bytes.
    same("return value", c.result, s.result, ctx)
    same("head complete", c.headComplete, s.headComplete, ctx)
    same("parser flags", c.parserFlags, s.parserFlags, ctx)
    same("request present", c.fields != nil, s.fields != nil, ctx)
    if let cf = c.fields, let sf = s.fields {
        sameBytes("method", cf.method, sf.method, ctx)
        sameBytes("target", cf.target, sf.target, ctx)
        same("version minor", cf.versionMinor, sf.versionMinor, ctx)
        same("request flags", cf.flags, sf.flags, ctx)
        same("content length", cf.contentLength, sf.contentLength, ctx)
        same("header count", cf.headers.count / 2, sf.headers.count / 2, ctx)
        for i in 0..<cf.headers.count {
            sameBytes("header \(i / 2) \(i % 2 == 0 ? "name" : "value")", cf.headers[i], sf.headers[i], ctx)
        }
        sameBytes("body", cf.body, sf.body, ctx)
    }
    sameBytes("bytes after the request", c.leftover, s.leftover, ctx)

    // ExactRun: where everything lies in the buffer, and the buffer itself.
    same("buffer length after the calls (compact)", ce.bufferLength, se.bufferLength, ctx)
    same("request present (slices)", ce.snapshot != nil, se.snapshot != nil, ctx)
    if let cs = ce.snapshot, let ss = se.snapshot {
        same("method slice", cs.method, ss.method, ctx)
        same("target slice", cs.target, ss.target, ctx)
        same("header count (request)", cs.headerCount, ss.headerCount, ctx)
        same("headers point at the table", cs.headersIsTable, ss.headersIsTable, ctx)
        same("header records", cs.headers.count, ss.headers.count, ctx)
        for (i, (ch, sh)) in zip(cs.headers, ss.headers).enumerated() {
            same("header \(i) name slice", ch.name, sh.name, ctx)
            same("header \(i) value slice", ch.value, sh.value, ctx)
        }
        same("body slice", cs.body, ss.body, ctx)
    }
    sameBytes("buffer after the request (in-place chunked decoding)", ce.bufferBytes, se.bufferBytes, ctx)

    // The conformance suite's own test of agreement, in case a field is not itemised above.
    if c != s || ce != se { fail("outcome", ctx, c: "\(c) \(ce)", swift: "\(s) \(se)") }
    return c
}

/// FNV-1a, then a SplitMix64 step per value drawn: the split offset and the
/// small limits come from the input, so a reproducer is just the input.
private struct Draw {
    var state: UInt64
    init(_ raw: [UInt8]) {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in raw { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        state = h
    }
    mutating func next(_ bound: Int) -> Int {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Int((z ^ (z >> 31)) % UInt64(max(bound, 1)))
    }
}

private func run(_ raw: [UInt8], _ limits: HTTP1Limits, _ draw: inout Draw, _ label: String, depth: Int) {
    let n = raw.count
    let whole = compare(raw, limits, Feeding(cuts: [n], copy: false, compact: false, label: "whole"), label)
    if n > 0 {
        let k = draw.next(n + 1)
        let split = compare(raw, limits, Feeding(cuts: [k, n], copy: true, compact: true, label: "split at \(k)"), label)
        // Both parsers promise the same answer however the bytes are split.
        if split != whole {
            eprint("\nfuzz-diff: split at \(k) differs from whole (both parsers)\n  whole \(whole)\n  split \(split)\n"
                  + "  \(label), \(limits)\n  input (\(n) bytes) \(str(raw))\n")
            abort()
        }
    }
    if whole.result > 0 && whole.result < n && depth < 3 {
        run(Array(raw[whole.result...]), limits, &draw, label + ", next pipelined request", depth: depth + 1)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let raw = size > 0 ? Array(UnsafeBufferPointer(start: data, count: size)) : []
    var draw = Draw(raw)
    run(raw, HTTP1Limits(), &draw, "default limits", depth: 0)
    let small = HTTP1Limits(maxRequestLine: draw.next(64), maxHeaderBytes: draw.next(raw.count + 32),
                            maxHeaders: draw.next(8), maxBody: draw.next(64))
    run(raw, small, &draw, "small limits", depth: 0)
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>?,
                           _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    guard let dir = getenv("PRG_FUZZ_DUMP_SEEDS").map({ String(cString: $0) }) else { return 0 }
    let table: [ConformanceCase]
    switch ConformanceTable.loaded {
    case .success(let cases): table = cases
    case .failure(let error):
        eprint("fuzz-diff: \(error)\n")
        exit(1)
    }
    var written = 0
    for (i, c) in table.enumerated() where c.raw.count <= 4096 {
        guard let f = fopen("\(dir)/conformance-\(i)", "wb") else {
            eprint("fuzz-diff: cannot write seeds to \(dir)\n")
            exit(1)
        }
        _ = c.raw.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
        fclose(f)
        written += 1
    }
    print("fuzz-diff: \(written) conformance inputs written to \(dir)")
    exit(0)
}
