// A small blocking TCP client over Glibc for the integration tests.
// Every socket has 5 s receive and send timeouts, so no test can hang.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import XCTest

enum ClientError: Error, CustomStringConvertible {
    case system(String, Int32)
    case timeout(String)
    case closed(String)
    case malformed(String)

    var description: String {
        switch self {
        case .system(let op, let e): return "\(op): errno \(e) (\(String(cString: strerror(e))))"
        case .timeout(let what): return "timed out (5 s) \(what)"
        case .closed(let what): return "connection closed \(what)"
        case .malformed(let what): return "malformed response: \(what)"
        }
    }
}

/// A parsed HTTP response as the client read it.
struct TestResponse: CustomStringConvertible {
    var status: Int
    var statusLine: String
    var headers: [(name: String, value: String)]
    var body: [UInt8]
    /// Exact bytes of the head including the final CRLFCRLF.
    var rawHead: String
    /// True when the body was delimited by the server closing the connection.
    var closeDelimited = false

    func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
    func headerCount(_ name: String) -> Int {
        headers.filter { $0.name.lowercased() == name.lowercased() }.count
    }
    var bodyString: String { String(decoding: body, as: UTF8.self) }
    var description: String { "\(statusLine) [\(headers.map { "\($0.name): \($0.value)" }.joined(separator: "; "))] body(\(body.count))=\(bodyString.prefix(200).debugDescription)" }

    /// The `key=value` lines an inspect-app body carries.
    var fields: [String: String] {
        var out: [String: String] = [:]
        let text = bodyString
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("body=") { break }
            if let eq = line.firstIndex(of: "=") {
                out[String(line[..<eq])] = String(line[line.index(after: eq)...])
            }
        }
        return out
    }
    /// Bytes after `body=\n` in an inspect-app body.
    var inspectedBody: [UInt8]? {
        let marker = Array("\nbody=\n".utf8)
        guard body.count >= marker.count else { return nil }
        for i in 0...(body.count - marker.count) where body[i] == marker[0] && Array(body[i..<i + marker.count]) == marker {
            return Array(body[(i + marker.count)...])
        }
        return nil
    }
}

/// A blocking TCP connection with a read buffer.
final class TestSocket: @unchecked Sendable {
    // @unchecked: a socket is used by one thread at a time, except the echo test
    // which sends on one thread and receives on another (both thread-safe syscalls;
    // `buffer` is touched only by the receiving thread).
    let fd: Int32
    private var buffer: [UInt8] = []
    private var closedFD = false

    static let timeoutSeconds = 5

    init(port: Int, host: String = "127.0.0.1", noDelay: Bool = true) throws {
        let v6 = host.contains(":")
        let s = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { throw ClientError.system("socket", errno) }
        fd = s
        var tv = timeval(tv_sec: TestSocket.timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = noDelay ? 1 : 0
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc: Int32
        if v6 {
            var addr = sockaddr_in6()
            addr.sin6_family = sa_family_t(AF_INET6)
            addr.sin6_port = in_port_t(UInt16(port).bigEndian)
            guard inet_pton(AF_INET6, host, &addr.sin6_addr) == 1 else {
                close(); throw ClientError.malformed("bad address \(host)")
            }
            rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        } else {
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else {
                close(); throw ClientError.malformed("bad address \(host)")
            }
            rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        if rc != 0 {
            let e = errno
            // close(), not Glibc.close: deinit runs when a fully initialized
            // object's init throws, and must not close the number again
            // (by then another thread's descriptor).
            close()
            throw ClientError.system("connect to \(host):\(port)", e)
        }
    }

    deinit { if !closedFD { Glibc.close(fd) } }

    func close() {
        if !closedFD { closedFD = true; Glibc.close(fd) }
    }

    /// Closes with SO_LINGER {1, 0}: the kernel sends RST instead of FIN.
    func reset() {
        var lg = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, socklen_t(MemoryLayout<linger>.size))
        close()
    }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    // MARK: sending

    func send(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try send($0) }
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    func send(_ raw: UnsafeRawBufferPointer) throws {
        var off = 0
        while off < raw.count {
            let n = Glibc.send(fd, raw.baseAddress! + off, raw.count - off, Int32(MSG_NOSIGNAL))
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                if e == EAGAIN || e == EWOULDBLOCK { throw ClientError.timeout("sending (\(off)/\(raw.count) bytes sent)") }
                throw ClientError.system("send", e)
            }
            off += n
        }
    }

