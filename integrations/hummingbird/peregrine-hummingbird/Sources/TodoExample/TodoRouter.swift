// The example application (hb-peregrine-example): a Hummingbird router with
// routes and parameters, Hummingbird's own request-logging and metrics
// middleware, and Codable JSON in and out. Nothing in it knows it runs on
// Peregrine but the context type; the tests serve this same router.
import Hummingbird
import Logging
import Synchronization

public struct Todo: ResponseCodable, Equatable, Sendable {
    public var id: Int
    public var title: String
    public var done: Bool

    public init(id: Int, title: String, done: Bool) {
        self.id = id
        self.title = title
        self.done = done
    }
}

/// The body of `POST /todos` and `PATCH /todos/:id`.
public struct TodoInput: Decodable, Sendable {
    public var title: String?
    public var done: Bool?
}

/// The todos, in memory.
public final class TodoStore: Sendable {
    private let state = Mutex<(next: Int, todos: [Int: Todo])>((1, [:]))

    public init() {}

    public func all() -> [Todo] { state.withLock { $0.todos.values.sorted { $0.id < $1.id } } }
    public func get(_ id: Int) -> Todo? { state.withLock { $0.todos[id] } }

    public func add(title: String) -> Todo {
        state.withLock {
            let todo = Todo(id: $0.next, title: title, done: false)
            $0.next += 1
            $0.todos[todo.id] = todo
            return todo
        }
    }

    public func update(_ id: Int, _ input: TodoInput) -> Todo? {
        state.withLock {
            guard var todo = $0.todos[id] else { return nil }
            if let title = input.title { todo.title = title }
            if let done = input.done { todo.done = done }
            $0.todos[id] = todo
            return todo
        }
    }

    public func remove(_ id: Int) -> Bool { state.withLock { $0.todos.removeValue(forKey: id) != nil } }
}

/// The example's routes:
/// - `GET /hello/:name` → `Hello, NAME!`
/// - `GET /todos` → `[Todo]`; `POST /todos` `{"title": …}` → `201` `Todo`
/// - `GET /todos/:id`, `PATCH /todos/:id` `{"title"?, "done"?}`, `DELETE /todos/:id` (`404` when absent)
/// - `GET /files/**` → the path after `/files/` (a recursive wildcard)
public func makeTodoRouter<Context: RequestContext>(context: Context.Type, store: TodoStore,
                                                    logLevel: Logger.Level = .info) -> Router<Context> {
    let router = Router(context: Context.self)
    router.add(middleware: LogRequestsMiddleware(logLevel))
    router.add(middleware: MetricsMiddleware())

    router.get("/hello/:name") { _, context in
        "Hello, \(try context.parameters.require("name"))!"
    }
    router.get("/files/**") { _, context in
        context.parameters.getCatchAll().joined(separator: "/")
    }
    let todos = router.group("todos")
    todos.get { _, _ in store.all() }
    todos.post { request, context in
        let input = try await request.decode(as: TodoInput.self, context: context)
        guard let title = input.title, !title.isEmpty else { throw HTTPError(.badRequest, message: "title is required") }
        return EditedResponse(status: .created, response: store.add(title: title))
    }
    todos.get(":id") { _, context in
        let id = try context.parameters.require("id", as: Int.self)
        guard let todo = store.get(id) else { throw HTTPError(.notFound, message: "no todo \(id)") }
        return todo
    }
    todos.patch(":id") { request, context in
        let id = try context.parameters.require("id", as: Int.self)
        let input = try await request.decode(as: TodoInput.self, context: context)
        guard let todo = store.update(id, input) else { throw HTTPError(.notFound, message: "no todo \(id)") }
        return todo
    }
    todos.delete(":id") { _, context in
        let id = try context.parameters.require("id", as: Int.self)
        guard store.remove(id) else { throw HTTPError(.notFound, message: "no todo \(id)") }
        return HTTPResponse.Status.noContent
    }
    return router
}
