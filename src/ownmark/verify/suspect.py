"""What verification can see of a suspect: a white-box module or a black-box query function."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ownmark.errors import KeyMismatchError

QueryFn = Callable[[torch.Tensor], torch.Tensor]


class LabelOracle:
    """Answers a batch of images with labels and counts every image it is asked about.

    A module is queried in eval mode without gradients; a function may return labels ``(N,)``
    or scores ``(N, K)`` (probabilities or logits), reduced here to labels. Shapes are checked
    against what the key expects, so a key used with the wrong model fails with one clear line.

    Example:
        >>> oracle = LabelOracle(lambda x: torch.zeros(len(x), dtype=torch.long))
        >>> oracle(torch.zeros(5, 1, 8, 8)).tolist(), oracle.queries
        ([0, 0, 0, 0, 0], 5)
    """

    def __init__(self, suspect: nn.Module | QueryFn, *, num_classes: int | None = None) -> None:
        if not callable(suspect):
            raise TypeError(f"a suspect must be an nn.Module or a function of images, got {type(suspect).__name__}")
        self.suspect, self.num_classes, self.queries = suspect, num_classes, 0

    def scores_or_labels(self, x: torch.Tensor) -> torch.Tensor:
        spec = getattr(self.suspect, "spec", None)
        if spec is not None and tuple(x.shape[1:]) != tuple(spec.input_shape):
            raise KeyMismatchError(
                f"the key's images are {tuple(x.shape[1:])} but the model takes {tuple(spec.input_shape)}; "
                "use the key made for this model"
            )
        self.queries += len(x)
        try:
            if isinstance(self.suspect, nn.Module):
                from ownmark.train import predict_logits

                return predict_logits(self.suspect, x)
            with torch.no_grad():
                return self.suspect(x)
        except RuntimeError as err:
            raise KeyMismatchError(
                f"the suspect cannot take the key's images {tuple(x.shape[1:])} ({str(err).splitlines()[0][:120]}); "
                "use the key made for this model"
            ) from None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.scores_or_labels(x)
        if out.ndim == 2:
            if self.num_classes is not None and out.shape[1] != self.num_classes:
                raise KeyMismatchError(
                    f"the suspect answers with {out.shape[1]} classes but the key was made for {self.num_classes}; "
                    "use the key made for this model"
                )
            return out.argmax(1)
        if out.ndim != 1 or len(out) != len(x):
            raise KeyMismatchError(f"a label query must return (N,) labels or (N, K) scores, got {tuple(out.shape)}")
        return out.long()
