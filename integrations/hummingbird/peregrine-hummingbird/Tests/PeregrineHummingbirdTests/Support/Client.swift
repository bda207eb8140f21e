// Clients for the adapter tests, over real loopback sockets: curl (a real
// HTTP client) and a small blocking HTTP/1.1 client for what curl cannot
// pace (a request held in flight across a shutdown). Every blocking call runs
// on a thread of its own (`blocking`), never on the concurrency pool, and has
// a bounded timeout.
#if canImport(Glibc)
import Glibc
#endif
import Foundation

enum ClientError: Error, CustomStringConvertible {
    case system(String, Int32)
    case closed(String)
    case malformed(String)
    case timeout(String)

    var description: String {
        switch self {
        case .system(let op, let e): return "\(op): errno \(e) (\(String(cString: strerror(e))))"
        case .closed(let what): return "connection closed \(what)"
        case .malformed(let what): return "malformed response: \(what)"
        case .timeout(let what): return "timed out: \(what)"
        }
    }
}

/// A response as the client read it.
struct ClientResponse: CustomStringConvertible {
    var status: Int
    var headers: [(name: String, value: String)]
    var body: [UInt8]
    var trailers: [(name: String, value: String)] = []
    /// Sizes of the chunks of a chunked body, in arrival order.
    var chunkSizes: [Int] = []

    func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
    var bodyString: String { String(decoding: body, as: UTF8.self) }
    var description: String {
        "\(status) [\(headers.map { "\($0.name): \($0.value)" }.joined(separator: "; "))] body(\(body.count))=\(bodyString.prefix(200).debugDescription)"
    }
}

/// Runs `work` on a thread of its own and returns its result: blocking socket
/// calls and `Process` waits stay off the concurrency pool.
func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
        let t = Thread { c.resume(with: Result { try work() }) }
        t.stackSize = 1 << 20
        t.start()
    }
}

/// A blocking HTTP/1.1 connection with a read buffer and `seconds` timeouts.
final class TestConnection: @unchecked Sendable {
    // @unchecked: used by one thread at a time.
    let fd: Int32
    private var buffer: [UInt8] = []
    private var start = 0
    private var isClosed = false

    init(port: Int, timeoutSeconds: Int = 10) throws {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { throw ClientError.system("socket", errno) }
        fd = s
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 {
            let e = errno
            close()
            throw ClientError.system("connect to 127.0.0.1:\(port)", e)
        }
    }

    deinit { close() }

