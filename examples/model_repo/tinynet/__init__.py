"""tinynet: a tiny classifier, its training loop and its evaluation loop."""

from .data import make_loaders
from .evaluate import evaluate
from .model import TinyNet
from .train import fit, train_one_epoch

__all__ = ["TinyNet", "evaluate", "fit", "make_loaders", "train_one_epoch"]
