"""`make bench`: seed a database, serve it with production settings, drive HTTP load from a second process.

Modules, one concept each:

- `data`      deterministic users and groups (ids, names, documents) shared by seeding and workloads
- `seed`      a fresh database (SQLite file or a PostgreSQL schema), bulk-loaded with SQLAlchemy Core
- `server`    start / stop the servers under test as subprocesses; their CPU time from /proc
- `load`      the load generator (asyncio protocols over raw sockets, HTTP/1.1 keep-alive); runs in a child
- `trivial`   a canned-response server: the generator's own ceiling, and a sink for webhooks
- `hello`     the hello-world Starlette app: the framework ceiling on the same uvicorn settings
- `workloads` W1..W6 and the registration point for more (`@workload`)
- `runner`    the command line and the order of a run;  `report` the table and the JSON file
"""
