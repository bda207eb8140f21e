// Restarts that drop nothing, and socket activation: listening sockets that
// come from elsewhere. The protocol and the descriptor passing are C
// (csrc/handoff.c); this file gives them Swift errors and lifetimes.
import CPeregrine
#if canImport(Glibc)
import Glibc
#endif

/// A handoff that could not be done; the running server (if any) is untouched.
public struct HandoffError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// New process: the listening sockets fetched from the server offering at a
/// name, until `confirm()` (we serve them now) or `abandon()`.
struct HandoffFetch {
    let descriptors: [Int32]
    private let session: Int32
    private let name: String

    /// nil when nobody offers at `name` (bind as usual).
    init?(name: String, threads: Int) throws {
        var fds = [Int32](repeating: -1, count: Int(PRG_HANDOFF_MAX_FDS))
        var session: Int32 = -1
        let n = fds.withUnsafeMutableBufferPointer {
            prg_handoff_fetch(name, $0.baseAddress, Int32($0.count), &session, 10_000)
        }
        if n == 0 { return nil }
        if n == -EACCES {
            // Someone else's socket under our name: never take its descriptors,
            // and do not let it stop us from serving either.
            warn("handoff from \(name): the process offering there is another user's (or refused us as one): "
                + "not taking its sockets, binding instead")
            return nil
        }
        if n < 0 {
            let why = switch -n {
            case EPROTO: "the process offering there does not speak the Peregrine handoff protocol"
            case ETIMEDOUT: "the process offering there did not answer within 10 s"
            default: errnoDescription(-n)
            }
            throw HandoffError(description: "handoff from \(name): \(why)")
        }
        self.descriptors = Array(fds.prefix(Int(n)))
        self.session = session
        self.name = name
        if descriptors.count > threads {
            // Every socket needs a loop accepting from it, or what the kernel
            // queues there waits for nobody.
            abandon()
            closeDescriptors()
            throw HandoffError(description: "handoff from \(name): the running server has \(descriptors.count) listeners; "
                + "start this one with --threads \(descriptors.count) or more")
        }
    }

    /// The engine serves its own copies: ours are closed once it started.
    func closeDescriptors() {
        for fd in descriptors { close(fd) }
    }

    /// We did not start: the old server goes on serving, and offering.
    func abandon() {
        close(session)
    }

    /// We serve the sockets: the old server stops offering (and, on SIGTERM,
    /// drains) and the name is free for our own offer.
    func confirm() {
        let rc = prg_handoff_confirm(session, 10_000)
        if rc != 0 {
            warn("handoff from \(name): the old server did not acknowledge (\(errnoDescription(-rc))); serving anyway")
        }
    }
}

func warn(_ text: String) {
    var line = Array("peregrine: \(text)\n".utf8)
    _ = line.withUnsafeMutableBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
}

/// Serving process: offers copies of its listening sockets at a name.
final class HandoffOffer: @unchecked Sendable {
    // @unchecked: the pointer is closed once, by the Server under its lock.
    private var handle: OpaquePointer?

    init(name: String, descriptors: [Int32]) throws {
        var h: OpaquePointer? = nil
        let rc = descriptors.withUnsafeBufferPointer { prg_handoff_offer(name, $0.baseAddress, Int32($0.count), &h) }
        guard rc == 0, let h else {
            let why = rc == -EADDRINUSE ? "another process offers there already" : errnoDescription(-rc)
            throw HandoffError(description: "offer listeners at \(name): \(why)")
        }
        handle = h
    }

    /// Stops offering; true when a new process took the listeners.
    func close() -> Bool {
        guard let h = handle else { return false }
        handle = nil
        return prg_handoff_close(h) == 1
    }

    deinit { _ = close() }
}

/// A malformed `LISTEN_FDS` or `LISTEN_PID`, or a descriptor they name that
/// is not open.
public struct SocketActivationError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// systemd's socket activation (`LISTEN_FDS`/`LISTEN_PID`, sd_listen_fds(3)),
/// without libsystemd: descriptors 3, 4, … handed over by whoever started us.
public enum SocketActivation {
    /// The descriptors passed to this process: `[]` when `LISTEN_FDS` is
    /// unset, or when `LISTEN_PID` names another process (they were meant for
    /// it). Throws `SocketActivationError` naming the variable when either is
    /// malformed or a descriptor is not open. With `unsetEnvironment`, both
    /// variables are removed, so that children do not see them.
    public static func listenDescriptors(environment: [String: String]? = nil, pid: Int32 = getpid(),
                                         unsetEnvironment: Bool = false) throws(SocketActivationError) -> [Int32] {
        func value(_ key: String) -> String? {
            if let environment { return environment[key] }
            return getenv(key).map { String(cString: $0) }
        }
        defer {
            if unsetEnvironment {
                unsetenv("LISTEN_FDS")
                unsetenv("LISTEN_PID")
                unsetenv("LISTEN_FDNAMES")
            }
        }
        guard let fdsText = value("LISTEN_FDS") else { return [] }
        guard let count = decimal(fdsText), (1...Int(PRG_HANDOFF_MAX_FDS)).contains(count) else {
            throw SocketActivationError(description: "LISTEN_FDS=\"\(fdsText)\" is not a count of descriptors 1...\(PRG_HANDOFF_MAX_FDS)")
        }
        guard let pidText = value("LISTEN_PID") else {
            throw SocketActivationError(description: "LISTEN_FDS is set without LISTEN_PID")
        }
        guard let target = decimal(pidText), target > 0 else {
            throw SocketActivationError(description: "LISTEN_PID=\"\(pidText)\" is not a process id")
        }
        if target != Int(pid) { return [] }
        let fds = (0..<count).map { Int32(3 + $0) }
        for fd in fds {
            let flags = fcntl(fd, F_GETFD)
            if flags < 0 {
                throw SocketActivationError(description: "LISTEN_FDS=\(count): descriptor \(fd) is not open")
            }
            _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC)   // ours, not our children's
        }
        return fds
    }

    /// Digits only (no sign, no space), at most 9 of them.
    private static func decimal(_ text: String) -> Int? {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= 9, bytes.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        return bytes.reduce(0) { $0 * 10 + Int($1 - 48) }
    }
}
