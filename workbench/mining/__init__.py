"""MedTrim's meta-entity triplet mining: similarity of studies' findings, the mining schedule, I/O.

    from workbench.mining import MiningConfig, load_entity_table, mine_triplets, write_triplets
    result = mine_triplets(load_entity_table(run / "ober.parquet"), MiningConfig(total_iter=2000))
    write_triplets(result.triplets, run / "triplets.csv.xz")

CLI: `python -m workbench.mining --input ober.parquet --output triplets.csv.xz [--threshold ...]`.
"""

from workbench.mining.encode import NO_FINDING, EncodedStudies, encode_findings, parse_findings
from workbench.mining.schedule import MiningConfig, MiningResult, mine_encoded, mine_triplets
from workbench.mining.similarity import SCORINGS, ScoreWeights, pairwise_scores
from workbench.mining.table import load_entity_table, read_triplets, train_rows, write_triplets

__all__ = [
    "NO_FINDING", "EncodedStudies", "encode_findings", "parse_findings", "MiningConfig", "MiningResult",
    "mine_encoded", "mine_triplets", "SCORINGS", "ScoreWeights", "pairwise_scores", "load_entity_table",
    "read_triplets", "train_rows", "write_triplets",
]
