"""ownmark: embed, attack and verify watermarks in deep neural networks.

``import ownmark as om`` gives the Python API of :mod:`ownmark.api` (``om.create_scheme``,
``om.create_attack``, ``om.load_data``, ``om.train``, ``om.load_model``, ``om.verify``,
``om.list_units``, ...), loaded on first use so that importing the package stays light.
"""

__version__ = "0.1.0"

_API = (
    "create_attack", "create_scheme", "evidence", "list_units", "load_data", "load_key", "load_model", "save_key",
    "save_model", "train", "utility", "verify",
)  # fmt: skip
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from ownmark import api

        return getattr(api, name)
    raise AttributeError(f"module 'ownmark' has no attribute {name!r}")
