// swift-tools-version:6.1
// Peregrine's Swift benchmarks: a package of its own so the root package never
// depends on SwiftNIO or package-benchmark. This package depends on the root.
//
//   swift build -c release --package-path bench/swift --product nio-hello
//   cd bench/swift && swift package benchmark --target ParserBenchmarks
import PackageDescription

let package = Package(
    name: "PeregrineBench",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(name: "peregrine", path: "../.."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // SwiftNIO anchor of the side-by-side suite: HTTP/1.1 hello server.
        .executableTarget(
            name: "nio-hello",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Sources/nio-hello"
        ),
        // Parser micro-benchmarks (package-benchmark).
        .executableTarget(
            name: "ParserBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "CPeregrine", package: "peregrine"),
                .product(name: "PeregrineSwiftEpoll", package: "peregrine"),
            ],
            path: "Benchmarks/ParserBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
