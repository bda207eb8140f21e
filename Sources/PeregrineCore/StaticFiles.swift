// StaticFiles.swift: the `static` app, files under a root directory, on
// every engine (it only uses Request, Response and Response.sendFile).
//
// Safety of the path (no file outside the root is ever served):
//   1. the target's path is percent-decoded; a bad escape is 400, a NUL
//      (`%00`) is 404 (no file name holds one), a `..` segment (also
//      `%2e%2e`, and `%2f` decodes to a separator first) is 403;
//   2. the result is appended to the root's resolved path and resolved with
//      realpath(3), which follows every symlink; the resolved path must be
//      the root or lie below it, else 403. So a symlink inside the root to a
//      file inside the root is served; one leading out (to /etc/passwd) is
//      refused;
//   3. the resolved path is opened with O_NOFOLLOW (a last component swapped
//      for a symlink since step 2 fails instead of being followed) and
//      O_NONBLOCK (a FIFO would otherwise block the loop), and fstat on the
//      open descriptor decides: a regular file is served, a directory gives
//      its index.html (resolved and checked the same way) or 403, anything
//      else 403.
// What this does not cover: someone who can write inside the root and swaps
// a directory for a symlink between steps 2 and 3 (the root is trusted).
//
// Opening and fstat are blocking calls on the loop: fine for local disks,
// the case this app is for (no thread pool). The bytes go out with
// sendfile(2), never through user space.
#if canImport(Glibc)
import Glibc
#endif

/// Why a static-file root was refused.
public enum StaticFilesError: Error, Equatable, CustomStringConvertible {
    /// `BuiltinApp.staticFiles` was asked for without a root directory.
    case rootMissing
    /// The root does not resolve to a directory (`reason` says why).
    case rootNotADirectory(path: String, reason: String)
    /// A root was given to a built-in app that serves no files.
    case rootNotApplicable(app: String)

    public var description: String {
        switch self {
        case .rootMissing: return "static: a root directory is required (--root DIR)"
        case .rootNotADirectory(let path, let reason): return "static: root \(path): \(reason)"
        case .rootNotApplicable(let app): return "--root applies to the static app only, not \(app)"
        }
    }
}

/// Serves the files under `root`: GET and HEAD; single byte ranges (206,
/// 416); `ETag` and `Last-Modified` with `If-None-Match` and
/// `If-Modified-Since` (304); `Content-Type` from the extension; a directory
/// gives its `index.html` or 403; a missing file 404; other methods 405.
public struct StaticFiles: Sendable {
    /// The root as realpath(3) resolved it: absolute, no symlink, no trailing slash.
    public let root: String
    private let rootBytes: [UInt8]

