// The parser case table, read from Tests/ParserCases/cases.txt (its format is
// described at the top of that file). The same file drives the C parser's
// tests (Tests/CTests/test_http1.c, `make test-c`) and seeds the differential
// fuzzer (fuzz/fuzz_diff.swift compiles this file), so a case is written once.
// ParserConformanceTests runs every case through the C and the Swift parser,
// whole, split at every offset and byte by byte.
//
// The file is found next to this source (#filePath), or at $PRG_PARSER_CASES.
// No Foundation and no XCTest here: the fuzz harness compiles this file
// outside SwiftPM.
import Glibc
import PeregrineSwiftEpoll

struct ExpectedRequest: Sendable {
    var method: [UInt8]
    var target: [UInt8]
    var versionMinor: Int
    /// Every header field, in order, value trimmed.
    var headers: [([UInt8], [UInt8])]
    var body: [UInt8]
    /// The exact flag set (hasContentLength included).
    var flags: HTTP1RequestFlags
    var contentLength: Int64
    /// Bytes of the input the request uses; nil: all of it.
    var consumed: Int?
}

struct ConformanceCase: Sendable {
    enum Expected: Sendable {
        case request(ExpectedRequest)
        /// The status the parser answers with (it returns -status).
        case error(Int)
        /// Needs more bytes; headComplete and, when it is, the flags known.
        case incomplete(headComplete: Bool, flags: HTTP1RequestFlags)
    }
    let name: String
    let raw: [UInt8]
    let limits: HTTP1Limits?
    let expected: Expected
    /// Set where the outcome departs from the letter of the RFC (the note says how).
    let rfc: String?
    /// Line of the case in the table file (0 for cases made in code).
    var line: Int = 0
}

/// A malformed table file: where and why.
struct CaseFileError: Error, CustomStringConvertible {
    var path: String
    var line: Int
    var message: String
    var description: String { "\(path):\(line): \(message)" }
}

enum ConformanceTable {
    /// $PRG_PARSER_CASES, else Tests/ParserCases/cases.txt found from this source file.
    static let path: String = {
        if let p = getenv("PRG_PARSER_CASES") { return String(cString: p) }
        var dir = Array("\(#filePath)".utf8)
        while let last = dir.last, last != UInt8(ascii: "/") { dir.removeLast() }
        return String(decoding: dir, as: UTF8.self) + "../ParserCases/cases.txt"
    }()

    /// The table, or why it could not be read.
    static let loaded: Result<[ConformanceCase], CaseFileError> = {
        do throws(CaseFileError) { return .success(try readCaseFile(path)) } catch { return .failure(error) }
    }()

    /// Every case of the table (empty when the file is malformed: testTableShape says why).
    static var all: [ConformanceCase] { (try? loaded.get()) ?? [] }
}

// MARK: - Reading the file

private let flagWords: [(String, HTTP1RequestFlags)] = [
    ("keep-alive", .keepAlive), ("chunked", .chunked), ("expect-continue", .expectContinue),
    ("content-length", .hasContentLength),
]

/// Reads and checks every case of the table file at `path`.
func readCaseFile(_ path: String) throws(CaseFileError) -> [ConformanceCase] {
    guard let f = fopen(path, "rb") else {
        throw CaseFileError(path: path, line: 0, message: "cannot open: \(String(cString: strerror(errno)))")
    }
    defer { fclose(f) }
    var text: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
        text += chunk[0..<n]
        if n < chunk.count { break }
    }
    if ferror(f) != 0 { throw CaseFileError(path: path, line: 0, message: "read error") }
    return try parseCaseFile(text, path: path)
}

