"""`make bench`: seed a database, serve it with production settings, drive HTTP load from a second process.

Modules, one concept each (docs/benchmarks.md is the user's guide):

- `runner`    the command line and the order of a run
- `data`      deterministic users and groups (ids, names, documents) shared by seeding and workloads
- `seed`      a fresh database (SQLite file or a PostgreSQL schema), bulk-loaded with SQLAlchemy Core
- `server`    start / stop the servers under test as subprocesses; CPU time and RSS from /proc
- `load`      the load generator (asyncio protocols over raw sockets, HTTP/1.1 keep-alive), in a child process
- `trivial`   a canned-response server: the generator's own ceiling, and a sink for webhooks
- `hello`     the hello-world Starlette app: the framework ceiling on the same uvicorn settings
- `registry`  how workloads are registered (`@workload`); `context` the `Bench` a workload function gets
- `workloads` W1..W6 of the issue;  `jit_logins` L1/L2 (logins/s);  `expiry` X1/X2 (sweep, expiry → revoke)
- `idp_cycle` I1, Entra's initial provisioning cycle (users/s end to end);  `cost` C1 (costly filters)
- `profile`   `--profile`: py-spy on the server's workers, summarised per request
- `report`    the table and bench/results/<time>.json
"""
