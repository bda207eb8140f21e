// swift-tools-version:6.0
// Hummingbird applications on Peregrine: an adapter that serves any Hummingbird
// HTTPResponder (a Router) through Peregrine's async API. A package of its own so
// the root package never depends on SwiftNIO or Hummingbird. Its directory is not
// named `hummingbird`: SwiftPM names a root package after its directory, and that
// name would collide with the hummingbird dependency's identity.
//
//   swift build -c release --package-path integrations/hummingbird/peregrine-hummingbird
//   make test-hummingbird
import PackageDescription

let package = Package(
    name: "PeregrineHummingbird",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "PeregrineHummingbird", targets: ["PeregrineHummingbird"]),
        .executable(name: "hb-peregrine-hello", targets: ["hb-peregrine-hello"]),
        .executable(name: "hb-nio-hello", targets: ["hb-nio-hello"]),
        .executable(name: "hb-peregrine-example", targets: ["hb-peregrine-example"]),
    ],
    dependencies: [
        .package(name: "Peregrine", path: "../../.."),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // The adapter: Hummingbird's application layer over Peregrine's engines.
        .target(name: "PeregrineHummingbird", dependencies: [
            .product(name: "Peregrine", package: "Peregrine"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ]),
        // Benchmarks: the same router on Peregrine and on Hummingbird's own NIO server.
        // The hello router and argument parsing both benchmark servers share.
        .target(name: "HelloShared", dependencies: [.product(name: "Hummingbird", package: "hummingbird")]),
        .executableTarget(name: "hb-peregrine-hello", dependencies: [
            "PeregrineHummingbird", "HelloShared", .product(name: "Hummingbird", package: "hummingbird"),
        ]),
        .executableTarget(name: "hb-nio-hello", dependencies: [
            "HelloShared", .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // The example: routes, parameters, Hummingbird's logging and metrics
        // middleware, Codable JSON (a library so the tests serve the same router).
        .target(name: "TodoExample", dependencies: [
            .product(name: "Hummingbird", package: "hummingbird"), .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "hb-peregrine-example", dependencies: [
            "PeregrineHummingbird", "TodoExample", .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        .testTarget(name: "PeregrineHummingbirdTests", dependencies: [
            "PeregrineHummingbird", "TodoExample", .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "InMemoryLogging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "MetricsTestKit", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
