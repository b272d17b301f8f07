"""Statistics and verdicts: binomial tests, sequential tests, null calibration, decide()."""

from ownmark.verify.calibrate import Calibration, calibrate
from ownmark.verify.sequential import MixtureMartingale, sequential_verify
from ownmark.verify.suspect import LabelOracle, QueryFn
from ownmark.verify.tests import binomial_pvalue, min_queries, upper_bound
from ownmark.verify.verdict import DEFAULT_ALPHA, Verdict, check_alpha, decide

__all__ = [
    "DEFAULT_ALPHA", "Calibration", "LabelOracle", "MixtureMartingale", "QueryFn", "Verdict", "binomial_pvalue",
    "calibrate", "check_alpha", "decide", "min_queries", "sequential_verify", "upper_bound",
]  # fmt: skip

from ownmark._callable import callable_module  # noqa: E402

callable_module(__name__, "verify")  # ``om.verify(suspect, key)`` (ownmark.api.verify) once this is imported
