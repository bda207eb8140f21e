// Server on the pure-Swift engine (PeregrineSwiftEpoll): the configuration
// mapped onto SwiftServerConfiguration, the same application handed over.
import PeregrineSwiftEpoll

extension Server {
    /// Builds and starts the Swift engine; `start()` keeps it and `stop()` ends it.
    func startSwiftEngine(application: Application) throws -> SwiftEpollServer {
        var c = SwiftServerConfiguration()
        c.host = configuration.host
        c.port = configuration.port
        c.threads = configuration.threads
        c.backlog = configuration.backlog
        c.trigger = configuration.trigger == .edge ? .edge : .level   // oneshot is refused by Configuration.problem
        c.noDelay = configuration.noDelay
        c.cork = configuration.cork
        c.limits = HTTP1Limits(maxRequestLine: configuration.limits.maxRequestLine,
                               maxHeaderBytes: configuration.limits.maxHeaderBytes,
                               maxHeaders: configuration.limits.maxHeaders,
                               maxBody: configuration.limits.maxBody)
        c.maxStreamedBody = configuration.maxStreamedBody
        c.maxOutputPerConnection = configuration.maxOutputPerConnection
        c.headerTimeout = configuration.headerTimeout
        c.idleTimeout = configuration.idleTimeout
        c.serverName = configuration.serverName
        c.offloadThreads = configuration.offloadThreads
        c.offloadQueue = configuration.offloadQueue
        var application = application
        if configuration.logRequests, case .http(let handler) = application {
            // Only when asked for: one line per request, after the handler
            // (a handler that did not answer is logged as the 500 it gets).
            application = .http { request, response in
                handler(request, response)
                logRequest(request, response)
            }
        } else if configuration.logRequests, case .streaming(let head, let handler) = application {
            application = .streaming(head: head, request: { request, response in   // the buffered ones
                handler(request, response)
                logRequest(request, response)
            })
        }
        let server = SwiftEpollServer(configuration: c, application: application)
        do {
            try server.start()
        } catch let error as SwiftEngineError {
            throw ServerError(operation: error.operation, code: error.code)
        }
        return server
    }
}
