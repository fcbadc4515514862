"""MLflow tracking: the only module that imports mlflow.

One experiment per profile (`ddpm-repro/<profile>`); one run per grid cell, created by the
train stage and found again by its tags (profile, cell) by the sample and evaluate
stages, so that a cell's training, sampling and evaluation results sit in one run. A
parent run per pipeline execution is opened and closed by `ddpm-repro repro` (cli.py),
which passes its id to the stages in DDPM_REPRO_PARENT_RUN_ID; the cell runs created in
that execution are nested under it.

Tracking never takes a stage down: each HTTP request has a bounded timeout and no
retries, and the first failure disables tracking for the rest of the stage with one
warning. The store is MLFLOW_TRACKING_URI when set, else sqlite:///<repo>/mlflow.db.
DDPM_REPRO_TRACKING=0 (or tracking.enabled: false) turns tracking off.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .config import Config, config_to_dict

PARENT_ENV = "DDPM_REPRO_PARENT_RUN_ID"


def repo_root(start: Path | None = None) -> Path:
    """The git work tree holding `start` (default: cwd), or cwd outside git."""
    cwd = (start or Path.cwd()).resolve()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0:
            return Path(out.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return cwd


def git_commit(root: Path) -> str:
    """The HEAD commit hash of the git tree at `root`, or "unknown"."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def store_root(start: Path | None = None) -> Path:
    """Where the default MLflow store lives: the repo root, or for a `dvc exp run --queue` or
    `--temp` experiment, which runs in <repo>/.dvc/tmp/exps/<tmp> and is deleted afterwards,
    the repository it was queued from."""
    root = repo_root(start)
    parts = root.parts
    for i in range(len(parts) - 3, 0, -1):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else an absolute sqlite store at the repository root (relative
    URIs break under `dvc exp run --temp`)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_root() / 'mlflow.db'}"


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = str(v)
    return out


# The diffusion keys that only some objectives read: logged only for those
_OBJECTIVE_KEYS = {"hybrid_lambda": ("hybrid",), "aux_lambda": ("aux",), "aux_variance": ("aux",)}


def applied_settings(config: Config) -> dict[str, str]:
    """The settings this cell ran with, flattened ("train.lr": "0.001"), for its MLflow params:
    the merged `diffusion` of its own objective, without the other `losses` entries, the grid,
    the class-conditional section of an unconditional cell, or a lambda its objective never
    reads. A user comparing runs in the MLflow UI sees only what applied."""
    d = config_to_dict(config)
    for section in ("losses", "grid"):
        d.pop(section, None)
    if not config.model.class_cond:
        d.pop("conditional", None)
    objective = config.diffusion.objective.value
    for key, objectives in _OBJECTIVE_KEYS.items():
        if objective not in objectives:
            d["diffusion"].pop(key, None)
    for key in ("loss_entry", "cell_seed"):  # the cell's name, when it has one; train.seed holds the seed
        if d["diffusion"].get(key) in ("", None):
            d["diffusion"].pop(key, None)
    return _flatten(d)


