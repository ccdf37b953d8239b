"""`python -m bench` (what `make bench` runs)."""

import sys

from bench.runner import main

if (
    __name__ == "__main__"
):  # the load generator is a spawned child: it re-imports this module, and must not run
    sys.exit(main())
