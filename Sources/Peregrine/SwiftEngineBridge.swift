// Server on the pure-Swift engine (PeregrineSwiftEpoll): the same
// configuration and application handed over.
import PeregrineSwiftEpoll

extension Server {
    /// Builds and starts the Swift engine; `start()` keeps it and `stop()` ends it.
    /// `listeners`: inherited listening sockets (socket activation, a
    /// handoff) served instead of binding.
    func startSwiftEngine(application: Application, listeners: [Int32]) throws -> SwiftEpollServer {
        var configuration = self.configuration
        configuration.listenDescriptors = listeners
        var application = application
        if configuration.logRequests, case .http(let handler) = application {
            // Only when asked for: one line per request, after the handler
            // (a handler that did not answer is logged as the 500 it gets).
            let logger = configuration.logger
            application = .http { request, response in logAnswer(logger, request, response, handler) }
        } else if configuration.logRequests, case .streaming(let head, let handler) = application {
            let logger = configuration.logger
            application = .streaming(head: head, request: { request, response in   // the buffered ones
                logAnswer(logger, request, response, handler)
            })
        }
        let server = SwiftEpollServer(configuration: configuration, application: application)
        do {
            try server.start()
        } catch let error as SwiftEngineError {
            throw ServerError(operation: error.operation, code: error.code)
        }
        return server
    }
}
