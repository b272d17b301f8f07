"""Every registered metric runs on the toy fixture of each family it names, refuses the others, and asks
for a reference model exactly when it compares two (issue 15 item 6, metrics)."""

import math
from types import SimpleNamespace

import pytest

from ownmark.errors import ConfigError
from ownmark.families import FAMILIES
from ownmark.metrics import METRICS


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_scores_its_families_and_refuses_the_rest(name: str) -> None:
    metric = METRICS.get(name)
    assert metric.name == name and metric.description and set(metric.families) <= set(FAMILIES.names())
    for family_name in FAMILIES.names():
        model, data = FAMILIES.get(family_name).toy(seed=0)
        splits = SimpleNamespace(owner=data, attacker=data, test=data)
        reference = FAMILIES.get(family_name).toy(seed=1)[0] if metric.needs_reference else None
        if family_name not in metric.families:
            with pytest.raises(ConfigError, match=f"metric {name} measures"):
                metric(model.eval(), splits, reference=reference)
            continue
        value = metric(model.eval(), splits, reference=reference)
        assert math.isfinite(value) and (name == "psnr" or 0.0 <= value <= 1.0 + 1e-6), (name, value)
        if metric.needs_reference:
            with pytest.raises(ConfigError, match="name the other with --reference"):
                metric(model.eval(), splits)
            assert metric(model.eval(), splits, reference=model.eval()) == pytest.approx(1.0, abs=1e-4)
