"""What a run reports: a metric value, and the spec that says what the metric means (which way
is better, what role it plays, its unit). Tables, the best-lr protocol, plots and the report read
a metric's direction from its spec, never from its name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: score: what the task measures (accuracy, perplexity, BLEU); efficiency: speed, memory, size;
#: per_length: a score stored per length bucket only; info: a count or a step, no better or worse
Role = Literal["score", "efficiency", "per_length", "info"]


@dataclass(frozen=True)
class Metric:
    split: str
    name: str
    value: float
    #: sequence length or length bucket the value belongs to (None: not length-specific)
    length: int | None = None


@dataclass(frozen=True)
class MetricSpec:
    name: str
    #: "higher" or "lower" is better; None for a metric with no better direction (a count, a step)
    better: Literal["higher", "lower"] | None
    role: Role = "score"
    unit: str = ""
    description: str = ""

    def __post_init__(self):
        if self.better is None and self.role in ("score", "per_length"):
            raise ValueError(f"metric {self.name!r}: a {self.role} metric says which way is better")

    @property
    def higher_is_better(self) -> bool:
        if self.better is None:
            raise ValueError(f"metric {self.name!r} has no better direction")
        return self.better == "higher"


def specs(*items: MetricSpec) -> dict[str, MetricSpec]:
    """Specs by name; a name given twice is an error."""
    out: dict[str, MetricSpec] = {}
    for spec in items:
        if spec.name in out:
            raise ValueError(f"metric {spec.name!r} is declared twice")
        out[spec.name] = spec
    return out


#: metrics the engine records for every run, whatever its task
RUN_METRICS = specs(
    MetricSpec("params_non_embedding", None, "efficiency", "parameters"),
    MetricSpec("params_total", None, "efficiency", "parameters"),
    MetricSpec("peak_memory_mb", "lower", "efficiency", "MB"),
    MetricSpec("wall_time_s", "lower", "efficiency", "s"),
    MetricSpec("tokens_per_s", "higher", "efficiency", "tokens/s"),
    MetricSpec("best_step", None, "info", "steps"),
    MetricSpec("final_loss", "lower", "info", "nats"),
)
