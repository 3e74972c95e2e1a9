"""`python -m workbench.ober --input IN --output OUT [...]` (see workbench.ober.cli)."""

import sys

from workbench.ober.cli import main

if __name__ == "__main__":
    sys.exit(main())
