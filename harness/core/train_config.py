"""The training budget: optimiser, schedule and step budget, identical for every backbone in a
comparison."""
from __future__ import annotations

import pydantic

#: smoke: minutes on a CPU; study: about an hour per model on 2 CPU cores (``lm``, and the tasks
#: that score its models); full: GPU-sized
BUDGETS = ("smoke", "study", "full")

#: the attribute a parameter carries when AdamW must not decay it whatever its shape
NO_WEIGHT_DECAY = "no_weight_decay"


def exempt_from_weight_decay(*params) -> None:
    """Mark parameters the optimiser must not decay: a state-space model's A (decay would pull its
    poles and frequencies towards zero), besides the vectors (biases, norms) that never decay."""
    for param in params:
        setattr(param, NO_WEIGHT_DECAY, True)


class TrainConfig(pydantic.BaseModel):
    """Optimiser, schedule and budget: identical for every backbone in a comparison."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    steps: int = pydantic.Field(ge=1)
    #: stop once this many training tokens (batch_size × seq_len a step) are reached, if sooner
    token_budget: int | None = pydantic.Field(default=None, ge=1)
    batch_size: int = pydantic.Field(ge=1)
    #: training sequence length L (length-extrapolation buckets are multiples of it)
    seq_len: int = pydantic.Field(ge=1)
    lr: float = pydantic.Field(default=1e-3, gt=0)
    weight_decay: float = pydantic.Field(default=0.01, ge=0)
    beta1: float = pydantic.Field(default=0.9, ge=0, lt=1)
    beta2: float = pydantic.Field(default=0.98, ge=0, lt=1)
    warmup_steps: int = pydantic.Field(default=50, ge=0)
    #: cosine decay ends at lr * min_lr_ratio
    min_lr_ratio: float = pydantic.Field(default=0.1, ge=0, le=1)
    clip_norm: float = pydantic.Field(default=1.0, gt=0)
    eval_every: int = pydantic.Field(default=100, ge=1)
    #: tokens of the dev split scored at each evaluation during training (None: all)
    dev_eval_tokens: int | None = pydantic.Field(default=None, ge=1)
    #: tokens of each split scored for the final numbers (None: all)
    final_eval_tokens: int | None = pydantic.Field(default=None, ge=1)
    log_every: int = pydantic.Field(default=10, ge=1)
    #: "bf16" autocasts on CUDA; on the CPU training always runs in float32
    precision: str = pydantic.Field(default="bf16", pattern="^(bf16|fp32)$")

    @property
    def total_steps(self) -> int:
        """Steps actually taken: ``steps``, or fewer when the token budget runs out first."""
        if self.token_budget is None:
            return self.steps
        return min(self.steps, -(-self.token_budget // (self.batch_size * self.seq_len)))
