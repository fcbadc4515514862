"""Where a training step's time goes on this CPU: its phases, and its layers timed alone at
the shapes the step gives them.

For each setting (preset and precision), in one process that keeps freed memory as
`ddpm-repro` does:
1. the step: `Trainer.train_step` of the Improved DDPM hybrid cell, as benchmarks/bench.py
   builds it, warm-up steps, then timed steps split into phases: forward (the objective,
   `training_losses`), backward, Adam, EMA and the rest (batch, gradient clipping);
2. every call of a convolution, linear layer, group norm, SiLU or dropout in one step, alone:
   the same module on an input of the same shape and dtype, forward and backward (gradients
   of the input and the module's parameters), under the step's autocast;
3. the attention kernel (`scaled_dot_product_attention`, or in bf16 `matmul_attention`), the
   same way;
4. the rest: the step minus (2) and (3), i.e. the loss, the scale-shift, skip additions and
   concatenations, resampling, the embedding, clipping, Adam and EMA.

With the step's FLOPs (counted as bench.py counts them) and the machine's probe (bench.py's
best square GEMM), it gives each part's achieved GFLOP/s and percentage of the probe, and a
bound: the step's percentage of the probe if only its convolutions and attention took time.
Parts timed alone run with warm caches and no neighbours, so the rest is what the step spends
beyond them, not a measurement of its own.

  .venv/bin/python benchmarks/step_breakdown.py             # iddpm-cifar10 in fp32 and bf16, ~1 min
  .venv/bin/python benchmarks/step_breakdown.py --settings digits:fp32

Writes benchmarks/results/step_breakdown.{json,md}. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from ddpm_repro.allocator import keep_freed_memory  # noqa: E402

keep_freed_memory()  # before torch allocates: the step runs as under `ddpm-repro`

import bench  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ddpm_repro.models import layers  # noqa: E402

# preset -> (warm-up steps, timed steps, batch): the batch of bench.py's train figure
SIZES = {"iddpm-cifar10": (2, 4, 16), "digits": (20, 40, 64)}
PHASES = ("forward", "backward", "adam", "ema")
CPU = torch.device("cpu")


def _median_seconds(fn: Callable[[], object], reps: int = 3) -> float:
    """Median seconds of fn after one warm-up call."""
    fn()
    return statistics.median(bench.timed(fn, CPU) for _ in range(reps))


def _timed_phases(trainer, warmup: int, steps: int) -> dict[str, float]:
    """Median seconds per step of the whole step and of each phase, over `steps` steps."""
    spent: Counter = Counter()

    def timing(name: str, fn: Callable) -> Callable:
        def wrapped(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return wrapped

    diffusion = trainer.diffusion
    diffusion.training_losses = timing("forward", diffusion.training_losses)
    trainer.optimizer.step = timing("adam", trainer.optimizer.step)
    trainer.ema.update = timing("ema", trainer.ema.update)
    backward = torch.Tensor.backward
    torch.Tensor.backward = timing("backward", backward)
    try:
        for _ in range(warmup):
            trainer.train_step()
        per_step: dict[str, list[float]] = {k: [] for k in ("step", *PHASES)}
        for _ in range(steps):
            spent.clear()
            start = time.perf_counter()
            trainer.train_step()
            per_step["step"].append(time.perf_counter() - start)
            for k in PHASES:
                per_step[k].append(spent[k])
    finally:
        torch.Tensor.backward = backward
        del diffusion.training_losses, trainer.optimizer.step, trainer.ema.update
    out = {k: statistics.median(v) for k, v in per_step.items()}
    out["rest of the step"] = out["step"] - sum(out[k] for k in PHASES)
    return out


# the step's modules timed alone, by part: (name, module types)
PARTS = (
    ("convolutions", (torch.nn.Conv1d, torch.nn.Conv2d)),
    ("linear layers", (torch.nn.Linear,)),
    ("group norms", (torch.nn.GroupNorm,)),
    ("SiLUs", (torch.nn.SiLU,)),
    ("dropouts", (layers.Dropout,)),
)
ATTENTION = {"sdpa": F.scaled_dot_product_attention, "matmul_attention": layers.matmul_attention}


def _calls_of_one_step(trainer) -> tuple[Counter, Counter]:
    """The module calls of one training step by (part, module, input shape, input dtype), and its
    attention calls by (function name, q shape, dtype), with their counts."""
    modules: Counter = Counter()
    attention: Counter = Counter()

    def hook(part: str) -> Callable:
        def record(module, inputs, _output):
            modules[(part, module, tuple(inputs[0].shape), inputs[0].dtype)] += 1

        return record

    hooks = [
        m.register_forward_hook(hook(part))
        for m in trainer.model.modules()
        for part, types in PARTS
        if isinstance(m, types)
    ]

    def recording(name: str) -> Callable:
        def wrapped(q, k, v, *args, **kwargs):
            attention[(name, tuple(q.shape), q.dtype)] += 1
            return ATTENTION[name](q, k, v, *args, **kwargs)

        return wrapped

    F.scaled_dot_product_attention = recording("sdpa")
    layers.matmul_attention = recording("matmul_attention")
    try:
        trainer.train_step()
    finally:
        F.scaled_dot_product_attention = ATTENTION["sdpa"]
        layers.matmul_attention = ATTENTION["matmul_attention"]
        for h in hooks:
            h.remove()
    return modules, attention


def _alone(run: Callable[[], torch.Tensor], inputs: list[torch.Tensor]) -> tuple[float, float, int]:
    """(forward seconds, forward + backward seconds, forward FLOPs) of run() on its own."""
    grad = torch.randn_like(run())
    forward = _median_seconds(run)
    both = _median_seconds(lambda: torch.autograd.grad(run(), inputs, grad))
    return forward, both, bench.count_flops(run)


def _parts_alone(modules: Counter, attention: Counter, precision: str) -> dict[str, dict]:
    """Per part: calls, seconds per step forward and forward + backward, forward FLOPs per step,
    each call timed alone under the step's autocast."""
    parts = {
        name: {"calls": 0, "forward_s": 0.0, "forward_backward_s": 0.0, "forward_flops": 0}
        for name, _ in PARTS
    }
    parts["attention kernel"] = dict(parts["convolutions"])
    with bench.autocast(CPU, precision):
        for (part, module, shape, dtype), calls in modules.items():
            x = torch.randn(shape, dtype=dtype, requires_grad=True)
            inputs = [x, *(p for p in module.parameters() if p.requires_grad)]
            _add(parts[part], calls, _alone(lambda: module(x), inputs))  # noqa: B023
        for (name, shape, dtype), calls in attention.items():
            q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(3))
            _add(parts["attention kernel"], calls, _alone(lambda: ATTENTION[name](q, k, v), [q, k, v]))  # noqa: B023
    return parts