    // MARK: receiving

    /// One recv into `into`. Returns bytes read, 0 at EOF; throws on timeout or error
    /// (ECONNRESET is reported as `.closed`).
    func recvRaw(_ into: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = recv(fd, into.baseAddress, into.count, 0)
            if n >= 0 { return n }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { throw ClientError.timeout("waiting for data") }
            if e == ECONNRESET { throw ClientError.closed("by reset (ECONNRESET)") }
            throw ClientError.system("recv", e)
        }
    }

    /// Appends one recv's worth to the buffer; false at EOF.
    @discardableResult
    private func fill() throws -> Bool {
        var tmp = [UInt8](repeating: 0, count: 65536)
        let n = try tmp.withUnsafeMutableBytes { try recvRaw($0) }
        if n == 0 { return false }
        buffer.append(contentsOf: tmp[0..<n])
        return true
    }

    private func indexOf(_ pattern: [UInt8], from: Int = 0) -> Int? {
        guard buffer.count >= pattern.count + from else { return nil }
        var i = from
        let last = buffer.count - pattern.count
        while i <= last {
            if buffer[i] == pattern[0] {
                var ok = true
                for j in 1..<pattern.count where buffer[i + j] != pattern[j] { ok = false; break }
                if ok { return i }
            }
            i += 1
        }
        return nil
    }

    private func readLine() throws -> String {
        var from = 0
        while true {
            if let i = indexOf([13, 10], from: from) {
                let line = String(decoding: buffer[0..<i], as: UTF8.self)
                buffer.removeFirst(i + 2)
                return line
            }
            from = max(0, buffer.count - 1)
            guard try fill() else { throw ClientError.closed("while reading a line (have \(buffer.count) bytes)") }
        }
    }

    private func readExactly(_ n: Int) throws -> [UInt8] {
        while buffer.count < n {
            guard try fill() else { throw ClientError.closed("after \(buffer.count) of \(n) body bytes") }
        }
        let out = Array(buffer[0..<n])
        buffer.removeFirst(n)
        return out
    }

    /// Reads one response. `expectBody: false` for answers to HEAD.
    /// A 1xx interim response is returned as is (head only).
    func readResponse(expectBody: Bool = true) throws -> TestResponse {
        var from = 0
        var headEnd: Int
        while true {
            if let i = indexOf([13, 10, 13, 10], from: from) { headEnd = i; break }
            from = max(0, buffer.count - 3)
            guard try fill() else {
                if buffer.isEmpty { throw ClientError.closed("before any response byte") }
                throw ClientError.closed("inside a response head: \(String(decoding: buffer, as: UTF8.self).debugDescription)")
            }
        }
        let rawHead = String(decoding: buffer[0..<(headEnd + 4)], as: UTF8.self)
        buffer.removeFirst(headEnd + 4)
        var lines = rawHead.components(separatedBy: "\r\n")
        lines.removeLast(2)
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
            throw ClientError.malformed("status line \(statusLine.debugDescription)")
        }
        var headers: [(String, String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { throw ClientError.malformed("header line \(line.debugDescription)") }
            headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        var response = TestResponse(status: status, statusLine: statusLine, headers: headers, body: [], rawHead: rawHead)
        if status < 200 || status == 204 || status == 304 || !expectBody { return response }
        if let te = response.header("Transfer-Encoding") {
            guard te.lowercased() == "chunked" else { throw ClientError.malformed("Transfer-Encoding \(te)") }
            var body: [UInt8] = []
            while true {
                let sizeLine = try readLine()
                let hex = sizeLine.split(separator: ";").first.map(String.init) ?? ""
                guard let size = Int(hex.trimmingCharacters(in: .whitespaces), radix: 16) else {
                    throw ClientError.malformed("chunk size line \(sizeLine.debugDescription)")
                }
                if size == 0 {
                    while try !readLine().isEmpty {}   // trailers
                    break
                }
                body += try readExactly(size)
                guard try readLine().isEmpty else { throw ClientError.malformed("no CRLF after chunk data") }
            }
            response.body = body
        } else if let cl = response.header("Content-Length") {
            guard let n = Int(cl), n >= 0 else { throw ClientError.malformed("Content-Length \(cl)") }
            response.body = try readExactly(n)
        } else {
            response.body = try readUntilEOF()
            response.closeDelimited = true
        }
        return response
    }

    /// Reads into the buffer until EOF, 64 KiB at a time with a 1 ms pause
    /// between reads (a slow reader); the responses can then be parsed.
    func drainSlowly() throws {
        do {
            while try fill() { usleep(1000) }
        } catch ClientError.closed {
        }
    }

    /// Reads everything until the server closes (EOF or reset). Throws on timeout.
    func readUntilEOF() throws -> [UInt8] {
        do {
            while try fill() {}
        } catch ClientError.closed {
        }
        let out = buffer
        buffer.removeAll()
        return out
    }

    /// Waits for the server to close the connection. Returns the bytes that
    /// arrived before the close, or throws `.timeout` if the connection stayed open.
    func expectClose() throws -> [UInt8] { try readUntilEOF() }

    /// True if the server leaves the connection open for the next 300 ms
    /// (`staysOpen(for:)`): a close that comes a moment after the last answer
    /// is seen, which one non-blocking peek would miss.
    var looksOpen: Bool { staysOpen(for: .milliseconds(300)) }

    /// Bytes received but not yet consumed by a reader.
    var pending: [UInt8] { buffer }
}

