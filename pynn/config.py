"""Every hyperparameter default, in one place. scripts/run.py turns each field
into a command-line option; tests build Config(...) directly."""
from dataclasses import dataclass

ALLOWED_SEEDS = (0, 1, 2, 3, 42)  # the PV021 rules allow only these fixed seeds


@dataclass
class Config:
    # The defaults are the best a default run reached in about 30 s on a
    # 2-core machine, chosen by VALIDATION accuracy only (README: "Defaults").
    data_dir: str = "data"
    out_dir: str = "."
    hidden: tuple = (1024, 512)
    activation: str = "relu"
    dropout: float = 0.0           # after each hidden activation, training only
    epochs: int = 15
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9          # SGD only
    weight_decay: float = 0.05     # AdamW: decoupled, weights only
    val_fraction: float = 0.1
    seed: int = 42
    threads: int = 0               # 0: free cores, at most 16 (pynn/cpu.py)
    schedule: str = "cosine"       # "cosine" decay to 0 over the run, or "constant"
    warmup_epochs: float = 0.0     # linear warm-up before the schedule
    time_budget: float = 480.0     # seconds of training; the course allows 600 in all
    runs_dir: str = "runs"         # run folders go here (relative to out_dir); "": none
    save: str = ""                 # file to save the trained model to ("": don't)
    load: str = ""                 # saved model to predict with, skipping training
