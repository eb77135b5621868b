"""tpslab: a reproducible lab for TPS (Text Prompt Shunt, AAAI 2025) on open_clip.

>>> import tpslab
>>> model = tpslab.build_model(backbone="tpslab-tiny", variant="paper", seed=0)  # doctest: +SKIP
>>> out = model.predict(images)  # doctest: +SKIP
"""

from tpslab.authors import load_authors_checkpoint
from tpslab.checkpoint import load_checkpoint
from tpslab.model import TPS, Prediction, TPSConfig, build_model
from tpslab.train import TrainConfig, train
from tpslab.utils import TPSLabError

__all__ = ["TPS", "TPSConfig", "Prediction", "TrainConfig", "TPSLabError", "build_model", "load_checkpoint",
           "load_authors_checkpoint", "train"]
__version__ = "0.1.0"