class Tracker:
    """A fail-safe handle on one cell's MLflow run. Every method is a no-op once disabled.

    Args:
        config: the resolved config of the cell (profile, cell, tracking section).
        stage: the command, e.g. "train"; its DVC stage (`Cell.stage`, e.g. "train@<cell>") is
            tagged dvc_stage.
    """

    def __init__(self, config: Config, stage: str) -> None:
        self.config = config
        self.stage = stage
        self.enabled = config.tracking.enabled and os.environ.get("DDPM_REPRO_TRACKING", "1") != "0"
        self.run_id: str | None = None
        self._client = None
        self._monitor = None
        if not self.enabled:
            return
        # Bounded requests and no retries, set before mlflow reads them; telemetry off.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(math.ceil(config.tracking.timeout_s)))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("DO_NOT_TRACK", "true")
        self._call("connect", self._connect)

    @property
    def experiment_name(self) -> str:
        """tracking.experiment when set, else "ddpm-repro/<profile>"."""
        return self.config.tracking.experiment or f"ddpm-repro/{self.config.profile}"

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # any failure of the tracking server or store
            self.enabled = False
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            print(
                f"warning: MLflow unavailable during {what} ({type(exc).__name__}: {first}); "
                "tracking is off for the rest of this stage, its outputs are unaffected",
                file=sys.stderr,
            )
            return None

    def _connect(self) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(tracking_uri())
        self._client = MlflowClient()
        exp = self._client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            # With the default local store, artifacts go beside mlflow.db, not into ./mlruns.
            local = None if os.environ.get("MLFLOW_TRACKING_URI") else (store_root() / "mlartifacts").as_uri()
            self._experiment_id = self._client.create_experiment(
                self.experiment_name, artifact_location=local
            )
        else:
            self._experiment_id = exp.experiment_id

    # -------------------------------------------------------------- runs
    def _tags(self) -> dict[str, str]:
        d = self.config.diffusion
        tags = {
            "profile": self.config.profile,
            "cell": self.config.cell,
            "schedule": d.schedule,
            "loss": d.entry,
            "objective": d.objective.value,
            "git_commit": git_commit(repo_root()),
            "dvc_stage": self.config.grid_cell.stage(self.stage),
            "mlflow.runName": self.config.cell,
        }
        if os.environ.get(PARENT_ENV):
            tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
        if os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run` for the stages it runs
            tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
        if d.objective.is_extension:
            tags["extension"] = "D3PM auxiliary loss applied to Gaussian diffusion (not in the papers)"
        return tags

    def start_cell_run(self, run_id: str | None = None) -> str | None:
        """Open the cell's run (a new one, or `run_id` when resuming) and log its params."""

        def start() -> str:
            if run_id is not None:
                self.run_id = self._client.get_run(run_id).info.run_id
                return self.run_id
            run = self._client.create_run(self._experiment_id, tags=self._tags())
            self.run_id = run.info.run_id
            self._log_params()
            return self.run_id

        return self._call("start_cell_run", start)

    def _log_params(self) -> None:
        from mlflow.entities import Param

        params = [Param(k, v[:6000]) for k, v in applied_settings(self.config).items()]
        for i in range(0, len(params), 100):
            self._client.log_batch(self.run_id, params=params[i : i + 100])

    def start_or_resume(self, checkpoint_dir: Path, resuming: bool) -> str | None:
        """The training run of a cell: a resumed cell (`resuming`) continues the MLflow run
        whose id its checkpoint folder holds (`mlflow_run_id`); otherwise a new run starts and
        its id is written there. Returns the run id (None when tracking is off or unreachable)."""
        from .io import write_text

        run_file = Path(checkpoint_dir) / "mlflow_run_id"
        resume_id = run_file.read_text().strip() if resuming and run_file.is_file() else None
        run_id = self.start_cell_run(resume_id)
        if run_id:
            write_text(run_file, run_id)
        return run_id

    def find_cell_run(self) -> str | None:
        """The newest run of this profile's cell (by tags); a new one if there is none."""

        def find() -> str:
            cell, profile = self.config.cell, self.config.profile
            runs = self._client.search_runs(
                [self._experiment_id],
                filter_string=f"tags.cell = '{cell}' and tags.profile = '{profile}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if runs:
                self.run_id = runs[0].info.run_id
                self._client.set_tag(
                    self.run_id, f"dvc_stage.{self.stage}", self.config.grid_cell.stage(self.stage)
                )
                return self.run_id
            return self.start_cell_run()

        return self._call("find_cell_run", find)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, prefix: str = "") -> None:
        """Log the finite numbers of `metrics` as `prefix + name` at `step` (default 0), in one
        batch; non-numeric and non-finite values are skipped."""

        def log() -> None:
            import time

            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            batch = [
                Metric(f"{prefix}{k}", float(v), now, step or 0)
                for k, v in metrics.items()
                if isinstance(v, int | float) and math.isfinite(float(v))
            ]
            self._client.log_batch(self.run_id, metrics=batch)

        if self.run_id is not None:
            self._call("log_metrics", log)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload the file `path` under `artifact_path` of the run; a missing file is skipped."""
        if self.run_id is not None and Path(path).exists():
            self._call(
                "log_artifact", lambda: self._client.log_artifact(self.run_id, str(path), artifact_path)
            )

    @contextlib.contextmanager
    def system_metrics(self, interval_s: float = 10.0) -> Iterator[None]:
        """While the block runs, log MLflow's system metrics to the run every `interval_s`
        seconds: CPU and memory (psutil), GPU utilisation and memory where NVML can read them
        (nvidia-ml-py; MLflow skips the GPU when there is none), as "system/<name>"."""
        self._start_monitor(interval_s)
        try:
            yield
        finally:
            self._stop_monitor()

    def _start_monitor(self, interval_s: float) -> None:
        def start() -> None:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            # quiet: MLflow's INFO lines about the monitor would interleave with the status lines
            logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
            self._monitor = SystemMetricsMonitor(
                self.run_id, sampling_interval=interval_s, resume_logging=True, tracking_uri=tracking_uri()
            )
            self._monitor.start()

        if self.run_id is not None:
            self._call("monitor_system", start)

    def _stop_monitor(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            self._call("end system metrics", monitor.finish)

    def end(self, status: str = "FINISHED") -> None:
        """Stop the system metrics `on_start` began, and close the run with `status` (an
        MLflow run status: FINISHED, FAILED, KILLED)."""
        self._stop_monitor()
        if self.run_id is not None:
            self._call("end", lambda: self._client.set_terminated(self.run_id, status))

    # --------------------------------------------------- training callback
    def on_start(self, step: int, checkpoint_dir: Path) -> None:
        """The trainer's callback: start the cell's run, or continue the one a resumed
        checkpoint folder names (`start_or_resume`), and its system metrics until `end`."""
        self.start_or_resume(checkpoint_dir, resuming=step > 0)
        if self._monitor is None:
            self._start_monitor(10.0)

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """The trainer's callback: log the training metrics as "train/<name>" at `step`."""
        self.log_metrics(metrics, step=step, prefix="train/")

    def on_checkpoint(self, step: int, path: Path) -> None:
        """The trainer's callback: log the step of each checkpoint written as checkpoint_step."""
        self.log_metrics({"checkpoint_step": step}, step=step)


class PipelineRun:
    """The parent run of one pipeline execution (opened and closed by `ddpm-repro repro`)."""

    def __init__(self, config: Config) -> None:
        self.tracker = Tracker(config, "pipeline")
        self.run_id: str | None = None

    def __enter__(self) -> PipelineRun:
        t = self.tracker

        def start() -> str:
            tags = {
                "profile": t.config.profile,
                "git_commit": git_commit(repo_root()),
                "mlflow.runName": f"pipeline ({t.config.profile})",
                "kind": "pipeline",
            }
            return t._client.create_run(t._experiment_id, tags=tags).info.run_id

        self.run_id = t._call("start pipeline run", start)
        t.run_id = self.run_id
        if self.run_id:
            os.environ[PARENT_ENV] = self.run_id
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        os.environ.pop(PARENT_ENV, None)
        self.tracker.end("FINISHED" if exc_type is None else "FAILED")
