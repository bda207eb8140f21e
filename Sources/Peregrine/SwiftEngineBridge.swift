// Server on the pure-Swift engine (PeregrineSwiftEpoll). PLACEHOLDER until
// that engine lands (issue 4): starting it fails with a clear error.
extension Server {
    func startSwiftEngine() throws {
        throw ConfigurationError(description: "the swift engine is not built yet")
    }
}
