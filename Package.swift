// swift-tools-version:6.0
// Peregrine: HTTP/1.1 and raw-TCP server library with a C hot path.
// The root package depends on no server stack; bench/ is its own package.
import PackageDescription

let package = Package(
    name: "Peregrine",
    products: [
        .library(name: "Peregrine", targets: ["Peregrine"]),
        .library(name: "PeregrineCore", targets: ["PeregrineCore"]),
        // The pure-Swift engine on its own (no C target of ours).
        .library(name: "PeregrineSwiftEpoll", targets: ["PeregrineSwiftEpoll"]),
        // The C core on its own: for C-level users and bench/swift's parser micro-benchmarks.
        .library(name: "CPeregrine", targets: ["CPeregrine"]),
        .executable(name: "peregrine", targets: ["peregrine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // The server ecosystem's interfaces (none pulls in swift-nio): a Logger in
        // Configuration, swift-metrics counters, Server as a lifecycle Service.
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // HTTPRequest / HTTPResponse / HTTPFields for async handlers.
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // The CLI's --metrics-port only.
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // The hot path: accept, recv/send, readiness loop, HTTP/1.1 parser.
        // libev ships no pkg-config file on Debian: link it by name.
        .target(name: "CPeregrine", path: "csrc", linkerSettings: [.linkedLibrary("ev")]),
        // Types every engine shares: request view, response writer, apps.
        .target(name: "PeregrineCore", dependencies: [
            .product(name: "Logging", package: "swift-log"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        // <sys/epoll.h> and <sys/eventfd.h> for Swift: a module map, no C code.
        .systemLibrary(name: "CSystemEpoll", path: "Sources/CSystemEpoll"),
        // The pure-Swift engine: epoll from Swift, its own HTTP/1.1 parser.
        .target(name: "PeregrineSwiftEpoll", dependencies: [
            "PeregrineCore", "CSystemEpoll", .product(name: "Logging", package: "swift-log"),
        ]),
        // The Swift API: one Server over every engine.
        .target(name: "Peregrine", dependencies: [
            "CPeregrine", "PeregrineCore", "PeregrineSwiftEpoll",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
        ]),
        .executableTarget(
            name: "peregrine",
            dependencies: [
                "Peregrine", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .testTarget(name: "PeregrineTests", dependencies: [
            "Peregrine", "CPeregrine", "PeregrineSwiftEpoll",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "MetricsTestKit", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // Interposes malloc in the test executable to count hot-path allocations.
        .target(name: "CTestSupport", path: "Tests/CTestSupport"),
        .testTarget(name: "PeregrineAllocTests", dependencies: [
            "Peregrine", "CTestSupport", .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        // One table of raw requests run through the C and the Swift parser.
        .testTarget(name: "ParserConformanceTests", dependencies: ["CPeregrine", "PeregrineSwiftEpoll"]),
    ],
    swiftLanguageModes: [.v6]
)