// MARK: - Waiting on what the server does

/// Polls `condition` until it holds or `timeout` passes; true if it held.
/// The 5 ms pause between polls is the polling interval of a wait with a
/// deadline, not a guess at how long the server takes.
func waitUntil(timeout: Duration = .seconds(5), _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while true {
        if try condition() { return true }
        if ContinuousClock.now >= deadline { return false }
        usleep(5_000)
    }
}

/// POLLRDHUP (the peer shut down its write side): Glibc exports it to C only
/// under _GNU_SOURCE, so Swift does not see it.
let pollRDHUP: Int32 = 0x2000

/// One TCP socket as the kernel lists it in /proc/net/tcp{,6}.
struct KernelSocketState {
    /// TCP state (1 ESTABLISHED, 4 FIN_WAIT1, 8 CLOSE_WAIT, ... as in include/net/tcp_states.h).
    var state: Int
    /// Bytes sent and not yet acknowledged by the other end.
    var unacknowledged: Int
    /// Bytes received by the kernel and not yet read by the owning process.
    var unread: Int

    /// The states after the owner closed (or shut down the write side of)
    /// this end: FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, LAST_ACK, CLOSING.
    static let afterOwnerClose: Set<Int> = [4, 5, 6, 7, 9, 11]
    var ownerClosed: Bool { Self.afterOwnerClose.contains(state) }
}

/// A connection's two ports on loopback.
struct ConnectionEnds {
    var clientPort: Int
    var serverPort: Int
    var v6: Bool

    /// The server's end (same process, same network namespace) as
    /// /proc/net/tcp{,6} lists it; nil once the server has closed it and the
    /// kernel has let it go (or it was reset).
    var serverEnd: KernelSocketState? { Self.lookUp(local: serverPort, remote: clientPort, v6: v6) }

    /// The client's end as the kernel lists it; nil once closed and gone.
    var clientEnd: KernelSocketState? { Self.lookUp(local: clientPort, remote: serverPort, v6: v6) }

