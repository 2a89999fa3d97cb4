"""``python -m shipping.ops.cli``: the ``shipping`` command."""

import sys

from shipping.ops.cli import main

sys.exit(main())
