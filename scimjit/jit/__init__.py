"""The JIT engine: applications, OIDC login, the account ledger, the outbox and its worker, connectors.

Entry points for the layers above: `engine.get_engine(services)` (the `JitEngine` attached to `Services.jit`,
built on first use), `worker.install(services)` (build it at start and return the in-process outbox worker
for `create_app(background=[...])`), `scimjit.http.jit_routes.routes` (mounted under /jit/v1) and
`commands.register(subparsers)` (`scimjit apps | worker | outbox | accounts`).
"""
