"""Experiment tracking. ``Tracker`` does nothing; ``WandbTracker`` sends each run to W&B."""
from __future__ import annotations

import os
from pathlib import Path


class Tracker:
    def log_losses(self, first_step: int, losses: list[float], lr: float) -> None:
        pass

    def log_metrics(self, step: int, metrics: list) -> None:
        pass

    def finish(self, status: str, metrics: list, info: dict) -> None:
        pass


def metric_key(m) -> str:
    key = f"{m.split}/{m.name}"
    return f"{key}@{m.length}" if m.length is not None else key


class WandbTracker(Tracker):
    """One W&B run per harness run (id = run id). Offline when no API key is configured, so the
    harness never needs the network; ``wandb sync`` uploads offline runs later."""

    def __init__(self, cfg, run_dir: Path, project: str = "harness"):
        import wandb

        self.wandb = wandb
        self.run = wandb_init(
            run_dir, project, id=cfg.run_id, name=f"{cfg.label}/{cfg.task}/s{cfg.seed}",
            group=f"{cfg.task}/{cfg.size}", config=cfg.model_dump(mode="json"), resume="allow",
            reinit="create_new")

    def log_losses(self, first_step, losses, lr):
        for i, loss in enumerate(losses):
            self.run.log({"train/loss": loss, "train/lr": lr}, step=first_step + i)

    def log_metrics(self, step, metrics):
        self.run.log({metric_key(m): m.value for m in metrics}, step=step)

    def finish(self, status, metrics, info):
        self.run.summary.update({metric_key(m): m.value for m in metrics})
        self.run.summary["status"] = status
        rows = [[m.split, m.name, m.length, m.value] for m in metrics]
        self.run.log({"results": self.wandb.Table(columns=["split", "metric", "length", "value"],
                                                  data=rows)})
        self.run.finish(exit_code=0 if status == "finished" else 1)


def wandb_init(dir: Path | str, project: str = "harness", **options):
    """A new W&B run, the one way the harness starts one (runs, plots, the report): project
    ``$WANDB_PROJECT`` if set, else ``project``; mode by ``wandb_mode`` (offline without an API
    key); files under ``dir``; quiet. ``options`` go to ``wandb.init`` (id, name, group, job_type ...)."""
    import wandb

    return wandb.init(project=os.environ.get("WANDB_PROJECT", project), dir=str(dir), mode=wandb_mode(),
                      settings=wandb.Settings(silent=True, console="off"), **options)


def wandb_mode() -> str:
    """$WANDB_MODE if set, else online only when an API key is configured."""
    offline = not (os.environ.get("WANDB_API_KEY") or _has_netrc_key())
    return os.environ.get("WANDB_MODE") or ("offline" if offline else "online")


def _has_netrc_key() -> bool:
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
