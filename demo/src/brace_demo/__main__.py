"""``python -m brace_demo``: the ``brace-demo`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
