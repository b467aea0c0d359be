"""``python -m edgeyolo``."""

import sys

from edgeyolo.cli import main

sys.exit(main())
