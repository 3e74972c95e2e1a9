"""The reader registry: source name -> function turning a data root into manifest rows.

A reader has the signature `read(root, *, skips: SkipCounter, **options) -> DataFrame` and
returns the manifest columns except `split` (an `official_split` column, when the source has
one, wins over the drawn split in `build_manifest`). Adding a source is one new module with
`@READERS.register("name")`.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from workbench.registry import Registry

READERS: Registry[pd.DataFrame] = Registry("reader")
Reader = Callable[..., pd.DataFrame]
