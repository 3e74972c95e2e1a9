"""The training loop (method-agnostic), distributed helpers, plots and the CLI.

    from workbench.train import train
    result = train(load_config("medtrim"), run_dir)     # -> run_dir/train/medtrim-<seed>/
"""

from workbench.train.trainer import TrainResult, Trainer, TrainingError, retrieval_validation, train, train_folder

__all__ = ["Trainer", "TrainResult", "TrainingError", "retrieval_validation", "train", "train_folder"]
