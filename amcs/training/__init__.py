"""Train a process reward model (PRM) on TRL's stepwise dataset format.

TRL 1.14 removed ``PRMTrainer``; this package keeps TRL's dataset format and label convention and
trains with plain ``transformers.Trainer`` (+ ``peft`` LoRA when asked).

Rows: ``{"prompt": str, "completions": [step, ...], "labels": [bool, ...]}``, optionally with
``"values": [float, ...]`` (Monte-Carlo values in [0, 1]): the hard labels are re-derived from
them at the configured threshold, and ``labels="soft"`` trains on them.

The PRM is an ``AutoModelForTokenClassification`` with 2 labels (1 = step correct, 0 = step
wrong); the label of a step sits on the last token of ``step + separator``. A step's score at
inference is P(label 1) at that token. ``train_prm`` saves the model, its tokenizer and
``amcs_prm.json`` (separator, label meaning, base model, label kind) so the scorer can rebuild
the same inputs.

Modules, one job each: ``config`` (PRMTrainingConfig, a ``TrainingArguments``), ``tokenize``
(rows -> features), ``collator``, ``loss``, ``model`` (building, freezing, LoRA), ``trainer``
(PRMTrainer, train_prm, evaluation) and ``save`` (the main process writes the PRM).
"""

from amcs.prm.checkpoint import PRM_CONFIG_FILE, load_prm_config
from amcs.training.config import PRMTrainingConfig, make_training_config
from amcs.training.trainer import train_prm

__all__ = [
    "PRM_CONFIG_FILE",
    "PRMTrainingConfig",
    "load_prm_config",
    "make_training_config",
    "train_prm",
]