    /// Scans the table's bytes (thousands of lines on a busy machine: no
    /// String splitting). A line is `sl: LOCAL:PORT REMOTE:PORT ST TX:RX ...`
    /// with the addresses 8 (IPv4) or 32 (IPv6) hex digits wide.
    private static func lookUp(local: Int, remote: Int, v6: Bool) -> KernelSocketState? {
        guard let table = readWholeFileBytes(v6 ? "/proc/net/tcp6" : "/proc/net/tcp") else { return nil }
        let addressWidth = v6 ? 32 : 8
        let endpointWidth = addressWidth + 5   // ADDR:PORT
        let wantLocal = Array(String(format: "%04X", local).utf8), wantRemote = Array(String(format: "%04X", remote).utf8)
        func hex(_ bytes: ArraySlice<UInt8>) -> Int? { Int(String(decoding: bytes, as: UTF8.self), radix: 16) }
        var lineStart = 0
        while lineStart < table.count {
            var lineEnd = lineStart
            while lineEnd < table.count && table[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            defer { lineStart = lineEnd + 1 }
            // "sl:" then a space, then the local endpoint.
            var colon = lineStart
            while colon < lineEnd && table[colon] != UInt8(ascii: ":") { colon += 1 }
            let localAt = colon + 2
            let remoteAt = localAt + endpointWidth + 1
            let stateAt = remoteAt + endpointWidth + 1
            let queuesAt = stateAt + 3
            guard queuesAt + 17 <= lineEnd else { continue }   // the header line, or a short one
            let localPort = table[(localAt + addressWidth + 1)..<(localAt + endpointWidth)]
            let remotePort = table[(remoteAt + addressWidth + 1)..<(remoteAt + endpointWidth)]
            guard localPort.elementsEqual(wantLocal), remotePort.elementsEqual(wantRemote),
                  let state = hex(table[stateAt..<(stateAt + 2)]),
                  let tx = hex(table[queuesAt..<(queuesAt + 8)]),
                  let rx = hex(table[(queuesAt + 9)..<(queuesAt + 17)]) else { continue }
            return KernelSocketState(state: state, unacknowledged: tx, unread: rx)
        }
        return nil
    }

    /// The server has closed its end (or it is gone altogether).
    var serverClosed: Bool { serverEnd.map { $0.ownerClosed } ?? true }
}

/// A whole /proc file, read to its end with read(2) (such files have no
/// size to read up to); nil if it cannot be opened.
func readWholeFile(_ path: String) -> String? {
    readWholeFileBytes(path).map { String(decoding: $0, as: UTF8.self) }
}

/// The same, as bytes.
func readWholeFileBytes(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { Glibc.close(fd) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        out += chunk[0..<n]
    }
    return out
}

extension TestSocket {
    private func port(_ name: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32) -> (port: Int, v6: Bool)? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { name(fd, $0, &len) }
        }
        guard rc == 0 else { return nil }
        let family = storage.ss_family
        return withUnsafePointer(to: &storage) { p -> (Int, Bool) in
            if family == sa_family_t(AF_INET6) {
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { (Int(UInt16(bigEndian: $0.pointee.sin6_port)), true) }
            }
            return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { (Int(UInt16(bigEndian: $0.pointee.sin_port)), false) }
        }
    }

    /// The ports of this connection, to look up its server end later, even
    /// after the client has closed its own; nil if the socket is not connected.
    var ends: ConnectionEnds? {
        guard let local = port(getsockname), let peer = port(getpeername) else { return nil }
        return ConnectionEnds(clientPort: local.port, serverPort: peer.port, v6: local.v6)
    }

    /// The server's end of this connection (`ConnectionEnds.serverEnd`); nil
    /// once it is gone or this socket is no longer connected.
    var serverEnd: KernelSocketState? { ends?.serverEnd }

    /// Waits until the server has accepted this connection and read every
    /// byte sent on it so far: the server's kernel has acknowledged them all
    /// and its receive queue is empty (the process took them), its end still
    /// open. False if that did not happen within `timeout`.
    func waitUntilServerHasRead(timeout: Duration = .seconds(5)) -> Bool {
        guard let ends else { return false }
        return waitUntil(timeout: timeout) {
            guard let mine = ends.clientEnd, mine.unacknowledged == 0, let theirs = ends.serverEnd else { return false }
            return theirs.unread == 0 && !theirs.ownerClosed
        }
    }

    /// Waits for the server to end this connection: the client sees EOF or a
    /// reset (pollRDHUP/POLLHUP/POLLERR, even with unread data before it), or
    /// the server's end has left ESTABLISHED (its FIN may wait behind output
    /// the client has not read). Nothing is consumed. False if the
    /// connection was still open at the deadline.
    func serverCloses(within timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            guard let ends, !ends.serverClosed else { return true }
            let left = deadline - ContinuousClock.now
            if left <= .zero { return false }
            // The client may see the close first: wait on it a little, then look again.
            if peerHungUp(waitingMs: min(20, left.pollMilliseconds)) { return true }
        }
    }

    /// True if the server leaves the connection open for the whole `window`:
    /// poll() waits for pollRDHUP (or a reset) with that timeout. Data that
    /// arrives meanwhile does not count as a close.
    func staysOpen(for window: Duration) -> Bool {
        let deadline = ContinuousClock.now + window
        while true {
            let left = deadline - ContinuousClock.now
            if left <= .zero { return true }
            if peerHungUp(waitingMs: left.pollMilliseconds) { return false }
        }
    }

    /// poll() for the peer's FIN or a reset for up to `ms`; true if it came.
    private func peerHungUp(waitingMs ms: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(pollRDHUP), revents: 0)
        let rc = poll(&p, 1, ms)
        if rc < 0 { return errno != EINTR }
        return rc > 0 && p.revents & Int16(pollRDHUP | POLLHUP | POLLERR) != 0
    }

    /// Waits up to `timeout` until there is something to read (data, EOF or a
    /// reset) without consuming it.
    func waitReadable(timeout: Duration = .seconds(5)) -> Bool {
        if !pending.isEmpty { return true }
        var p = pollfd(fd: fd, events: Int16(POLLIN | pollRDHUP), revents: 0)
        while true {
            let rc = poll(&p, 1, timeout.pollMilliseconds)
            if rc < 0 && errno == EINTR { continue }
            return rc > 0
        }
    }
}