/// The table in `text` (the file's bytes); `path` only names it in errors.
func parseCaseFile(_ text: [UInt8], path: String) throws(CaseFileError) -> [ConformanceCase] {
    var cases: [ConformanceCase] = []
    var names = Set<String>()
    var cur: CaseBuilder?
    var lineNo = 0
    func fail(_ m: String) -> CaseFileError { CaseFileError(path: path, line: lineNo, message: m) }

    for lineBytes in text.split(separator: 0x0A, omittingEmptySubsequences: false) {
        lineNo += 1
        let line = Array(lineBytes)
        if line.isEmpty || line[0] == UInt8(ascii: "#") { continue }
        if line.contains(0) { throw fail("NUL byte in the file (write \\0)") }
        if line.last == 0x0D { throw fail("CR at the end of a line: the file uses LF line ends") }
        if line.last == 0x20 || line.last == 0x09 { throw fail("text ends in a space or tab (write \\x20 or \\t)") }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")),
              colon + 1 == line.count || line[colon + 1] == 0x20
        else { throw fail("not \"key: text\": \(String(decoding: line, as: UTF8.self))") }
        var key = String(decoding: line[..<colon], as: UTF8.self)
        let body = colon + 1 == line.count ? [] : Array(line[(colon + 2)...])
        var repeatCount = 1
        if let star = key.firstIndex(of: "*") {
            guard let n = Int(key[key.index(after: star)...]), n >= 1, n <= 100_000_000 else {
                throw fail("bad repeat count in \(key)")
            }
            repeatCount = n
            key = String(key[..<star])
        }
        if key == "case" {
            if let c = cur { cases.append(try c.finish(path)) }
            let name = String(decoding: try unescape(body, fail), as: UTF8.self)
            guard names.insert(name).inserted else { throw fail("duplicate case name: \(name)") }
            cur = CaseBuilder(name: name, line: lineNo)
        } else if cur == nil {
            throw fail("a key before the first case:")
        } else {
            try cur!.add(key, repeatCount, body, fail)
        }
    }
    if let c = cur { cases.append(try c.finish(path)) }
    if cases.isEmpty { throw fail("no cases") }
    return cases
}

/// TEXT's escapes: \r \n \t \0 \\ \xHH.
private func unescape(_ t: [UInt8], _ fail: (String) -> CaseFileError) throws(CaseFileError) -> [UInt8] {
    func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }
    var out: [UInt8] = []
    out.reserveCapacity(t.count)
    var i = 0
    while i < t.count {
        guard t[i] == UInt8(ascii: "\\") else { out.append(t[i]); i += 1; continue }
        let e: UInt8? = i + 1 < t.count ? t[i + 1] : nil
        switch e {
        case UInt8(ascii: "r"): out.append(0x0D)
        case UInt8(ascii: "n"): out.append(0x0A)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "0"): out.append(0)
        case UInt8(ascii: "\\"): out.append(0x5C)
        case UInt8(ascii: "x"):
            guard i + 3 < t.count, let h = hex(t[i + 2]), let l = hex(t[i + 3]) else {
                throw fail("\\x needs two hex digits")
            }
            out.append(h << 4 | l)
            i += 2
        default: throw fail("unknown escape (\\r \\n \\t \\0 \\\\ \\xHH)")
        }
        i += 2
    }
    return out
}

/// One case as its lines arrive.
private struct CaseBuilder {
    let name: String
    let line: Int
    var raw: [UInt8] = []
    var limits: HTTP1Limits?
    var want: String?
    var status = 0
    var method: [UInt8]?
    var target: [UInt8]?
    var body: [UInt8]?
    var versionMinor: Int?
    var headers: [([UInt8], [UInt8])] = []
    var flags: HTTP1RequestFlags?
    var contentLength: Int64 = -1
    var consumed: Int?
    var rfc: String?

    init(name: String, line: Int) {
        self.name = name
        self.line = line
    }

