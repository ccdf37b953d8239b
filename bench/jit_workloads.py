"""JIT engine workloads: the place for logins/s and sweep throughput (none registered yet).

Each is a function registered with `@workload` (see `bench.registry` for the contract). What they will need:

- **Logins** (`POST /jit/v1/logins`): an application in the server's config and an OIDC issuer whose ID tokens
  verify. Return the TOML from `server_config=` (it is written to SCIMJIT_CONFIG before the server starts);
  `b.sink_port()` is a local server answering 200 to anything, a webhook connector's downstream. Sign the
  tokens up front and send them as prepared requests: `b.http([b.request("POST", "/jit/v1/logins", body)
  for body in bodies], unique=True)` for first logins (each creates an account), without `unique` for
  logins of existing accounts (seed those first, e.g. with a warm-up pass or rows written via `b.target.db`).
- **Sweep throughput**: not HTTP. Seed expiring memberships or grants through `b.target.db`, time
  `scimjit sweep` (or the sweeper function) over them, and return `Result(requests=rows_swept,
  seconds=elapsed)`: the table shows rows/s in the rps column.

Mark slow or setup-heavy workloads `default=False` so `make bench` stays short; run them with `--only`.
"""

from __future__ import annotations
