"""API-side output perturbations: what a model service may do to its answers to resist theft."""

from ownmark.defenses.output import DEFENSES, Defense, NoDefense, Noise, Rounding, TopK, parse_defense

__all__ = ["DEFENSES", "Defense", "NoDefense", "Noise", "Rounding", "TopK", "parse_defense"]
