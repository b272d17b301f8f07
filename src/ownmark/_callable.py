"""Subpackages that are also API functions: ``om.train(...)`` and ``om.verify(...)``.

``ownmark.train`` and ``ownmark.verify`` are subpackages; once one is imported, the package attribute
of that name is the module, not :func:`ownmark.api.train` / :func:`ownmark.api.verify`. Their module
objects are therefore made callable: calling the module calls the API function, and every name in
the module stays where it was (``ownmark.train.fit``, ``ownmark.verify.decide``).
"""

from __future__ import annotations

import sys
import types


def callable_module(module_name: str, api_name: str) -> None:
    """Make ``sys.modules[module_name]`` callable as ``ownmark.api.<api_name>``."""

    class _Module(types.ModuleType):
        def __call__(self, *args, **kwargs):
            from ownmark import api

            return getattr(api, api_name)(*args, **kwargs)

    _Module.__name__ = f"CallableModule[{api_name}]"
    sys.modules[module_name].__class__ = _Module
