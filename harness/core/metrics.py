"""What a run reports: a metric value, and the spec that says what the metric means (which way
is better, what role it plays, its unit). Tables, the best-lr protocol, plots and the report read
a metric's direction from its spec, never from its name."""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal, Mapping

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
    #: the metric's name, or a pattern for a family of names (``f1_*``: one per entity type),
    #: matched with fnmatch when no name matches exactly
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

    @property
    def is_pattern(self) -> bool:
        return any(ch in self.name for ch in "*?[")


def find_spec(name: str, *tables: Mapping[str, MetricSpec]) -> MetricSpec | None:
    """The spec of metric ``name`` in ``tables`` (earlier tables first): an exact name wins over
    any pattern; among patterns, the longest (most specific) one; None when nothing matches."""
    for table in tables:
        if name in table and not table[name].is_pattern:
            return table[name]
    for table in tables:
        matches = [s for s in table.values() if s.is_pattern and fnmatchcase(name, s.name)]
        if matches:
            return max(matches, key=lambda s: len(s.name))
    return None


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
    MetricSpec("params_non_embedding", None, "efficiency", "parameters",
               "backbone parameters less position tables: matched by the size preset, so no ranking"),
    MetricSpec("params_total", None, "efficiency", "parameters", "every parameter of the model"),
    MetricSpec("peak_memory_mb", "lower", "efficiency", "MB",
               "peak CUDA memory allocated, or the process's peak resident set (info.memory_kind)"),
    MetricSpec("wall_time_s", "lower", "efficiency", "s", "the run's wall-clock time, end to end"),
    MetricSpec("tokens_per_s", "higher", "efficiency", "tokens/s",
               "tokens per second: training (split train), a training-shaped forward pass (inference), "
               "or a task's own timed evaluation of a split"),
    MetricSpec("best_step", None, "info", "steps", "the step of the best checkpoint by dev metric"),
    MetricSpec("final_loss", "lower", "info", "nats", "training loss at the last step"),
)