extension Duration {
    /// This duration as a poll() timeout, rounded up to whole milliseconds.
    var pollMilliseconds: Int32 {
        Int32(clamping: components.seconds * 1000 + (components.attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
    }
}

/// True if a connection attempt to `port` on 127.0.0.1 is refused now
/// (nothing listens). A connection that is accepted instead is closed at once.
func connectionRefused(port: Int) -> Bool {
    do {
        let s = try TestSocket(port: port)
        s.reset()
        return false
    } catch ClientError.system(_, let e) {
        return e == ECONNREFUSED
    } catch {
        return false
    }
}

/// A thread a test starts and later joins with a deadline.
final class TestThread: @unchecked Sendable {
    // @unchecked: the semaphore is only signalled and waited on.
    private let done = DispatchSemaphore(value: 0)

    init(_ work: @escaping @Sendable () -> Void) {
        let done = done
        let t = Thread {
            work()
            done.signal()
        }
        t.stackSize = 1 << 20
        t.start()
    }

    /// Waits for the thread to finish; false if it did not within `timeout`.
    func join(timeout: Duration = .seconds(10)) -> Bool {
        let ns = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        return done.wait(timeout: .now() + .nanoseconds(Int(ns))) == .success
    }
}

/// One request, one response, on a fresh connection.
func fetch(port: Int, _ request: String, host: String = "127.0.0.1") throws -> TestResponse {
    let s = try TestSocket(port: port, host: host)
    try s.send(request)
    return try s.readResponse(expectBody: !request.hasPrefix("HEAD "))
}

/// VmRSS of this process in KiB.
func residentKiB() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return -1 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let digits = line.filter { $0.isNumber }
        return Int(digits) ?? -1
    }
    return -1
}

/// A client conversation of several requests in turn. On engines that keep
/// connections alive it is one connection; on the blocking engine (one
/// request per connection by design) each final answer must say
/// `Connection: close` and be followed by EOF, and the next request goes on
/// a new connection. For tests whose subject is not keep-alive itself.
final class Session {
    let mode: EngineMode
    let port: Int
    let host: String
    private var current: TestSocket?

