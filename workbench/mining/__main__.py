"""`python -m workbench.mining --input ober.parquet --output triplets.csv.xz [...]`."""

import sys

from workbench.mining.cli import main

if __name__ == "__main__":
    sys.exit(main())
