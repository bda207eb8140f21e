// The benchmark's hb-peregrine contender: the hello router of hb-nio-hello
// (Sources/HelloShared) served by Peregrine through PeregrineHummingbird.
//
//   hb-peregrine-hello PORT [--host 127.0.0.1] [--threads 1] [--engine epoll] [--trigger level]
import HelloShared
import Hummingbird
import PeregrineHummingbird

let arguments = HelloArguments.parse(CommandLine.arguments, program: "hb-peregrine-hello")
var configuration = Configuration()
configuration.host = arguments.host
configuration.port = arguments.port
configuration.threads = arguments.threads
configuration.engine = Engine(rawValue: arguments.engine)!      // checked by HelloArguments
configuration.trigger = Trigger(rawValue: arguments.trigger)!
let server = HummingbirdServer(router: makeHelloRouter(context: PeregrineRequestContext.self), configuration: configuration)
try await server.runService()