def _add(part: dict, calls: int, timing: tuple[float, float, int]) -> None:
    forward, both, flops = timing
    part["calls"] += calls
    part["forward_s"] += calls * forward
    part["forward_backward_s"] += calls * both
    part["forward_flops"] += calls * flops


def measure(preset: str, precision: str) -> dict:
    """One setting's breakdown: phases, the parts timed alone, FLOPs per step."""
    warmup, steps, batch = SIZES[preset]
    with tempfile.TemporaryDirectory() as ckpt_dir:
        torch.manual_seed(0)
        trainer = bench._ours_trainer(preset, precision, "cpu", batch, ckpt_dir)
        phases = _timed_phases(trainer, warmup, steps)
        modules, attention = _calls_of_one_step(trainer)
        flops = batch * bench.train_flops_per_image(trainer, preset, CPU)
    return {
        "preset": preset,
        "precision": precision,
        "batch": batch,
        "timed_steps": steps,
        "phases_s": phases,
        "step_flops": flops,
        "parts": _parts_alone(modules, attention, precision),
    }


def _row(part: str, seconds: float, step: float, flops: float | None, probe: float) -> str:
    share = f"{100 * seconds / step:.0f}%"
    if not flops:
        return f"| {part} | {1e3 * seconds:.1f} | {share} | — | — |"
    gflops = flops / seconds / 1e9
    return f"| {part} | {1e3 * seconds:.1f} | {share} | {gflops:.0f} | {100 * gflops / probe:.0f}% |"


def markdown(results: dict) -> str:
    """The breakdown as one Markdown table per setting."""
    lines = [
        f"Measured on {results['machine']}, {results['date']}; probe (best square GEMM): "
        + ", ".join(f"{k} {v['gflops']:.0f} GFLOP/s" for k, v in results["probe"].items())
        + " (`.venv/bin/python benchmarks/step_breakdown.py`). Times per step are medians over "
        "the timed steps; a part timed alone adds up its calls, each the median of 3 runs "
        "(forward, or forward and backward), under the step's autocast.",
    ]
    for r in results["settings"]:
        probe = results["probe"][r["precision"]]["gflops"]
        phases, parts = r["phases_s"], r["parts"]
        step = phases["step"]
        alone = sum(p["forward_backward_s"] for p in parts.values())
        rest = step - alone
        gemm = parts["convolutions"]["forward_backward_s"] + parts["attention kernel"]["forward_backward_s"]
        bound = r["step_flops"] / gemm / 1e9
        lines += [
            "",
            f"**{r['preset']}, {r['precision']}**, batch {r['batch']}, {r['step_flops'] / 1e9:.3g} GFLOP "
            f"per step, {r['batch'] / step:.4g} images/s:",
            "",
            "| part | ms per step | share of the step | GFLOP/s | of the probe |",
            "|---|---:|---:|---:|---:|",
            _row("the step", step, step, r["step_flops"], probe),
            *(_row(f"phase: {k}", phases[k], step, None, probe) for k in (*PHASES, "rest of the step")),
        ]
        for name, p in parts.items():
            if p["calls"]:
                flops = 3 * p["forward_flops"]  # backward: the input's and the weights' gradients
                label = f"{name} alone ({p['calls']} calls), forward + backward"
                lines.append(_row(label, p["forward_backward_s"], step, flops, probe))
        lines += [
            _row("the rest: the step minus the parts alone", rest, step, None, probe),
            "",
            f"Convolutions and attention alone take {1e3 * gemm:.0f} ms: with nothing else, the step would "
            f"run at {bound:.0f} GFLOP/s, {100 * bound / probe:.0f}% of the probe.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--settings",
        default="iddpm-cifar10:fp32,iddpm-cifar10:bf16",
        help=f"comma-separated preset:precision pairs (presets: {', '.join(SIZES)})",
    )
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    settings = [s.split(":") for s in args.settings.split(",")]
    for s in settings:
        if len(s) != 2 or s[0] not in SIZES or s[1] not in ("fp32", "bf16"):
            ap.error(f"--settings: '{':'.join(s)}' is not preset:precision with a preset of {sorted(SIZES)}")

    from ddpm_repro.reporting.timing import machine

    results = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "probe": bench.run_probe({"device": "cpu", "sizes": bench.PROBE_SIZES["cpu"]}),
        "settings": [],
    }
    for preset, precision in settings:
        print(f"[step_breakdown] {preset} {precision}", file=sys.stderr, flush=True)
        results["settings"].append(measure(preset, precision))
    table = markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_breakdown.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "step_breakdown.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
