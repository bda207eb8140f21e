// Restarts that drop nothing and socket activation (issue 13): listening
// sockets inherited by LISTEN_FDS/LISTEN_PID or by Configuration, and handed
// from a running `peregrine serve` to a new one over the handoff socket.
import CPeregrine
import Foundation
import Glibc
import Peregrine
import Synchronization
import XCTest

final class HandoffTests: XCTestCase {
    /// The event engines' modes (blocking and threaded take no inherited
    /// listeners: their wake-up shuts the listener down for everyone).
    private var eventModes: [EngineMode] { EngineMode.all.filter(\.runsSeveralLoops) }

    private var cliPath: String {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [dir.appendingPathComponent("peregrine"), dir.deletingLastPathComponent().appendingPathComponent("peregrine")] {
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate.path }
        }
        return dir.appendingPathComponent("peregrine").path
    }

    /// A listening socket on 127.0.0.1, ephemeral port, numbered 10 or above
    /// (never 3, which the child gets it as). Returns (fd, port).
    private func listeningSocket() throws -> (Int32, Int) {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { throw ClientError.system("socket", errno) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0, listen(s, 128) == 0 else { throw ClientError.system("bind/listen", errno) }
        let fd = fcntl(s, F_DUPFD_CLOEXEC, 10)
        close(s)
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return (fd, Int(UInt16(bigEndian: bound.sin_port)))
    }

    private func isListening(_ fd: Int32) -> Bool {
        var v: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v == 1
    }

    // MARK: - Socket activation

    /// The CLI started the way systemd starts it: the listening socket on
    /// fd 3, LISTEN_FDS=1, LISTEN_PID = its own pid (a shell that execs it).
    /// It serves that socket (not a port of its own: `--port 0` would pick
    /// another), and SIGTERM leaves the socket listening for the one who
    /// passed it (systemd keeps it across restarts).
    func testCLIServesListenerPassedOnFD3() throws {
        for mode in eventModes {
            let (fd, port) = try listeningSocket()
            defer { close(fd) }
            let child = try SpawnedCLI(cliPath, ["serve", "--host", "127.0.0.1", "--port", "0"] + mode.cliArguments,
                                       environment: ["LISTEN_FDS": "1"], setListenPid: true, fd3: fd)
            defer { child.kill() }
            let line = try child.waitFor("peregrine: serving", seconds: 30)
            XCTAssertTrue(line.contains("127.0.0.1:\(port) "), "[\(mode)] serves the passed socket's port: \(line)")
            let r = try fetch(port: port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            XCTAssertEqual(r.status, 200, "[\(mode)]")
            XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "Hello, World!", "[\(mode)]")
            XCTAssertEqual(child.terminate(seconds: 20), 0, "[\(mode)] exit status after SIGTERM: \(child.output)")
            XCTAssertTrue(isListening(fd), "[\(mode)] the passed socket still listens after the server exited")
        }
    }

    /// A malformed LISTEN_FDS is a clear error that names it, before anything
    /// is bound; the process exits non-zero.
    func testCLIMalformedListenFDsIsAClearError() throws {
        for bad in ["abc", "0", "-1", "2x", ""] {
            let child = try SpawnedCLI(cliPath, ["serve", "--host", "127.0.0.1", "--port", "0"],
                                       environment: ["LISTEN_FDS": bad], setListenPid: true, fd3: nil)
            defer { child.kill() }
            let status = child.waitExit(seconds: 20)
            XCTAssertNotNil(status, "LISTEN_FDS=\(bad): exits")
            XCTAssertNotEqual(status, 0, "LISTEN_FDS=\(bad)")
            XCTAssertTrue(child.output.contains("LISTEN_FDS=\"\(bad)\""), "LISTEN_FDS=\(bad): \(child.output)")
            XCTAssertFalse(child.output.contains("serving"), "LISTEN_FDS=\(bad): \(child.output)")
        }
        // Set, but descriptor 3 is not open.
        let child = try SpawnedCLI(cliPath, ["serve", "--host", "127.0.0.1", "--port", "0"],
                                   environment: ["LISTEN_FDS": "1"], setListenPid: true, fd3: nil, closeFD3: true)
        defer { child.kill() }
        XCTAssertNotEqual(child.waitExit(seconds: 20), 0)
        XCTAssertTrue(child.output.contains("descriptor 3 is not open"), child.output)
    }

    /// The protocol's rules, from the environment: unset or meant for another
    /// process gives nothing; malformed values are errors naming the variable.
    func testSocketActivationEnvironmentRules() throws {
        let me = getpid()
        XCTAssertEqual(try SocketActivation.listenDescriptors(environment: [:], pid: me), [])
        XCTAssertEqual(try SocketActivation.listenDescriptors(environment: ["LISTEN_FDS": "1", "LISTEN_PID": "\(me + 1)"], pid: me), [],
                       "descriptors meant for another process are not taken")
        // Descriptor 3 of this process is whatever the test runner opened
        // first (the CLI test passes a real socket there).
        if fcntl(3, F_GETFD) >= 0 {
            XCTAssertEqual(try SocketActivation.listenDescriptors(environment: ["LISTEN_FDS": "1", "LISTEN_PID": "\(me)"], pid: me), [3])
        }
        for (env, word) in [(["LISTEN_FDS": "x", "LISTEN_PID": "\(me)"], "LISTEN_FDS=\"x\""),
                            (["LISTEN_FDS": "0", "LISTEN_PID": "\(me)"], "LISTEN_FDS=\"0\""),
                            (["LISTEN_FDS": " 1", "LISTEN_PID": "\(me)"], "LISTEN_FDS=\" 1\""),
                            (["LISTEN_FDS": "99999", "LISTEN_PID": "\(me)"], "LISTEN_FDS=\"99999\""),
                            (["LISTEN_FDS": "1"], "without LISTEN_PID"),
                            (["LISTEN_FDS": "1", "LISTEN_PID": "me"], "LISTEN_PID=\"me\""),
                            (["LISTEN_FDS": "200", "LISTEN_PID": "\(me)"], "is not open")] {
            XCTAssertThrowsError(try SocketActivation.listenDescriptors(environment: env, pid: me), "\(env)") { error in
                XCTAssertTrue("\(error)".contains(word), "\(env): \(error)")
            }
        }
    }

    /// Library: `Configuration.listenDescriptors` is served instead of
    /// binding, by every loop (two loops share one socket), and a shutdown
    /// leaves the caller's socket listening.
    func testLibraryServesInheritedDescriptor() throws {
        for mode in eventModes {
            let (fd, port) = try listeningSocket()
            defer { close(fd) }
            let server = try startServer(mode, .http { _, response in response.send(body: "inherited") }) { c in
                c.port = 0
                c.threads = 2
                c.listenDescriptors = [fd]
            }
            XCTAssertEqual(server.port, port, "[\(mode)] the inherited socket's port")
            for _ in 0..<4 {
                let r = try fetch(port: port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "inherited", "[\(mode)]")
            }
            server.shutdown(deadline: .seconds(5))
            XCTAssertTrue(isListening(fd), "[\(mode)] still listening for its owner after the shutdown")
            // And nothing of the server's lingers on it: a connection queues for us.
            let client = try TestSocket(port: port)
            let accepted = accept(fd, nil, nil)
            XCTAssertGreaterThanOrEqual(accepted, 0, "[\(mode)]")
            if accepted >= 0 { close(accepted) }
            client.close()
        }
    }

    /// Bad inherited descriptors are refused with an error naming them.
    func testLibraryRefusesBadInheritedDescriptors() throws {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        defer { close(fds[0]); close(fds[1]) }
        for mode in eventModes {
            var c = Configuration()
            mode.apply(to: &c)
            c.listenDescriptors = [fds[0]]
            let server = Server(configuration: c, application: .http { _, response in response.send(body: "x") })
            XCTAssertThrowsError(try server.start(), "[\(mode)] a pipe is not a listening socket") { error in
                XCTAssertTrue("\(error)".contains("\(fds[0])"), "[\(mode)] names the descriptor: \(error)")
            }
        }
        // The rules, each refusal naming its field.
        func refusal(_ configure: (inout Configuration) -> Void) -> ConfigurationError? {
            var c = Configuration()
            configure(&c)
            do { try c.validate() } catch { return error }
            return nil
        }
        XCTAssertNil(refusal { $0.listenDescriptors = [3, 4]; $0.threads = 2 })
        XCTAssertEqual(refusal { $0.listenDescriptors = [3, 4]; $0.threads = 1 }?.field, .threads, "two listeners need two loops")
        let threaded = refusal { $0.listenDescriptors = [3]; $0.engine = .threaded }
        XCTAssertEqual(threaded?.field, .listenDescriptors)
        XCTAssertTrue(threaded?.description.contains("not threaded") ?? false, "\(String(describing: threaded))")
        XCTAssertEqual(refusal { $0.handoffSocket = "@x"; $0.engine = .blocking }?.field, .handoffSocket)
        XCTAssertEqual(refusal { $0.listenDescriptors = [-1] }?.field, .listenDescriptors)
        for bad in ["", "@", String(repeating: "a", count: 108), "a\u{0}b"] {
            XCTAssertEqual(refusal { $0.handoffSocket = bad }?.field, .handoffSocket, bad.debugDescription)
        }
        XCTAssertNil(refusal { $0.handoffSocket = String(repeating: "a", count: 107) })
        XCTAssertEqual(refusal { $0.handoffIdleGrace = .seconds(-1) }?.field, .handoffIdleGrace)
    }

    // MARK: - Handoff between two processes

    /// Five restarts of `peregrine serve` under a client load that counts
    /// every answer: each time a new process with the same arguments on the
    /// same port (it takes the listening sockets over the handoff socket),
    /// then SIGTERM to the old one. Every request is answered 200; no
    /// connect is refused, no connection is closed or reset under a request.
    func testRestartsUnderLoadDropNothing() throws {
        for mode in eventModes {
            let port = try freePort()
            let name = "@peregrine-test-\(getpid())-\(port)"
            let args = ["serve", "--host", "127.0.0.1", "--port", "\(port)", "--handoff-socket", name,
                        "--threads", "2"] + mode.cliArguments
            var server = try SpawnedCLI(cliPath, args)
            _ = try server.waitFor("peregrine: serving", seconds: 30)
            let load = Load(port: port, clients: 8)
            load.start()
            defer { load.stop() }
            XCTAssertTrue(load.waitForAnswers(100, seconds: 20), "[\(mode)] load runs")
            for i in 1...5 {
                let next = try SpawnedCLI(cliPath, args)
                _ = try next.waitFor("peregrine: serving", seconds: 30)
                let before = load.ok.load(ordering: .relaxed)
                XCTAssertEqual(server.terminate(seconds: 30), 0, "[\(mode)] restart \(i): old exit: \(server.output)")
                XCTAssertTrue(server.output.contains("serves our listeners now"), "[\(mode)] restart \(i): \(server.output)")
                server = next
                XCTAssertTrue(load.waitForAnswers(before + 100, seconds: 20), "[\(mode)] restart \(i): the new one answers")
            }
            load.stop()
            XCTAssertEqual(server.terminate(seconds: 30), 0, "[\(mode)]")
            XCTAssertGreaterThan(load.ok.load(ordering: .relaxed), 500, "[\(mode)]")
            XCTAssertEqual(load.errors.load(ordering: .relaxed), 0, "[\(mode)] socket errors: \(load.firstError.withLock { $0 })")
            XCTAssertEqual(load.non2xx.load(ordering: .relaxed), 0, "[\(mode)] non-2xx answers")
        }
    }

    /// The blocking engines cannot share a listener: by default they offer no
    /// handoff (and start as before on a fixed port); asked for one, they
    /// refuse with an error that says why.
    func testBlockingEnginesTakeNoHandoff() throws {
        for engine in ["blocking", "threaded"] {
            let port = try freePort()
            let plain = try SpawnedCLI(cliPath, ["serve", "--host", "127.0.0.1", "--port", "\(port)", "--engine", engine])
            defer { plain.kill() }
            _ = try plain.waitFor("peregrine: serving", seconds: 30)
            XCTAssertEqual(try fetch(port: port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200, engine)
            XCTAssertEqual(plain.terminate(seconds: 30), 0, "\(engine): \(plain.output)")
            let asked = try SpawnedCLI(cliPath, ["serve", "--host", "127.0.0.1", "--port", "\(port)", "--engine", engine,
                                                 "--handoff-socket", "@peregrine-test-\(getpid())-\(engine)"])
            defer { asked.kill() }
            XCTAssertNotEqual(asked.waitExit(seconds: 30), 0, engine)
            XCTAssertTrue(asked.output.contains("invalid --handoff-socket \"@peregrine-test-\(getpid())-\(engine)\": allowed only with an event engine (epoll, libev, swift), not \(engine)"), asked.output)
        }
    }

    /// A new process with fewer loops than the running one has listeners is
    /// refused with a clear error (a socket nobody accepts from would hold
    /// its connections forever), and the running one goes on serving.
    func testHandoffToFewerThreadsIsRefused() throws {
        let port = try freePort()
        let name = "@peregrine-test-\(getpid())-\(port)"
        let base = ["serve", "--host", "127.0.0.1", "--port", "\(port)", "--handoff-socket", name]
        let old = try SpawnedCLI(cliPath, base + ["--threads", "2"])
        defer { old.kill() }
        _ = try old.waitFor("peregrine: serving", seconds: 30)
        let new = try SpawnedCLI(cliPath, base + ["--threads", "1"])
        defer { new.kill() }
        XCTAssertNotEqual(new.waitExit(seconds: 30), 0)
        XCTAssertTrue(new.output.contains("has 2 listeners; start this one with --threads 2 or more"), new.output)
        XCTAssertEqual(try fetch(port: port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200)
        // The offer stands: a new process that fits takes over.
        let fits = try SpawnedCLI(cliPath, base + ["--threads", "3"])
        defer { fits.kill() }
        _ = try fits.waitFor("peregrine: serving", seconds: 30)
        XCTAssertEqual(old.terminate(seconds: 30), 0, old.output)
        XCTAssertEqual(try fetch(port: port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200)
        XCTAssertEqual(fits.terminate(seconds: 30), 0, fits.output)
    }

    /// A peer that fetches the sockets and goes away without confirming (a
    /// new process that died mid-handoff), or one that speaks something else,
    /// leaves the offer standing and the server serving; the next real
    /// handoff works.
    func testHandoffSurvivesPeerDyingMidway() throws {
        for mode in eventModes {
            let name = "@peregrine-test-\(getpid())-mid-\(mode.description.replacingOccurrences(of: "/", with: "-"))"
            let server = try startServer(mode, .http { _, response in response.send(body: "old") }) { c in
                c.handoffSocket = name
            }
            defer { server.stop() }
            var fds = [Int32](repeating: -1, count: 8)
            var session: Int32 = -1
            let n = prg_handoff_fetch(name, &fds, 8, &session, 5000)
            XCTAssertEqual(n, 1, "[\(mode)] one listener")
            for fd in fds.prefix(Int(max(n, 0))) { close(fd) }
            if session >= 0 { close(session) }   // gone without READY
            let garbage = try UnixPeer(name)
            garbage.send("HELLO?\n")
            XCTAssertTrue(garbage.readAll().hasPrefix("ERR"), "[\(mode)] a stranger's line is refused")
            XCTAssertEqual(try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").body.text, "old", "[\(mode)]")
            // The offer still stands.
            var c = Configuration()
            mode.apply(to: &c)
            c.host = "127.0.0.1"
            c.port = server.port
            c.handoffSocket = name
            let next = Server(configuration: c, application: .http { _, response in response.send(body: "new") })
            try next.start()
            defer { next.stop() }
            XCTAssertEqual(next.port, server.port, "[\(mode)]")
            server.shutdown(deadline: .seconds(5))
            XCTAssertEqual(try fetch(port: next.port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").body.text, "new", "[\(mode)]")
        }
    }

    /// Thread counts may change across restarts: 2 loops hand their 2
    /// sockets to 4 loops (two share each), which hand the same 2 sockets
    /// (not 4 numbers) on to 2 loops again. Every step serves the port.
    func testHandoffAcrossThreadCounts() throws {
        for mode in eventModes {
            let name = "@peregrine-test-\(getpid())-threads-\(mode.description.replacingOccurrences(of: "/", with: "-"))"
            var port = 0
            var previous: Server? = nil
            for (step, threads) in [2, 4, 2].enumerated() {
                var c = Configuration()
                mode.apply(to: &c)
                c.host = "127.0.0.1"
                c.port = port
                c.threads = threads
                c.handoffSocket = name
                let server = Server(configuration: c, application: .http { _, response in response.send(body: "step") })
                try server.start()
                if port == 0 { port = server.port }
                XCTAssertEqual(server.port, port, "[\(mode)] step \(step): same port")
                previous?.shutdown(deadline: .seconds(5))
                previous = server
                for _ in 0..<4 {
                    XCTAssertEqual(try fetch(port: port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").body.text, "step", "[\(mode)] step \(step)")
                }
            }
            previous?.stop()
        }
    }

    /// A filesystem handoff socket: a stale file left by a process that died
    /// is replaced, the name passes from the old server to the new one, and
    /// the last one removes it when it stops.
    func testHandoffOverFilesystemPath() throws {
        for mode in eventModes {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("peregrine-handoff-\(getpid()).sock").path
            // Stale: bound, then its socket closed (the file stays).
            let stale = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in path.utf8.enumerated() { p[i] = b } }
            let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(stale, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            XCTAssertEqual(bound, 0, "[\(mode)] stale file made")
            close(stale)
            let old = try startServer(mode, .http { _, response in response.send(body: "old") }) { c in c.handoffSocket = path }
            defer { old.stop() }
            var c = Configuration()
            mode.apply(to: &c)
            c.host = "127.0.0.1"
            c.port = old.port
            c.handoffSocket = path
            let new = Server(configuration: c, application: .http { _, response in response.send(body: "new") })
            try new.start()
            defer { new.stop() }
            old.shutdown(deadline: .seconds(5))
            XCTAssertEqual(try fetch(port: new.port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").body.text, "new", "[\(mode)]")
            XCTAssertTrue(FileManager.default.fileExists(atPath: path), "[\(mode)] the new server offers there now")
            new.stop()
            XCTAssertFalse(FileManager.default.fileExists(atPath: path), "[\(mode)] removed by the last one")
        }
    }

    /// Another user's process is refused both ways (SO_PEERCRED): it gets no
    /// descriptors from our offer, and we take none from its socket (we bind
    /// our own instead). Needs root, to run the peer as nobody.
    func testHandoffRefusesAnotherUser() throws {
        XCTAssertEqual(getuid(), 0, "this test runs a peer as another user: run it as root")
        guard getuid() == 0 else { return }
        let name = "@peregrine-test-\(getpid())-user"
        let server = try startServer(EngineMode(engine: .epoll), .http { _, response in response.send(body: "ours") }) { c in
            c.handoffSocket = name
        }
        defer { server.stop() }
        // As nobody: connect, report what came back and how many descriptors
        // (the refusal comes at once, before the peer says anything).
        let asNobody = """
            import os, socket, array
            os.setgid(65534); os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect("\\0" + "\(name.dropFirst())")
            fds = array.array("i")
            msg, anc, flags, addr = s.recvmsg(64, socket.CMSG_SPACE(16 * fds.itemsize))
            n = sum(len(d) // fds.itemsize for (l, t, d) in anc if t == socket.SCM_RIGHTS)
            print(msg.decode().strip(), "fds=%d" % n)
            """
        let out = try runPython(asNobody)
        XCTAssertTrue(out.hasPrefix("ERR not the same user fds=0"), out)
        XCTAssertEqual(try fetch(port: server.port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").body.text, "ours")

        // Nobody offers at a name we then use: we bind our own port.
        let squat = "@peregrine-test-\(getpid())-squat"
        let squatter = try spawnPython("""
            import os, socket, sys, time
            os.setgid(65534); os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind("\\0" + "\(squat.dropFirst())"); s.listen(4)
            print("listening", flush=True)
            c, _ = s.accept()
            time.sleep(30)
            """)
        defer { squatter.kill() }
        _ = try squatter.waitFor("listening", seconds: 20)
        let ours = try startServer(EngineMode(engine: .epoll), .http { _, response in response.send(body: "bound") }) { c in
            c.handoffSocket = squat
        }
        defer { ours.stop() }
        XCTAssertEqual(try fetch(port: ours.port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").body.text, "bound")
    }

    // MARK: - Helpers

    private func freePort() throws -> Int {
        let (fd, port) = try listeningSocket()
        close(fd)
        return port
    }

    private func runPython(_ code: String) throws -> String {
        let p = try spawnPython(code)
        defer { p.kill() }
        _ = p.waitExit(seconds: 20)
        return p.output
    }
}

/// A child process started with posix_spawn: stderr and stdout into a pipe
/// read on a thread; optionally a descriptor on fd 3 and LISTEN_PID set to
/// the child's own pid (a shell that sets it, then execs the program).
final class SpawnedCLI: @unchecked Sendable {
    let pid: pid_t
    private let lines = LockedList<String>()
    private let reader: Thread
    private var status: Int32?
    /// Set when the output pipe reached EOF (every writer is gone).
    private let outputFlag: DoneFlag

    init(_ program: String, _ args: [String], environment: [String: String] = [:], setListenPid: Bool = false,
         fd3: Int32? = nil, closeFD3: Bool = false) throws {
        let argv = setListenPid ? ["/bin/sh", "-c", "LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"", program] + args
                                : [program] + args
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LISTEN_") }
        for (k, v) in environment { env[k] = v }
        var pipeFds: [Int32] = [0, 0]
        guard pipe(&pipeFds) == 0 else { throw ClientError.system("pipe", errno) }
        for fd in pipeFds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }   // the child gets the write end as 1 and 2 only
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pipeFds[1], 1)
        posix_spawn_file_actions_adddup2(&actions, pipeFds[1], 2)
        if let fd3 { posix_spawn_file_actions_adddup2(&actions, fd3, 3) }
        if closeFD3 { posix_spawn_file_actions_addclose(&actions, 3) }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in cArgs + cEnv { free(p) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, argv[0], &actions, nil, cArgs, cEnv)
        close(pipeFds[1])
        guard rc == 0 else {
            close(pipeFds[0])
            throw ClientError.system("posix_spawn \(argv[0])", rc)
        }
        pid = child
        let readFd = pipeFds[0]
        let sink = lines
        let done = DoneFlag()
        outputFlag = done
        reader = Thread {
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buf.withUnsafeMutableBytes { read(readFd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                let text = String(decoding: buf[0..<n], as: UTF8.self)
                sink.append(text)
            }
            close(readFd)
            done.set()
        }
        reader.start()
    }

    var output: String { lines.all.joined() }

    /// The first output line containing `text` (waits on the output, bounded).
    func waitFor(_ text: String, seconds: Double) throws -> String {
        let end = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < end {
            if let line = output.split(separator: "\n").first(where: { $0.contains(text) }) { return String(line) }
            if status == nil, let s = reap(block: false) {
                status = s
                while !outputFlag.isSet && ContinuousClock.now < end { usleep(1_000) }   // its last words
                continue
            }
            if status != nil, !output.contains(text) { break }
            usleep(10_000)   // polling the child's output, not synchronising with it
        }
        throw ClientError.malformed("no \"\(text)\" from the child: \(output)")
    }

    /// Exit status (or 128 + signal), nil when it has not exited in time.
    func waitExit(seconds: Double) -> Int32? {
        if let status { return status }
        let end = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < end {
            if let s = reap(block: false) {
                status = s
                // Its last words may still be in the pipe.
                while !outputFlag.isSet && ContinuousClock.now < end { usleep(1_000) }
                return s
            }
            usleep(10_000)
        }
        return nil
    }

    private func reap(block: Bool) -> Int32? {
        var st: Int32 = 0
        let r = waitpid(pid, &st, block ? 0 : WNOHANG)
        guard r == pid else { return nil }
        // WIFEXITED / WEXITSTATUS / WTERMSIG spelled out (macros in C).
        if st & 0x7f == 0 { return (st >> 8) & 0xff }
        return 128 + (st & 0x7f)
    }

    func terminate(seconds: Double) -> Int32? {
        if status == nil { Glibc.kill(pid, SIGTERM) }
        return waitExit(seconds: seconds)
    }

    func kill() {
        if status == nil {
            Glibc.kill(pid, SIGKILL)
            status = reap(block: true)
        }
    }

    deinit { kill() }
}

/// python3 -c CODE as a SpawnedCLI.
func spawnPython(_ code: String) throws -> SpawnedCLI {
    try SpawnedCLI("/usr/bin/python3", ["-c", code])
}

/// A raw client of the handoff socket.
final class UnixPeer {
    let fd: Int32

    init(_ name: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(name.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
            if bytes.first == UInt8(ascii: "@") { p[0] = 0 }
        }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, len) } }
        guard rc == 0 else { throw ClientError.system("connect \(name)", errno) }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ text: String) {
        var b = Array(text.utf8)
        _ = b.withUnsafeMutableBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    func readAll() -> String {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 256)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    deinit { close(fd) }
}

/// Keep-alive clients that count every answer: a connection answered with
/// `Connection: close` is replaced; a refused connect, or a connection closed
/// or reset before its answer, is an error.
final class Load: @unchecked Sendable {
    let port: Int
    let clients: Int
    let ok = Atomic<Int>(0)
    let non2xx = Atomic<Int>(0)
    let errors = Atomic<Int>(0)
    let firstError = Mutex<String>("")
    private let stopping = Atomic<Bool>(false)
    private let running = Atomic<Int>(0)

    init(port: Int, clients: Int) {
        self.port = port
        self.clients = clients
    }

    func start() {
        for _ in 0..<clients {
            running.add(1, ordering: .relaxed)
            Thread { [self] in
                run()
                running.subtract(1, ordering: .releasing)
            }.start()
        }
    }

    private func fail(_ text: String) {
        errors.add(1, ordering: .relaxed)
        firstError.withLock { if $0.isEmpty { $0 = text } }
    }

    private func run() {
        var socket: TestSocket? = nil
        while !stopping.load(ordering: .relaxed) {
            do {
                if socket == nil { socket = try TestSocket(port: port) }
                try socket!.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                let r = try socket!.readResponse()
                if (200..<300).contains(r.status) { ok.add(1, ordering: .relaxed) } else { non2xx.add(1, ordering: .relaxed) }
                if r.header("Connection") == "close" {
                    socket!.close()
                    socket = nil
                }
            } catch {
                fail("\(error)")
                socket = nil
            }
        }
        socket?.close()
    }

    /// Waits until `count` answers were counted (bounded).
    func waitForAnswers(_ count: Int, seconds: Double) -> Bool {
        let end = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < end {
            if ok.load(ordering: .relaxed) >= count { return true }
            usleep(5_000)
        }
        return false
    }

    /// Stops the clients and waits for them (each finishes its request).
    func stop() {
        stopping.store(true, ordering: .relaxed)
        let end = ContinuousClock.now + .seconds(20)
        while running.load(ordering: .acquiring) > 0 && ContinuousClock.now < end { usleep(5_000) }
    }
}

extension [UInt8] {
    var text: String { String(decoding: self, as: UTF8.self) }
}

final class DoneFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .releasing) }
    var isSet: Bool { flag.load(ordering: .acquiring) }
}
