// The one set of rules for `Configuration`: `Server.start()` checks them for
// every engine, the Swift engine checks them again when used on its own, and
// the CLI prints their message with its flag's name. The C core still refuses
// what would break it (-EINVAL from prg_server_create) as a second line of
// defence, but the rules a user reads are these.

/// A field of `Configuration` that `validate()` checks, named as in Swift.
public enum ConfigurationField: String, Sendable, CaseIterable {
    case port
    case threads
    case backlog
    case trigger
    case maxThreads
    case maxRequestLine = "limits.maxRequestLine"
    case maxHeaderBytes = "limits.maxHeaderBytes"
    case maxHeaders = "limits.maxHeaders"
    case maxBody = "limits.maxBody"
    case maxStreamedBody
    case maxOutputPerConnection
    case headerTimeout
    case idleTimeout
    case serverName
    case shutdownDeadline
    case offloadThreads
    case offloadQueue
    case handlerTimeout
    case asyncLimit
    case listenDescriptors
    case handoffSocket
    case handoffIdleGrace
}

/// A configuration value no engine accepts: the field, the value, and what
/// is allowed instead.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable, Equatable {
    public let field: ConfigurationField
    /// The refused value, as text.
    public let value: String
    /// The allowed values, e.g. `0...65535`.
    public let allowed: String

    public init(field: ConfigurationField, value: String, allowed: String) {
        self.field = field
        self.value = value
        self.allowed = allowed
    }

    /// `invalid port 70000: allowed 0...65535`
    public var description: String { message(naming: field.rawValue) }

    /// The same message with the field named as the caller's user knows it
    /// (the CLI: its flag).
    public func message(naming name: String) -> String {
        "invalid \(name) \(value): allowed \(allowed)"
    }
}

extension Configuration {
    /// The allowed range of each numeric field.
    public enum Bounds {
        public static let port = 0...65535
        public static let threads = 1...1024
        /// listen()'s int; the kernel then clamps it to net.core.somaxconn.
        public static let backlog = 1...Int(Int32.max)
        /// Threaded engine: one thread (and stack) per connection.
        public static let maxThreads = 1...65_536
        // The limits bound one request held in a connection's receive buffer,
        // whose length is 32-bit: 2 × maxHeaderBytes + maxBody +
        // maxRequestLine must stay within UInt32.max / 4 (csrc/server.c), and
        // these caps keep it there (545 MiB at most).
        public static let maxRequestLine = 1...(1 << 20)
        public static let maxHeaderBytes = 1...(16 << 20)
        /// Each loop allocates a table of this many header records.
        public static let maxHeaders = 1...65_536
        public static let maxBody = 0...(512 << 20)
        /// A streamed body is never held whole: any size the client may send.
        public static let maxStreamedBody = 0...Int.max
        public static let maxOutputPerConnection = 0...(1 << 30)
        /// headerTimeout, idleTimeout and handlerTimeout, in seconds (0 = off).
        public static let timeoutSeconds = 0...86_400
        public static let shutdownDeadline = Duration.zero ... .seconds(86_400)
        public static let offloadThreads = 1...1024
        public static let offloadQueue = 0...(1 << 20)
        /// `.async` handler tasks in flight.
        public static let asyncLimit = 1...(1 << 20)
        /// Bytes of `serverName`: "Server: " + name + CRLF fits the engines'
        /// 128-byte line.
        public static let serverNameBytes = 1...117
        /// Bytes of `handoffSocket`: a Unix socket's sun_path, NUL excluded.
        public static let handoffSocketBytes = 1...107
        public static let handoffIdleGrace = Duration.zero ... .seconds(86_400)
    }