    init(_ mode: EngineMode, port: Int, host: String = "127.0.0.1") throws {
        self.mode = mode
        self.port = port
        self.host = host
        current = try TestSocket(port: port, host: host)
    }

    /// The connection in use. After a blocking-engine answer the next one is
    /// opened only when needed: an idle open connection would hold that
    /// engine (it serves one client at a time) and stall everyone else.
    var socket: TestSocket {
        get throws {
            if let current { return current }
            let s = try TestSocket(port: port, host: host)
            current = s
            return s
        }
    }

    func send(_ text: String) throws { try socket.send(text) }
    func send(_ bytes: [UInt8]) throws { try socket.send(bytes) }

    func readResponse(expectBody: Bool = true, file: StaticString = #filePath, line: UInt = #line) throws -> TestResponse {
        let s = try socket
        let r = try s.readResponse(expectBody: expectBody)
        if !mode.keepsAlive && r.status >= 200 {
            XCTAssertEqual(r.header("Connection")?.lowercased(), "close",
                           "[\(mode)] one request per connection: the answer says Connection: close", file: file, line: line)
            XCTAssertEqual(try s.expectClose(), [], "[\(mode)] and the connection closes after it", file: file, line: line)
            current = nil
        }
        return r
    }

    var looksOpen: Bool { current?.looksOpen ?? false }
    var pending: [UInt8] { current?.pending ?? [] }
    func expectClose() throws -> [UInt8] { try socket.expectClose() }
}

/// The blocking engine's documented answer to keep-alive and pipelining: the
/// first request is answered with `Connection: close`, the connection then
/// closes, and nothing after the first request is answered.
func assertOneRequestPerConnection(_ mode: EngineMode, port: Int, requests: String,
                                   file: StaticString = #filePath, line: UInt = #line) throws {
    let s = try TestSocket(port: port)
    try s.send(requests)
    let first = try s.readResponse()
    XCTAssertEqual(first.status, 200, "[\(mode)] first request answered: \(first)", file: file, line: line)
    XCTAssertEqual(first.header("Connection")?.lowercased(), "close",
                   "[\(mode)] one request per connection: Connection: close", file: file, line: line)
    XCTAssertEqual(try s.expectClose(), [], "[\(mode)] closed after the first answer, nothing more answered",
                   file: file, line: line)
}

/// The blocking engine's documented answer to concurrent clients: one at a
/// time. While client A's request is incomplete, client B (complete request,
/// already connected) gets nothing; once A's request completes, A is
/// answered, then B.
func assertOneClientAtATime(_ mode: EngineMode, port: Int,
                            file: StaticString = #filePath, line: UInt = #line) throws {
    let a = try TestSocket(port: port)
    try a.send("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbo")
    XCTAssertTrue(a.waitUntilServerHasRead(), "[\(mode)] A was not accepted and read first", file: file, line: line)
    let b = try TestSocket(port: port)
    try b.send("GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    // B waits: nothing of it is read, nothing arrives for it within 300 ms.
    XCTAssertFalse(b.waitReadable(timeout: .milliseconds(300)),
                   "[\(mode)] B must wait while A's request is incomplete: it got an answer or a close", file: file, line: line)
    XCTAssertGreaterThan(b.serverEnd?.unread ?? 0, 0,
                         "[\(mode)] B's request was read while A's is incomplete", file: file, line: line)
    try a.send("dy")
    let ra = try a.readResponse()
    XCTAssertEqual(ra.fields["target"], "/a", "[\(mode)] A answered once complete: \(ra)", file: file, line: line)
    XCTAssertEqual(ra.inspectedBody.map { String(decoding: $0, as: UTF8.self) }, "body", "[\(mode)]", file: file, line: line)
    let rb = try b.readResponse()
    XCTAssertEqual(rb.fields["target"], "/b", "[\(mode)] then B: \(rb)", file: file, line: line)
}