    /// This end's port.
    var localPort: Int {
        var addr = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    func close() {
        if !isClosed { isClosed = true; Glibc.close(fd) }
    }

    func send(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN { throw ClientError.timeout("send") }
                throw ClientError.system("send", errno)
            }
            off += n
        }
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// More bytes into the buffer; false at EOF.
    private func fill() throws -> Bool {
        if start > 0 && start == buffer.count { buffer.removeAll(keepingCapacity: true); start = 0 }
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { buffer.append(contentsOf: chunk[0..<n]); return true }
            if n == 0 { return false }
            if errno == EINTR { continue }
            if errno == EAGAIN { throw ClientError.timeout("recv") }
            throw ClientError.system("recv", errno)
        }
    }

    private func readLine() throws -> String {
        while true {
            if let i = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
                var end = i
                if end > start && buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                let line = String(decoding: buffer[start..<end], as: UTF8.self)
                start = i + 1
                return line
            }
            guard try fill() else { throw ClientError.closed("reading a line") }
        }
    }

    private func readExactly(_ n: Int) throws -> [UInt8] {
        while buffer.count - start < n {
            guard try fill() else { throw ClientError.closed("with \(n - (buffer.count - start)) body bytes owed") }
        }
        let out = Array(buffer[start..<start + n])
        start += n
        return out
    }

    private func readFields() throws -> [(name: String, value: String)] {
        var fields: [(name: String, value: String)] = []
        while true {
            let line = try readLine()
            if line.isEmpty { return fields }
            guard let colon = line.firstIndex(of: ":") else { throw ClientError.malformed("field \(line)") }
            fields.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
    }

    /// True once the server closed its side (EOF), within `seconds`.
    func readsEOF() throws -> Bool {
        while true {
            if start < buffer.count { return false }
            if try !fill() { return true }
        }
    }

    /// Reads a response's status line and fields (not its body).
    func readHead() throws -> ClientResponse {
        let statusLine = try readLine()
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
            throw ClientError.malformed("status line \(statusLine.debugDescription)")
        }
        return ClientResponse(status: status, headers: try readFields(), body: [])
    }

    /// The next chunk of a chunked body; nil after the last (its trailers
    /// read into `trailers`).
    func readChunk(trailers: inout [(name: String, value: String)]) throws -> [UInt8]? {
        let sizeLine = try readLine()
        guard let size = Int(sizeLine.split(separator: ";", omittingEmptySubsequences: false)[0]
                                .trimmingCharacters(in: .whitespaces), radix: 16) else {
            throw ClientError.malformed("chunk size \(sizeLine.debugDescription)")
        }
        if size == 0 {
            trailers = try readFields()
            return nil
        }
        let chunk = try readExactly(size)
        guard try readLine().isEmpty else { throw ClientError.malformed("chunk end") }
        return chunk
    }

    /// Reads one response (Content-Length, chunked or close-delimited body).
    func readResponse(head: Bool = false) throws -> ClientResponse {
        var response = try readHead()
        let status = response.status
        if head || status == 204 || status == 304 || (100..<200).contains(status) { return response }
        try readBody(&response)
        return response
    }

    /// The body of `response` (whose head was read).
    func readBody(_ response: inout ClientResponse) throws {
        if response.header("Transfer-Encoding")?.lowercased() == "chunked" {
            var trailers: [(name: String, value: String)] = []
            while let chunk = try readChunk(trailers: &trailers) {
                response.chunkSizes.append(chunk.count)
                response.body += chunk
            }
            response.trailers = trailers
        } else if let length = response.header("Content-Length").flatMap({ Int($0) }) {
            response.body = try readExactly(length)
        } else {
            while try fill() {}
            response.body = Array(buffer[start...])
            start = buffer.count
        }
    }

    /// One request and its response on this connection.
    func exchange(_ request: String, body: [UInt8] = []) throws -> ClientResponse {
        try send(Array(request.utf8) + body)
        return try readResponse(head: request.hasPrefix("HEAD "))
    }
}

/// GET/POST on a new connection.
func fetch(port: Int, _ target: String, method: String = "GET", headers: [String] = [], body: [UInt8] = []) throws -> ClientResponse {
    let c = try TestConnection(port: port)
    defer { c.close() }
    var head = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    for h in headers { head += h + "\r\n" }
    if !body.isEmpty || method == "POST" || method == "PUT" { head += "Content-Length: \(body.count)\r\n" }
    return try c.exchange(head + "\r\n", body: body)
}

/// curl, a real HTTP client: (exit status, stdout bytes, stderr).
func curl(_ args: [String], input: Data? = nil) throws -> (Int32, [UInt8], String) {
    let path = "/usr/bin/curl"
    guard FileManager.default.isExecutableFile(atPath: path) else { throw ClientError.malformed("\(path) is not installed (make deps)") }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = ["--silent", "--show-error", "--max-time", "60"] + args
    let out = Pipe(), err = Pipe(), inp = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = inp
    try p.run()
    // stdin on a thread of its own: a 10 MiB body must not wait for stdout to be drained.
    let writer = Thread {
        if let input { inp.fileHandleForWriting.write(input) }
        try? inp.fileHandleForWriting.close()
    }
    writer.start()
    // stderr on another: curl blocks if either pipe fills.
    let errBox = ErrBox()
    let errReader = Thread {
        errBox.data = err.fileHandleForReading.readDataToEndOfFile()
        errBox.done.signal()
    }
    errReader.start()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    errBox.done.wait()   // curl exited: its stderr is at EOF
    return (p.terminationStatus, [UInt8](o), String(decoding: errBox.data, as: UTF8.self))
}

/// stderr bytes handed from the reader thread (published by the semaphore).
private final class ErrBox: @unchecked Sendable {
    var data = Data()
    let done = DispatchSemaphore(value: 0)
}
