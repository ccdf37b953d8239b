"""`python -m scimjit.cli ...`, the same as the `scimjit` script (used where the script is not on PATH)."""

import sys

from scimjit.cli import main

sys.exit(main())
