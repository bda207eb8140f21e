// The CLI's swift-log handler: what scripts read stays plain lines.
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Access-log events (`event: access`, from `--log`) go to stdout as their
/// message alone, `ADDR METHOD TARGET STATUS BYTES DURATIONms`, one line each (the
/// first token the client's address: scripts/cluster_test.py and
/// ProxyProtocolTests parse it). Everything else goes to stderr as
/// `peregrine: MESSAGE`, with `LEVEL: ` before it from warning up.
struct CLILogHandler: LogHandler {
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider? = nil
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        if case .string("access") = event.metadata?["event"] {
            write(STDOUT_FILENO, "\(event.message)\n")
            return
        }
        let level = event.level >= .warning ? "\(event.level): " : ""
        write(STDERR_FILENO, "peregrine: \(level)\(event.message)\n")
    }

    /// One write(2) per line: lines from several threads do not interleave.
    private func write(_ fd: Int32, _ line: String) {
        var bytes = Array(line.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    }
}