    mutating func add(_ key: String, _ times: Int, _ text: [UInt8], _ fail: (String) -> CaseFileError) throws(CaseFileError) {
        let s = String(decoding: text, as: UTF8.self)
        func number(_ s: Substring, _ range: ClosedRange<Int64>) throws(CaseFileError) -> Int64 {
            guard s.first.map({ $0.isASCII && $0.isNumber }) == true, let v = Int64(s), range.contains(v) else {
                throw fail("not a number in range: \(s)")
            }
            return v
        }
        switch key {
        case "raw", "method", "target", "body":
            let piece = try unescape(text, fail)
            var joined: [UInt8] = []
            joined.reserveCapacity(piece.count * times)
            for _ in 0..<times { joined += piece }
            switch key {
            case "raw": raw += joined
            case "method": method = (method ?? []) + joined
            case "target": target = (target ?? []) + joined
            default: body = (body ?? []) + joined
            }
            return
        default:
            if times != 1 { throw fail("only raw, method, target and body take *N") }
        }
        switch key {
        case "limits":
            let parts = s.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 4 else { throw fail("limits: needs four numbers") }
            var v: [Int] = []
            for part in parts { v.append(Int(try number(part, 0...Int64.max))) }
            limits = HTTP1Limits(maxRequestLine: v[0], maxHeaderBytes: v[1], maxHeaders: v[2], maxBody: v[3])
        case "want":
            if want != nil { throw fail("second want:") }
            if s == "request" || s == "incomplete" || s == "incomplete-body" {
                want = s
            } else if s.hasPrefix("error ") {
                status = Int(try number(s.dropFirst(6), 100...599))
                want = "error"
            } else {
                throw fail("want: request | error STATUS | incomplete | incomplete-body")
            }
        case "version":
            switch s {
            case "1.0": versionMinor = 0
            case "1.1": versionMinor = 1
            default: throw fail("version: 1.0 or 1.1")
            }
        case "header":
            let b = try unescape(text, fail)
            guard let c = b.firstIndex(of: UInt8(ascii: ":")), c > 0 else { throw fail("header: NAME: VALUE") }
            var v = c + 1
            while v < b.count && b[v] == 0x20 { v += 1 }
            headers.append((Array(b[..<c]), Array(b[v...])))
        case "flags":
            var f: HTTP1RequestFlags = []
            if s != "none" {
                for w in s.split(separator: " ") {
                    guard let (_, bit) = flagWords.first(where: { $0.0 == w }) else {
                        throw fail("unknown flag (keep-alive chunked expect-continue content-length, or none): \(w)")
                    }
                    f.insert(bit)
                }
            }
            flags = f
        case "content-length": contentLength = try number(Substring(s), 0...Int64.max)
        case "consumed": consumed = Int(try number(Substring(s), 1...Int64.max))
        case "rfc": rfc = s
        default: throw fail("unknown key \(key)")
        }
    }

    /// The case, complete and consistent (errors name the case's first line).
    func finish(_ path: String) throws(CaseFileError) -> ConformanceCase {
        func fail(_ m: String) -> CaseFileError { CaseFileError(path: path, line: line, message: m) }
        let expected: ConformanceCase.Expected
        let requestFields = method != nil || target != nil || body != nil || !headers.isEmpty || versionMinor != nil
            || consumed != nil || contentLength >= 0
        switch want {
        case nil:
            throw fail("case without want: \(name)")
        case "request":
            guard let method, let target, let versionMinor, let flags else {
                throw fail("want: request needs method:, target:, version: and flags: \(name)")
            }
            if let consumed, consumed > raw.count { throw fail("consumed: more than raw \(name)") }
            expected = .request(ExpectedRequest(
                method: method, target: target, versionMinor: versionMinor, headers: headers, body: body ?? [],
                flags: flags, contentLength: contentLength, consumed: consumed))
        case "incomplete-body":
            guard let flags else { throw fail("want: incomplete-body needs flags: \(name)") }
            expected = .incomplete(headComplete: true, flags: flags)
        case "incomplete":
            expected = .incomplete(headComplete: false, flags: [])
        default:
            expected = .error(status)
        }
        if want != "request" && requestFields {
            throw fail("request fields in a case that does not want a request \(name)")
        }
        if want != "request" && want != "incomplete-body" && flags != nil {
            throw fail("flags: only with want: request or incomplete-body \(name)")
        }
        return ConformanceCase(name: name, raw: raw, limits: limits, expected: expected, rfc: rfc, line: line)
    }
}
