"""The per-stage timing table that `ddpm-repro repro` writes: each stage's wall time and
throughput on this run, with the machine beside it (timings only compare on one CPU)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch


def read_timings(path: str | Path) -> list[dict]:
    """The rows the stages appended (JSON lines: stage, seconds, images), in run order."""
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def machine() -> str:
    """The CPU (or GPU) model, core count, torch's CPU capability and whether the CPU has AMX."""
    cpu, flags = platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == platform.machine():
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    amx = "AMX" if "amx_tile" in flags.split() else "no AMX"
    capability = torch.backends.cpu.get_cpu_capability()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores, torch CPU capability {capability}, {amx}{gpu}"


def timing_markdown(rows: list[dict], machine_line: str, wall_seconds: float | None = None) -> str:
    """A Markdown table: stage | seconds | images/s, and the total, for the stages this run ran;
    with `wall_seconds`, the whole run's wall time too (less than the total when cells ran side
    by side)."""
    wall = (
        f"The whole run took {wall_seconds:.1f} s of wall time (DVC's own work included; "
        "cells that ran side by side overlap in the stage total). "
        if wall_seconds is not None
        else ""
    )
    lines = [
        "# Stage timings of the last `ddpm-repro repro`",
        "",
        f"Machine: {machine_line}. Wall time of each stage's command, process start excluded; "
        "only the stages this run executed (DVC skips the unchanged ones). "
        f"{wall}Timings compare only within one run on one machine.",
        "",
        "| stage | seconds | images/s |",
        "|---|---:|---:|",
    ]
    for r in rows:
        rate = f"{r['images'] / r['seconds']:.1f}" if r.get("images") and r["seconds"] > 0 else "—"
        lines.append(f"| {r['stage']} | {r['seconds']:.1f} | {rate} |")
    total = sum(r["seconds"] for r in rows)
    lines.append(f"| **total** | **{total:.1f}** | |")
    return "\n".join(lines) + "\n"


def mlflow_metrics(rows: list[dict]) -> dict[str, float]:
    """{"stage_seconds/<stage>": seconds}, with '@' (not allowed in MLflow keys) as '/'."""
    return {f"stage_seconds/{r['stage'].replace('@', '/')}": float(r["seconds"]) for r in rows}
