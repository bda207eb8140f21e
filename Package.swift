// swift-tools-version:6.0
// Peregrine: HTTP/1.1 and raw-TCP server library with a C hot path.
// The root package depends on no server stack; bench/ is its own package.
import PackageDescription

let package = Package(
    name: "Peregrine",
    products: [
        .library(name: "Peregrine", targets: ["Peregrine"]),
        .library(name: "PeregrineCore", targets: ["PeregrineCore"]),
        // The C core on its own: for C-level users and bench/swift's parser micro-benchmarks.
        .library(name: "CPeregrine", targets: ["CPeregrine"]),
        .executable(name: "peregrine", targets: ["peregrine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // The hot path: accept, recv/send, readiness loop, HTTP/1.1 parser.
        // libev ships no pkg-config file on Debian: link it by name.
        .target(name: "CPeregrine", path: "csrc", linkerSettings: [.linkedLibrary("ev")]),
        // Types every engine shares: request view, response writer, apps.
        .target(name: "PeregrineCore"),
        // The Swift API over the C core.
        .target(name: "Peregrine", dependencies: ["CPeregrine", "PeregrineCore"]),
        .executableTarget(
            name: "peregrine",
            dependencies: ["Peregrine", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(name: "PeregrineTests", dependencies: ["Peregrine", "CPeregrine"]),
        // Interposes malloc in the test executable to count hot-path allocations.
        .target(name: "CTestSupport", path: "Tests/CTestSupport"),
        .testTarget(name: "PeregrineAllocTests", dependencies: ["Peregrine", "CTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
