"""``python -m xkd`` (and ``torchrun -m xkd``) runs the command line."""

import sys

from xkd.cli import main

sys.exit(main())
