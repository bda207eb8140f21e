// The benchmark's Hummingbird contender: the hello router of hb-peregrine-hello
// (Sources/HelloShared) on Hummingbird's own SwiftNIO server.
//
//   hb-nio-hello PORT [--host 127.0.0.1] [--threads 1]
import HelloShared
import Hummingbird
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

let arguments = HelloArguments.parse(CommandLine.arguments, program: "hb-nio-hello")
if arguments.engine != "epoll" || arguments.trigger != "level" {
    print("hb-nio-hello: --engine and --trigger are Peregrine's (this is SwiftNIO's server)")
    exit(2)
}
let group = MultiThreadedEventLoopGroup(numberOfThreads: arguments.threads)
let app = Application(
    router: makeHelloRouter(context: BasicRequestContext.self),
    configuration: .init(address: .hostname(arguments.host, port: arguments.port), serverName: nil),
    eventLoopGroupProvider: .shared(group)
)
try await app.runService()
try await group.shutdownGracefully()
