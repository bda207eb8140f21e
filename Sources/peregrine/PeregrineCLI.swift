import ArgumentParser
import Peregrine
#if canImport(Glibc)
import Glibc
#endif

@main
struct PeregrineCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peregrine",
        abstract: "Peregrine: an HTTP/1.1 and raw-TCP server with a C hot path.",
        subcommands: [Serve.self],
        defaultSubcommand: Serve.self)
}

extension Trigger: ExpressibleByArgument {}
extension Engine: ExpressibleByArgument {}
extension LibevBackend: ExpressibleByArgument {}
extension BuiltinApp: ExpressibleByArgument {}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a built-in application until SIGINT or SIGTERM.")

    @Option(help: "Application: \(BuiltinApp.allCases.map(\.rawValue).joined(separator: ", ")).")
    var app: BuiltinApp = .hello

    @Option(help: "Engine: \(Engine.allCases.map(\.rawValue).joined(separator: ", ")).")
    var engine: Engine = .epoll

    @Option(help: "Trigger mode: level, edge, oneshot (epoll engine); level, edge (swift engine).")
    var trigger: Trigger = .level

    @Option(help: "libev engine: libev's backend: \(LibevBackend.allCases.map(\.rawValue).joined(separator: ", ")).")
    var libevBackend: LibevBackend = .epoll

    @Option(help: "threaded engine: most connection threads; beyond, 503 and close.")
    var maxThreads = Configuration().maxThreads

    @Option(help: "Address to bind (IPv4 or IPv6).")
    var host = "0.0.0.0"

    @Option(help: "Port (0 = ephemeral, printed at start).")
    var port = 8080

    @Option(help: "Event loops, one thread each, each with its own SO_REUSEPORT listener.")
    var threads = 1

    @Option(help: "listen() backlog (clamped by net.core.somaxconn).")
    var backlog = 1024

    @Flag(inversion: .prefixedNo, help: "TCP_NODELAY on accepted sockets.")
    var nodelay = true

    @Flag(help: "TCP_CORK around each batch of responses.")
    var cork = false

    @Flag(help: "Print one line per request: method, target, status.")
    var log = false

    @Option(help: "--app sleep: milliseconds each request sleeps on the offload pool (?ms=N overrides).")
    var sleepMs = 100

    @Option(help: "Offloaded apps (sleep): worker threads of the offload pool.")
    var offloadThreads = Configuration().offloadThreads

    @Option(help: "Offloaded apps: requests waiting for a worker at most; beyond, 503.")
    var offloadQueue = Configuration().offloadQueue

    @Option(help: "Seconds for a request head to arrive from its first byte (408 beyond; 0 = off).")
    var headerTimeout = Configuration().headerTimeout
    @Option(help: "Seconds an idle keep-alive connection stays open (0 = off).")
    var idleTimeout = Configuration().idleTimeout

    @Option(help: "Seconds SIGINT/SIGTERM lets requests in flight finish before closing the rest (a second signal stops at once).")
    var shutdownTimeout: Double = 10

    @Option(help: "Largest request line in bytes (414 beyond).")
    var maxRequestLine = Limits().maxRequestLine
    @Option(help: "Largest header section in bytes (431 beyond).")
    var maxHeaderBytes = Limits().maxHeaderBytes
    @Option(help: "Most header fields (431 beyond).")
    var maxHeaders = Limits().maxHeaders
    @Option(help: "Largest request body in bytes (413 beyond).")
    var maxBody = Limits().maxBody
    @Option(help: "Largest streamed request body in bytes (--app upload; 413 beyond).")
    var maxStreamedBody = Configuration().maxStreamedBody

    private func basicValidate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0...65535") }
        guard (1...1024).contains(threads) else { throw ValidationError("--threads must be 1...1024") }
        guard sleepMs >= 0 else { throw ValidationError("--sleep-ms must be >= 0") }
        guard backlog >= 1 else { throw ValidationError("--backlog must be at least 1") }
        guard headerTimeout >= 0, idleTimeout >= 0, shutdownTimeout >= 0, shutdownTimeout <= 86_400 else { throw ValidationError("timeouts must be >= 0") }
        guard maxRequestLine > 0, maxHeaderBytes > 0, maxHeaders > 0, maxBody >= 0, maxStreamedBody >= 0 else {
            throw ValidationError("limits must be positive")
        }
    }

    func validate() throws {
        try basicValidate()
        if let problem = configuration().problem { throw ValidationError(problem) }
    }

    func configuration() -> Configuration {
        var config = Configuration()
        config.libevBackend = libevBackend
        config.maxThreads = maxThreads
        config.host = host
        config.port = port
        config.threads = threads
        config.backlog = backlog
        config.engine = engine
        config.trigger = trigger
        config.noDelay = nodelay
        config.cork = cork
        config.logRequests = log
        config.offloadThreads = offloadThreads
        config.offloadQueue = offloadQueue
        config.headerTimeout = headerTimeout
        config.idleTimeout = idleTimeout
        config.shutdownDeadline = .milliseconds(Int64(shutdownTimeout * 1000))
        config.limits.maxRequestLine = maxRequestLine
        config.limits.maxHeaderBytes = maxHeaderBytes
        config.limits.maxHeaders = maxHeaders
        config.limits.maxBody = maxBody
        config.maxStreamedBody = maxStreamedBody
        return config
    }

    func run() throws {
        let server = Server(configuration: configuration(), application: app.application(sleepMilliseconds: sleepMs))
        try server.run { server in
            // Scripts wait for this line: it carries the real port.
            let line = "peregrine: serving \(app.rawValue) on \(host):\(server.port) engine=\(engineDescription) "
                + "trigger=\(trigger.rawValue) threads=\(threads) nodelay=\(nodelay) cork=\(cork) "
                + "backlog=\(backlog) effective-backlog=\(server.effectiveBacklog)\n"
            var bytes = Array(line.utf8)
            _ = bytes.withUnsafeMutableBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        }
    }

    private var engineDescription: String {
        switch engine {
        case .libev: "libev/\(libevBackend.rawValue)"
        case .threaded: "threaded max-threads=\(maxThreads)"
        default: engine.rawValue
        }
    }
}