    /// Resolves `root` once; throws when it is not a directory.
    public init(root: String) throws(StaticFilesError) {
        guard !root.isEmpty else { throw .rootNotADirectory(path: root, reason: "empty path") }
        guard let resolved = realpath(root, nil) else {
            throw .rootNotADirectory(path: root, reason: String(cString: strerror(errno)))
        }
        let path = String(cString: resolved)
        free(resolved)
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw .rootNotADirectory(path: root, reason: String(cString: strerror(errno)))
        }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw .rootNotADirectory(path: root, reason: "not a directory") }
        self.root = path
        rootBytes = Array(path.utf8)
    }

    /// The application serving this root.
    public var application: Application {
        let files = self
        return .http { request, response in files.serve(request, response) }
    }

    /// Answers one request.
    public func serve(_ request: Request, _ response: Response) {
        let isHead = request.methodIs("HEAD")
        guard isHead || request.methodIs("GET") else {
            let body = "Method Not Allowed\n"
            response.begin(status: 405)
            response.header("Allow", "GET, HEAD")
            response.header("Content-Type", "text/plain")
            response.header("Content-Length", String(body.utf8.count))
            response.write(body)
            response.end()
            return
        }
        let opened: OpenedFile
        switch resolve(request.path) {
        case .failure(let status):
            plain(response, status)
            return
        case .success(let file):
            opened = file
        }
        answer(request, response, opened, isHead: isHead)
    }

    // MARK: - Path resolution

    private struct OpenedFile {
        var fd: Int32
        var size: Int64
        var mtime: timespec
        var contentType: StaticString
    }

    private enum Resolution {
        case success(OpenedFile)
        case failure(Int)
    }

    private func resolve(_ rawPath: UnsafeRawBufferPointer) -> Resolution {
        guard rawPath.first == UInt8(ascii: "/") else { return .failure(400) }
        guard let decoded = StaticFiles.percentDecode(rawPath) else { return .failure(400) }
        if decoded.contains(0) { return .failure(404) }
        // `..` segments: refused outright, before any lookup.
        for segment in decoded.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true)
        where segment.count == 2 && segment.allSatisfy({ $0 == UInt8(ascii: ".") }) {
            return .failure(403)
        }
        switch open(resolving: rootBytes + decoded) {
        case .failure(let status): return .failure(status)
        case .success(let file, let isDirectory, let path):
            guard isDirectory else { return .success(file) }
            // A directory: its index.html, checked the same way, or 403.
            switch open(resolving: path + Array("/index.html".utf8)) {
            case .success(let index, false, _): return .success(index)
            case .success(let index, true, _):
                _ = close(index.fd)
                return .failure(403)
            case .failure: return .failure(403)
            }
        }
    }

    private enum Opened {
        case success(OpenedFile, isDirectory: Bool, resolved: [UInt8])
        case failure(Int)
    }

    /// realpath, containment in the root, open with O_NOFOLLOW, fstat.
    private func open(resolving candidate: [UInt8]) -> Opened {
        var cPath = candidate
        cPath.append(0)
        let resolvedPointer = cPath.withUnsafeBufferPointer { p in
            p.baseAddress!.withMemoryRebound(to: CChar.self, capacity: p.count) { realpath($0, nil) }
        }
        guard let resolvedPointer else {
            let e = errno
            return .failure(e == ENOENT || e == ENOTDIR || e == ENAMETOOLONG ? 404 : 403)
        }
        let length = strlen(resolvedPointer)
        let resolved = [UInt8](UnsafeRawBufferPointer(start: resolvedPointer, count: length))
        free(resolvedPointer)
        guard isInsideRoot(resolved) else { return .failure(403) }
        var cResolved = resolved
        cResolved.append(0)
        let fd = cResolved.withUnsafeBufferPointer { p in
            p.baseAddress!.withMemoryRebound(to: CChar.self, capacity: p.count) {
                Glibc.open($0, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
            }
        }
        if fd < 0 { return .failure(errno == ENOENT ? 404 : 403) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            _ = close(fd)
            return .failure(403)
        }
        let kind = st.st_mode & S_IFMT
        guard kind == S_IFREG || kind == S_IFDIR else {
            _ = close(fd)   // a FIFO, a device, a socket: never served
            return .failure(403)
        }
        if kind == S_IFDIR { _ = close(fd) }
        let file = OpenedFile(fd: kind == S_IFDIR ? -1 : fd, size: Int64(st.st_size), mtime: st.st_mtim,
                              contentType: StaticFiles.contentType(of: resolved))
        return .success(file, isDirectory: kind == S_IFDIR, resolved: resolved)
    }

    private func isInsideRoot(_ resolved: [UInt8]) -> Bool {
        if rootBytes == [UInt8(ascii: "/")] { return true }
        guard resolved.count >= rootBytes.count, resolved.starts(with: rootBytes) else { return false }
        return resolved.count == rootBytes.count || resolved[rootBytes.count] == UInt8(ascii: "/")
    }

    /// Percent-decodes a path; nil for a malformed escape.
    static func percentDecode(_ raw: UnsafeRawBufferPointer) -> [UInt8]? {
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(raw.count)
        var i = 0
        while i < raw.count {
            let c = raw[i]
            if c == UInt8(ascii: "%") {
                guard i + 2 < raw.count, let h = hex(raw[i + 1]), let l = hex(raw[i + 2]) else { return nil }
                out.append(h << 4 | l)
                i += 3
            } else {
                out.append(c)
                i += 1
            }
        }
        return out
    }

    // MARK: - The answer

    private func answer(_ request: Request, _ response: Response, _ file: OpenedFile, isHead: Bool) {
        let etag = StaticFiles.etag(size: file.size, mtime: file.mtime)
        let lastModified = HTTPDate.format(seconds: Int(file.mtime.tv_sec))
        // RFC 9110 13.2.2: If-None-Match first; If-Modified-Since only without it.
        var notModified = false
        if let inm = request.header("If-None-Match") {
            notModified = StaticFiles.matchesAny(inm, etag)
        } else if let ims = request.header("If-Modified-Since"), let since = HTTPDate.parse(ims) {
            notModified = Int(file.mtime.tv_sec) <= since
        }
        if notModified {
            _ = close(file.fd)
            response.begin(status: 304)
            response.header("ETag", etag)
            response.header("Last-Modified", lastModified)
            response.end()
            return
        }
        // Ranges are defined for GET only (RFC 9110 14.2); If-Range with a
        // validator that no longer matches asks for the whole file.
        var range = ByteRange.whole
        if !isHead, let value = request.header("Range") {
            let ifRange = request.header("If-Range").map { String(decoding: $0, as: UTF8.self) }
            if ifRange == nil || ifRange == etag || ifRange == lastModified {
                range = ByteRange.parse(value, size: file.size)
            }
        }
        switch range {
        case .unsatisfiable:
            _ = close(file.fd)
            let body = "Range Not Satisfiable\n"
            response.begin(status: 416)
            response.header("Content-Range", "bytes */\(file.size)")
            response.header("Content-Type", "text/plain")
            response.header("Content-Length", String(body.utf8.count))
            response.write(body)
            response.end()
            return
        case .whole, .part:
            break
        }
        var offset: Int64 = 0, length = file.size
        if case .part(let first, let last) = range {
            offset = first
            length = last - first + 1
            response.begin(status: 206)
            response.header("Content-Range", "bytes \(first)-\(last)/\(file.size)")
        } else {
            response.begin(status: 200)
        }
        _ = file.contentType.withUTF8Buffer { response.header("Content-Type", String(decoding: $0, as: UTF8.self)) }
        response.header("Content-Length", String(length))
        response.header("Accept-Ranges", "bytes")
        response.header("ETag", etag)
        response.header("Last-Modified", lastModified)
        do {
            try response.sendFile(descriptor: file.fd, offset: offset, length: length)
        } catch {
            // Refused only when the connection is closing: end() below then
            // finds the body short and closes it.
        }
        response.end()
    }

    private func plain(_ response: Response, _ status: Int) {
        switch status {
        case 400: response.send(status: 400, contentType: "text/plain", body: "Bad Request\n")
        case 403: response.send(status: 403, contentType: "text/plain", body: "Forbidden\n")
        default: response.send(status: 404, contentType: "text/plain", body: "Not Found\n")
        }
    }

    /// Strong validator from size and modification time (nanoseconds):
    /// `"<size>-<seconds>-<nanoseconds>"` in hex. Strong because the bytes
    /// served for one value never differ unless the file is rewritten within
    /// the same nanosecond at the same size.
    static func etag(size: Int64, mtime: timespec) -> String {
        "\"\(String(size, radix: 16))-\(String(mtime.tv_sec, radix: 16))-\(String(mtime.tv_nsec, radix: 16))\""
    }

    /// If-None-Match: `*`, or a list of entity tags compared weakly (a `W/`
    /// prefix is ignored on either side, RFC 9110 13.1.2).
    static func matchesAny(_ value: UnsafeRawBufferPointer, _ etag: String) -> Bool {
        let text = String(decoding: value, as: UTF8.self)
        let ours = etag.hasPrefix("W/") ? String(etag.dropFirst(2)) : etag
        for item in text.split(separator: ",") {
            var tag = item.trimmingSpaces
            if tag == "*" { return true }
            if tag.hasPrefix("W/") { tag = tag.dropFirst(2) }
            if tag == ours { return true }
        }
        return false
    }

    /// Content-Type by extension (case-insensitive).
    static func contentType(of path: [UInt8]) -> StaticString {
        guard let dot = path.lastIndex(of: UInt8(ascii: ".")),
              !path[dot...].contains(UInt8(ascii: "/")) else { return "application/octet-stream" }
        let ext = String(decoding: path[(dot + 1)...], as: UTF8.self).lowercased()
        switch ext {
        case "html", "htm": return "text/html; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "js", "mjs": return "text/javascript; charset=utf-8"
        case "json": return "application/json"
        case "txt": return "text/plain; charset=utf-8"
        case "png": return "image/png"
        case "jpg", "jpeg": return "image/jpeg"
        case "gif": return "image/gif"
        case "svg": return "image/svg+xml"
        case "wasm": return "application/wasm"
        case "pdf": return "application/pdf"
        default: return "application/octet-stream"
        }
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}

/// A single byte range of a `Range: bytes=` header (RFC 9110 14.1.2).
enum ByteRange: Equatable {
    /// No range, or one to ignore (malformed, several ranges, another unit): the whole file, 200.
    case whole
    /// Bytes first...last (inclusive, within the file): 206.
    case part(first: Int64, last: Int64)
    /// A valid range that selects nothing of the file: 416.
    case unsatisfiable

    static func parse(_ value: UnsafeRawBufferPointer, size: Int64) -> ByteRange {
        var v = Substring(String(decoding: value, as: UTF8.self)).trimmingSpaces
        guard v.count > 6, v.prefix(6).lowercased() == "bytes=" else { return .whole }
        v = v.dropFirst(6).trimmingSpaces
        if v.contains(",") { return .whole }   // several ranges: not served as multipart, ignored
        guard let dash = v.firstIndex(of: "-") else { return .whole }
        let firstText = v[..<dash], lastText = v[v.index(after: dash)...]
        if firstText.isEmpty {
            // -n: the last n bytes.
            guard let n = decimal(lastText) else { return .whole }
            if n == 0 || size == 0 { return .unsatisfiable }
            return .part(first: size - min(n, size), last: size - 1)
        }
        guard let first = decimal(firstText) else { return .whole }
        var last = Int64.max
        if !lastText.isEmpty {
            guard let l = decimal(lastText) else { return .whole }
            if l < first { return .whole }   // invalid: ignored
            last = l
        }
        if first >= size { return .unsatisfiable }
        return .part(first: first, last: min(last, size - 1))
    }

    /// Digits only; saturates at Int64.max (a position past any file).
    private static func decimal(_ s: Substring) -> Int64? {
        guard !s.isEmpty else { return nil }
        var v: Int64 = 0
        for c in s.utf8 {
            guard c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") else { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int64(c - UInt8(ascii: "0")))
            v = o1 || o2 ? Int64.max : a
        }
        return v
    }
}

/// IMF-fixdate (RFC 9110 5.6.7), `Sun, 06 Nov 1994 08:49:37 GMT`, without Foundation.
package enum HTTPDate {
    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    package static func format(seconds: Int) -> String {
        var t = time_t(seconds)
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(days[Int(tm.tm_wday)]), \(two(tm.tm_mday)) \(months[Int(tm.tm_mon)]) \(tm.tm_year + 1900) "
            + "\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)) GMT"
    }

    /// Seconds since the epoch, or nil when the value is not an IMF-fixdate
    /// (the obsolete RFC 850 and asctime forms are not read: such a
    /// condition is ignored, which only costs a full answer).
    package static func parse(_ value: UnsafeRawBufferPointer) -> Int? {
        let b = Array(value)
        guard b.count == 29, b[3] == UInt8(ascii: ","), b[4] == 32, b[7] == 32, b[11] == 32, b[16] == 32,
              b[19] == UInt8(ascii: ":"), b[22] == UInt8(ascii: ":"), b[25] == 32,
              String(decoding: b[26...], as: UTF8.self) == "GMT",
              days.contains(String(decoding: b[0..<3], as: UTF8.self)),
              let month = months.firstIndex(of: String(decoding: b[8..<11], as: UTF8.self))
        else { return nil }
        func number(_ r: Range<Int>) -> Int32? {
            var v: Int32 = 0
            for i in r {
                guard b[i] >= 48 && b[i] <= 57 else { return nil }
                v = v * 10 + Int32(b[i] - 48)
            }
            return v
        }
        guard let day = number(5..<7), let year = number(12..<16), let hour = number(17..<19),
              let minute = number(20..<22), let second = number(23..<25),
              (1...31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
        var tm = Glibc.tm()
        tm.tm_year = year - 1900
        tm.tm_mon = Int32(month)
        tm.tm_mday = day
        tm.tm_hour = hour
        tm.tm_min = minute
        tm.tm_sec = second
        return Int(timegm(&tm))
    }
}
