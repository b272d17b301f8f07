"""Model families as units: ``FAMILIES`` maps each name to its :class:`Family`.

Example:
    >>> from ownmark.families import FAMILIES
    >>> FAMILIES.names(), FAMILIES.get("encoder").default_kind
    (['classifier', 'encoder', 'image2image'], 'features')
"""

from ownmark.families import classifier, encoder, image2image  # noqa: F401,E402  (register the families)
from ownmark.families.base import FAMILIES, Family, NullSpec, family_of

__all__ = ["FAMILIES", "Family", "NullSpec", "family_of"]
