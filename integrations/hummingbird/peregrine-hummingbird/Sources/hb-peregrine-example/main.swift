// A Hummingbird application on Peregrine (Sources/TodoExample): routes and
// parameters, LogRequestsMiddleware and MetricsMiddleware, Codable JSON. The
// metrics go to swift-prometheus, served at GET /metrics by the same router.
//
//   hb-peregrine-example [PORT]     (default 8080)
//   curl -s localhost:8080/todos -d '{"title":"try Peregrine"}'
//   curl -s localhost:8080/todos; curl -s localhost:8080/hello/you; curl -s localhost:8080/metrics
import Hummingbird
import Logging
import Metrics
import PeregrineHummingbird
import Prometheus
import TodoExample

let registry = PrometheusCollectorRegistry()
MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

let router = makeTodoRouter(context: PeregrineRequestContext.self, store: TodoStore())
router.get("/metrics") { _, _ in
    var text: [UInt8] = []
    registry.emit(into: &text)
    return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                    body: .init(byteBuffer: ByteBuffer(bytes: text)))
}

var configuration = Configuration()
configuration.host = "127.0.0.1"
configuration.port = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 8080 : 8080
try await HummingbirdServer(router: router, configuration: configuration).runService()
