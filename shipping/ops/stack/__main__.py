"""``python -m shipping.ops.stack up|down|status|clean`` (``make up``, ``make down``, ...)."""

import sys

from shipping.ops.stack.command import main

sys.exit(main())
