"""Models behind an API: the in-process ModelAPI (and the HTTP service and its client)."""

from ownmark.serve.api import KINDS, ModelAPI, default_kind

__all__ = ["KINDS", "ModelAPI", "default_kind"]
