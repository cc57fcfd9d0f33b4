"""``python -m actrhost`` is the ``actrhost`` command."""

import sys

from ._cli import main

sys.exit(main())
