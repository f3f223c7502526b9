"""``python -m typedstore``: the ``typedstore`` command."""

import sys

from typedstore.cli import main

sys.exit(main())
