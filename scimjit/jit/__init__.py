"""The JIT engine: applications, OIDC login, the account ledger, the outbox and its worker, connectors.

Entry points for the layers above: `engine.get_engine(services)` (lazily builds the `JitEngine` attached to
`Services.jit`), `scimjit.http.jit_routes.routes`, `commands.register(subparsers)` and
`worker.start_background_worker(engine)` for `scimjit serve`.
"""
