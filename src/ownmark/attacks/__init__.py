"""Removal and extraction attacks; importing this package registers every attack."""

from ownmark.attacks import (  # noqa: F401  (registers)
    adaptive,
    art_extraction,
    chain,
    cleanse,
    distill,
    encoder_attacks,
    extraction_more,
    finetune,
    labels,
    laundering,
    modify,
    overwrite,
    permute,
    preprocess,
    prune,
    ptynet_attacks,
    quantize,
    reconstruct,
    stolen_encoder,
    surrogate,
    transforms,
)
from ownmark.attacks.base import ATTACKS, timed
from ownmark.attacks.chain import Chain
from ownmark.attacks.distill import Distill, DistillConfig, make_query
from ownmark.attacks.finetune import FineTune, FineTuneConfig, FineTuneLastLayer, RetrainAll, RetrainLastLayer
from ownmark.attacks.preprocess import Mean, Median, Occlude, Squeeze
from ownmark.attacks.prune import FinePrune, FinePruneConfig, Prune, PruneConfig, global_l1_prune
from ownmark.attacks.quantize import Quantize, QuantizeConfig
from ownmark.attacks.stolen_encoder import StolenEncoder, StolenEncoderConfig
from ownmark.attacks.transforms import (
    Blur,
    BlurConfig,
    Flip,
    FlipConfig,
    Jpeg,
    JpegConfig,
    Noise,
    NoiseConfig,
    TransformedModel,
)

__all__ = [
    "ATTACKS", "Blur", "BlurConfig", "Chain", "Distill", "DistillConfig", "FinePrune", "FinePruneConfig",
    "FineTune", "FineTuneConfig", "FineTuneLastLayer", "Flip", "FlipConfig", "Jpeg", "JpegConfig", "Mean", "Median",
    "Noise", "NoiseConfig", "Occlude", "Prune", "PruneConfig", "Quantize", "QuantizeConfig", "Squeeze",
    "RetrainAll", "RetrainLastLayer", "StolenEncoder", "StolenEncoderConfig", "TransformedModel", "global_l1_prune",
    "make_query", "timed",
]  # fmt: skip
