import ArgumentParser
import Logging
import CoreMetrics
import Peregrine
import Prometheus
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

    @Flag(help: "Access log on stdout, one line per request: client address, method, target, status, duration (ms).")
    var log = false

    @Option(help: "Serve Prometheus metrics (text format) at /metrics on this port of --host, on a listener of its own (0 = ephemeral, printed at start). Off when not given.")
    var metricsPort: Int? = nil

    @Option(help: "--app static: the directory whose files are served (required for that app).")
    var root: String? = nil

    @Flag(help: "Every connection starts with a PROXY protocol header (v1 or v2) giving the client's address; missing or malformed: closed without an answer.")
    var proxyProtocol = false

    @Option(help: "--app sleep: milliseconds each request sleeps on the offload pool (?ms=N overrides).")
    var sleepMs = 100

    @Option(help: "Offloaded apps (sleep): worker threads of the offload pool.")
    var offloadThreads = Configuration().offloadThreads

    @Option(help: "Offloaded apps: requests waiting for a worker at most; beyond, 503.")
    var offloadQueue = Configuration().offloadQueue

    @Option(help: "Offloaded and async apps (every engine): seconds an answer may take; beyond, 503 and the late answer is dropped (0 = off).")
    var handlerTimeout = Configuration().handlerTimeout

    @Option(help: "Async apps: handler tasks running at most; beyond, 503 + Retry-After at once.")
    var asyncLimit = Configuration().asyncLimit

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

    @Option(help: ArgumentHelp(
        "Unix socket (@name: abstract; else a path) for restarts that drop nothing: a new `peregrine serve` takes the running one's listening sockets there, then offers its own ('none': off).",
        discussion: "Default: @peregrine-HOST:PORT; off with --port 0, under socket activation and for the blocking and threaded engines.",
        valueName: "name"))
    var handoffSocket: String?

    @Option(help: "Seconds an old server, after a handoff, keeps an idle keep-alive connection for its next request (answered with Connection: close) before closing it.")
    var handoffIdleGrace: Double = 2

    /// The rules of every field are the library's (`Configuration.validate()`,
    /// one place for every engine); this prints its message with the flag's name.
    func validate() throws {
        guard sleepMs >= 0 else { throw ValidationError("invalid --sleep-ms \(sleepMs): allowed 0 or more") }
        do {
            _ = try app.application(sleepMilliseconds: sleepMs, root: root)   // --root: required for static, checked
        } catch {
            throw ValidationError(error.description)
        }
        do {
            try configuration().validate()
        } catch {
            // The deadline as the user wrote it (seconds), not as the Duration it became.
            let shown = switch error.field {
            case .shutdownDeadline: ConfigurationError(field: error.field, value: "\(shutdownTimeout) s", allowed: error.allowed)
            case .handoffIdleGrace: ConfigurationError(field: error.field, value: "\(handoffIdleGrace) s", allowed: error.allowed)
            default: error
            }
            throw ValidationError(shown.message(naming: Self.flag(for: error.field)))
        }
    }

    /// The flag that sets each validated field.
    static func flag(for field: ConfigurationField) -> String {
        switch field {
        case .port: "--port"
        case .threads: "--threads"
        case .backlog: "--backlog"
        case .trigger: "--trigger"
        case .maxThreads: "--max-threads"
        case .maxRequestLine: "--max-request-line"
        case .maxHeaderBytes: "--max-header-bytes"
        case .maxHeaders: "--max-headers"
        case .maxBody: "--max-body"
        case .maxStreamedBody: "--max-streamed-body"
        case .maxOutputPerConnection: "maxOutputPerConnection"   // no flag: the library default
        case .headerTimeout: "--header-timeout"
        case .idleTimeout: "--idle-timeout"
        case .serverName: "serverName"                           // no flag: the library default
        case .shutdownDeadline: "--shutdown-timeout"
        case .offloadThreads: "--offload-threads"
        case .offloadQueue: "--offload-queue"
        case .handlerTimeout: "--handler-timeout"
        case .asyncLimit: "--async-limit"
        case .listenDescriptors: "LISTEN_FDS"                    // socket activation
        case .handoffSocket: "--handoff-socket"
        case .handoffIdleGrace: "--handoff-idle-grace"
        }
    }

    /// `--handoff-socket`, its default, or nil (off).
    func handoffName(socketActivated: Bool) -> String? {
        if let handoffSocket { return handoffSocket == "none" ? nil : handoffSocket }
        // A port picked by the kernel is not "the same port" next time; under
        // socket activation systemd keeps the sockets across restarts; the
        // blocking engines cannot share a listener (README, Operations).
        if port == 0 || socketActivated || engine == .blocking || engine == .threaded { return nil }
        return "@peregrine-\(host):\(port)"
    }

    func configuration(listenDescriptors: [Int32] = []) -> Configuration {
        var config = Configuration()
        config.listenDescriptors = listenDescriptors
        config.handoffSocket = handoffName(socketActivated: !listenDescriptors.isEmpty)
        config.handoffIdleGrace = Self.duration(seconds: handoffIdleGrace)
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
        config.logger = Logger(label: "peregrine") { _ in CLILogHandler() }
        config.proxyProtocol = proxyProtocol
        config.offloadThreads = offloadThreads
        config.offloadQueue = offloadQueue
        config.handlerTimeout = handlerTimeout
        config.asyncLimit = asyncLimit
        config.headerTimeout = headerTimeout
        config.idleTimeout = idleTimeout
        config.shutdownDeadline = Self.duration(seconds: shutdownTimeout)
        config.limits.maxRequestLine = maxRequestLine
        config.limits.maxHeaderBytes = maxHeaderBytes
        config.limits.maxHeaders = maxHeaders
        config.limits.maxBody = maxBody
        config.maxStreamedBody = maxStreamedBody
        return config
    }

    /// Seconds as a Duration, without trapping for any Double: beyond ±10^15 s
    /// (NaN counts as beyond) the value is clamped there, far outside what
    /// the validation allows, so it is refused with its flag's name.
    static func duration(seconds: Double) -> Duration {
        let limit = 1e15
        let clamped = seconds.isNaN ? limit : min(max(seconds, -limit), limit)
        return .milliseconds(Int64((clamped * 1000).rounded()))
    }

    func run() throws {
        // Socket activation (LISTEN_FDS/LISTEN_PID): serve what systemd passed.
        let inherited: [Int32]
        do {
            inherited = try SocketActivation.listenDescriptors(unsetEnvironment: true)
        } catch {
            throw ValidationError(error.description)
        }
        let config = configuration(listenDescriptors: inherited)
        do {
            try config.validate()
        } catch {
            throw ValidationError(error.message(naming: Self.flag(for: error.field)))
        }
        let application: Application
        do {
            application = try app.application(sleepMilliseconds: sleepMs, root: root)
        } catch {
            throw ValidationError(error.description)
        }
        // Before the server exists: it decides at creation whether metrics are on.
        let metricsServer = try metricsPort.map { try startMetricsServer(port: $0, logger: config.logger) }
        defer { metricsServer?.stop() }
        let server = Server(configuration: config, application: application)
        try server.run { server in
            // Scripts wait for this line: it carries the real port.
            let line = "serving \(app.rawValue) on \(host):\(server.port) engine=\(engineDescription) "
                + "trigger=\(trigger.rawValue) threads=\(threads) nodelay=\(nodelay) cork=\(cork) "
                + "backlog=\(backlog) effective-backlog=\(server.effectiveBacklog)"
            config.logger.info("\(line)")
        }
    }

    /// `--metrics-port`: swift-prometheus bootstrapped as the swift-metrics
    /// backend, its registry served at `/metrics` by a Peregrine server of
    /// its own (one epoll loop) on `host:port`.
    private func startMetricsServer(port: Int, logger: Logger) throws -> Server {
        guard (0...65535).contains(port) else {
            throw ValidationError("--metrics-port: \(port) is not a port (0...65535)")
        }
        let factory = PrometheusMetricsFactory()
        MetricsSystem.bootstrap(factory)
        let registry = factory.registry
        var config = Configuration()
        config.host = host
        config.port = port
        config.logger = logger
        config.metricsFactory = NOOPMetricsHandler.instance   // the scrapes are not counted
        let server = Server(configuration: config, application: .http { request, response in
            guard request.targetString == "/metrics" || request.targetString.hasPrefix("/metrics?") else {
                response.send(status: 404, body: "Not Found: metrics are at /metrics\n")
                return
            }
            let text = registry.emitToBuffer()
            response.begin(status: 200)
            response.header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            response.header("Content-Length", String(text.count))
            text.withUnsafeBytes { _ = response.write($0) }
            response.end()
        })
        try server.start()
        logger.info("metrics at http://\(host):\(server.port)/metrics")
        return server
    }

    private var engineDescription: String {
        switch engine {
        case .libev: "libev/\(libevBackend.rawValue)"
        case .threaded: "threaded max-threads=\(maxThreads)"
        default: engine.rawValue
        }
    }
}
