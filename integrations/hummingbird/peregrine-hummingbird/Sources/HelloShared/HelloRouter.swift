// The hello router both benchmark servers run (hb-peregrine-hello on Peregrine,
// hb-nio-hello on Hummingbird's NIO server): `Hello, World!` to GET on any path.
import Hummingbird
#if canImport(Glibc)
import Glibc
#endif

/// `Hello, World!` to GET on `/` and on any other path (`**` does not match `/`).
public func makeHelloRouter<Context: RequestContext>(context: Context.Type = Context.self) -> Router<Context> {
    let router = Router(context: Context.self)
    router.get("/") { _, _ in "Hello, World!" }
    router.get("**") { _, _ in "Hello, World!" }
    return router
}

/// `PROGRAM PORT [--host H] [--threads N] [--engine E] [--trigger T]` (engine and
/// trigger: Peregrine's; hb-nio-hello refuses them); exits 2 with a usage line on anything else.
public struct HelloArguments: Sendable {
    public var port = 0
    public var host = "127.0.0.1"
    public var threads = 1
    public var engine = "epoll"
    public var trigger = "level"

    public static func parse(_ argv: [String], program: String) -> HelloArguments {
        var a = HelloArguments()
        var port: Int?
        var i = 1
        func usage(_ why: String) -> Never {
            let text = "\(program): \(why)\nusage: \(program) PORT [--host H] [--threads N] [--engine epoll|libev|swift|blocking|threaded] [--trigger level|edge|oneshot]\n"
            _ = text.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
            exit(2)
        }
        func value() -> String {
            i += 1
            guard i < argv.count else { usage("\(argv[i - 1]) needs a value") }
            return argv[i]
        }
        while i < argv.count {
            switch argv[i] {
            case "--host": a.host = value()
            case "--threads":
                guard let n = Int(value()), n >= 1 else { usage("--threads takes a number >= 1") }
                a.threads = n
            case "--engine":
                a.engine = value()
                guard ["epoll", "libev", "swift", "blocking", "threaded"].contains(a.engine) else { usage("unknown engine \(a.engine)") }
            case "--trigger":
                a.trigger = value()
                guard ["level", "edge", "oneshot"].contains(a.trigger) else { usage("unknown trigger \(a.trigger)") }
            case let s where port == nil:
                guard let p = Int(s), (0...65535).contains(p) else { usage("bad port \(s)") }
                port = p
            case let s: usage("unexpected argument \(s)")
            }
            i += 1
        }
        guard let port else { usage("PORT is required") }
        a.port = port
        return a
    }
}
