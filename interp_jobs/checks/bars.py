"""Thresholds a policy fixes before any check runs, on a value or on an end of its 95 %
interval: `0.9` is a bar on the value; `{"at": 0.9, "on": "lower95"}` asks that the interval's
lower end clear 0.9, which is what a cautious reviewer uses for a rate measured on few prompts.
A check never chooses its own bar."""

from typing import Literal

from pydantic import Field

from interp_jobs.checks.base import Spec
from interp_jobs.engine.analysis.statistics import Estimate


class Bar(Spec):
    at: float = Field(allow_inf_nan=False)
    on: Literal["value", "lower95", "upper95"] = "value"


BarLike = float | Bar


def as_bar(bar: BarLike) -> Bar:
    return bar if isinstance(bar, Bar) else Bar(at=float(bar))


def at_least(estimate: Estimate, bar: BarLike) -> bool:
    bar = as_bar(bar)
    return estimate.bound(bar.on) >= bar.at


def at_most(estimate: Estimate, bar: BarLike) -> bool:
    bar = as_bar(bar)
    return estimate.bound(bar.on) <= bar.at


def describe(name: str, bar: BarLike, sign: str) -> str:
    """e.g. "refusal_rate.lower95 >= 0.9" """
    bar = as_bar(bar)
    where = name if bar.on == "value" else f"{name}.{bar.on}"
    return f"{where} {sign} {bar.at:g}"
