"""ownmark: embed, attack and verify watermarks in deep neural networks."""

__version__ = "0.1.0"