    /// Throws the first rule this configuration breaks; returns when every
    /// engine-independent range and the rules of `engine` hold.
    public func validate() throws(ConfigurationError) {
        try Self.check(.port, port, Bounds.port)
        try Self.check(.threads, threads, Bounds.threads)
        try Self.check(.backlog, backlog, Bounds.backlog)
        try Self.check(.maxThreads, maxThreads, Bounds.maxThreads)
        try Self.check(.maxRequestLine, limits.maxRequestLine, Bounds.maxRequestLine)
        try Self.check(.maxHeaderBytes, limits.maxHeaderBytes, Bounds.maxHeaderBytes)
        try Self.check(.maxHeaders, limits.maxHeaders, Bounds.maxHeaders)
        try Self.check(.maxBody, limits.maxBody, Bounds.maxBody)
        try Self.check(.maxStreamedBody, maxStreamedBody, Bounds.maxStreamedBody)
        try Self.check(.maxOutputPerConnection, maxOutputPerConnection, Bounds.maxOutputPerConnection)
        try Self.check(.headerTimeout, headerTimeout, Bounds.timeoutSeconds, unit: " (seconds; 0 = off)")
        try Self.check(.idleTimeout, idleTimeout, Bounds.timeoutSeconds, unit: " (seconds; 0 = off)")
        if !Bounds.shutdownDeadline.contains(shutdownDeadline) {
            throw ConfigurationError(
                field: .shutdownDeadline, value: "\(Self.seconds(shutdownDeadline)) s",
                allowed: "\(Self.seconds(Bounds.shutdownDeadline.lowerBound))...\(Self.seconds(Bounds.shutdownDeadline.upperBound)) s")
        }
        try Self.check(.offloadThreads, offloadThreads, Bounds.offloadThreads)
        try Self.check(.offloadQueue, offloadQueue, Bounds.offloadQueue)
        try Self.check(.handlerTimeout, handlerTimeout, Bounds.timeoutSeconds, unit: " (seconds; 0 = off)")
        try Self.check(.asyncLimit, asyncLimit, Bounds.asyncLimit)
        let name = Array(serverName.utf8)
        // It goes into every response head: no CR, LF, NUL or other control byte.
        if !Bounds.serverNameBytes.contains(name.count) || name.contains(where: { $0 < 0x20 || $0 == 0x7F }) {
            throw ConfigurationError(
                field: .serverName, value: "\(String(reflecting: String(serverName.prefix(40)))) (\(name.count) bytes)",
                allowed: "\(Bounds.serverNameBytes.lowerBound)...\(Bounds.serverNameBytes.upperBound) bytes without control characters")
        }
        try validateInheritedListeners()
        try validateEngineRules()
    }

    /// Listening sockets from elsewhere: socket activation, the handoff.
    private func validateInheritedListeners() throws(ConfigurationError) {
        if listenDescriptors.contains(where: { $0 < 0 }) {
            throw ConfigurationError(field: .listenDescriptors, value: "\(listenDescriptors)", allowed: "descriptors (0 or more)")
        }
        if listenDescriptors.count > threads {
            // Every socket needs a loop accepting from it.
            throw ConfigurationError(field: .threads, value: String(threads),
                                     allowed: "\(listenDescriptors.count) or more with \(listenDescriptors.count) inherited listeners (a loop each)")
        }
        if let name = handoffSocket {
            let bytes = Array(name.utf8)
            if !Bounds.handoffSocketBytes.contains(bytes.count) || bytes == [UInt8(ascii: "@")] || bytes.contains(0) {
                throw ConfigurationError(field: .handoffSocket, value: String(reflecting: String(name.prefix(40))),
                                         allowed: "a path or @name of \(Bounds.handoffSocketBytes) bytes without NUL")
            }
        }
        if !Bounds.handoffIdleGrace.contains(handoffIdleGrace) {
            throw ConfigurationError(
                field: .handoffIdleGrace, value: "\(Self.seconds(handoffIdleGrace)) s",
                allowed: "\(Self.seconds(Bounds.handoffIdleGrace.lowerBound))...\(Self.seconds(Bounds.handoffIdleGrace.upperBound)) s")
        }
    }

    /// What only some engines allow.
    private func validateEngineRules() throws(ConfigurationError) {
        let triggers: [Trigger] = switch engine {
        case .epoll: Trigger.allCases
        case .swift: [.level, .edge]
        case .libev, .blocking, .threaded: [.level]
        }
        if !triggers.contains(trigger) {
            throw ConfigurationError(field: .trigger, value: trigger.rawValue,
                                     allowed: "\(triggers.map(\.rawValue).joined(separator: ", ")) with the \(engine.rawValue) engine")
        }
        if (engine == .blocking || engine == .threaded) && threads != 1 {
            throw ConfigurationError(field: .threads, value: String(threads),
                                     allowed: "1 with the \(engine.rawValue) engine (one accepting thread)")
        }
        if (engine == .blocking || engine == .threaded) && (!listenDescriptors.isEmpty || handoffSocket != nil) {
            // Their wake-up shuts the listener down, which would stop it for
            // every process sharing it.
            let inherited = !listenDescriptors.isEmpty
            throw ConfigurationError(field: inherited ? .listenDescriptors : .handoffSocket,
                                     value: inherited ? "\(listenDescriptors)" : String(reflecting: handoffSocket!),
                                     allowed: "only with an event engine (epoll, libev, swift), not \(engine.rawValue)")
        }
    }

    private static func check(_ field: ConfigurationField, _ value: Int, _ range: ClosedRange<Int>,
                              unit: String = "") throws(ConfigurationError) {
        if !range.contains(value) {
            throw ConfigurationError(field: field, value: String(value),
                                     allowed: "\(range.lowerBound)...\(range.upperBound)\(unit)")
        }
    }

    /// A duration in seconds: `10`, `0.25`, `-1`.
    static func seconds(_ d: Duration) -> String {
        let (whole, attoseconds) = d.components
        if attoseconds == 0 { return "\(whole)" }
        return "\(Double(whole) + Double(attoseconds) / 1e18)"
    }
}
