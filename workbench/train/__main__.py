"""`python -m workbench.train ...` (see workbench/train/cli.py)."""

import sys

from workbench.train.cli import main

sys.exit(main())
