"""``python -m syncmq``: the ``syncmq`` console script."""

import sys

from .cli import main

sys.exit(main())
