"""Which NLL estimate gives the smaller standard error at equal cost: every term of the bound
on fewer test images, or the stratified estimate (`GaussianDiffusion.estimate_bpd`, K of the
T - 1 KL terms per image) on more of them.

For each checkpoint, computes every term L_0..L_{T-1} for every test image (one draw of x_t
each, as `calc_bpd_loop` does), then, from those terms:

- full bound on n' images: s.e. = sd_i(bound_i) / sqrt(n');
- stratified with K strata on n images: each image's estimate has the extra variance
  sum_k |S_k|^2 Var_{t in S_k}(L_t) (the timestep noise, from the within-stratum spread of
  its computed terms), so s.e. = sqrt((Var_i(bound_i) + mean_i(timestep variance)) / n);
- at equal cost: the full bound takes T model evaluations per image and the stratified
  estimate K + 1 (L_0 and one per stratum), so the full bound affords n' = n (K + 1) / T;
- the same for the paired difference between two checkpoints (same images, same draws of
  t), which is what the report's claims use.

Then runs `estimate_bpd` itself at the chosen K on every test image and prints its s.e.
beside the prediction, as a check of the formula.

  .venv/bin/python benchmarks/nll_estimator.py --data data/prepared/test.npz \\
      checkpoints/linear-vlb checkpoints/linear-simple --strata 50 100 200

Writes benchmarks/results/nll_estimator.{json,md}. About 4 min a checkpoint on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_repro.data import load_arrays
from ddpm_repro.reporting.timing import machine
from ddpm_repro.sampling import Pretrained

HERE = Path(__file__).resolve().parent


def timestep_variance(vb: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """[N]: the variance that drawing one t per stratum adds to each image's estimate."""
    out = np.zeros(vb.shape[0])
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        size = hi - lo
        if size > 1:
            out += size**2 * vb[:, lo:hi].var(axis=1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=Path("data/prepared/test.npz"))
    parser.add_argument("--strata", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument(
        "--check", type=int, default=None, help="K to run estimate_bpd at (default: the middle --strata)"
    )
    parser.add_argument("--max-batch", type=int, default=1024)
    parser.add_argument("--spacing", nargs="+", default=["uniform", "geometric"])
    parser.add_argument("--check-spacing", default="geometric")
    parser.add_argument(
        "--work", type=Path, default=HERE / "nll_estimator_work", help="cache of the computed terms"
    )
    parser.add_argument("--results", type=Path, default=HERE / "results" / "nll_estimator")
    args = parser.parse_args()

    torch.manual_seed(0)
    test = load_arrays(args.data)
    x = test.to_tensor()
    n = len(x)
    full: dict[str, np.ndarray] = {}
    totals: dict[str, np.ndarray] = {}
    model_for: dict[str, Pretrained] = {}
    for ckpt in args.checkpoints:
        name = ckpt.name
        p = Pretrained.load(ckpt, use_ema=True)
        model_for[name] = p
        cache = args.work / f"{name}-step{p.step}.npz"
        if not cache.is_file():
            start = time.perf_counter()
            with torch.no_grad():
                out = p.diffusion.calc_bpd_loop(
                    p.model, x, generator=torch.Generator().manual_seed(0), max_batch=args.max_batch
                )
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, vb=out["vb"].double().numpy(), total=out["total_bpd"].double().numpy())
            print(
                f"{name}: every term for {n} images in {time.perf_counter() - start:.0f} s", file=sys.stderr
            )
        with np.load(cache) as saved:
            full[name], totals[name] = saved["vb"], saved["total"]

    T = next(iter(model_for.values())).diffusion.num_timesteps
    rows = []
    pairs = [(a, b) for i, a in enumerate(full) for b in list(full)[i + 1 :]]
    for spacing, K in [(sp, K) for sp in args.spacing for K in args.strata]:
        edges = next(iter(model_for.values())).diffusion.bound_strata(K, spacing).numpy()
        n_equal = n * (K + 1) / T  # images the full bound scores at the same cost
        for name in full:
            image_var = totals[name].var(ddof=1)
            t_var = timestep_variance(full[name], edges).mean()
            rows.append({
                "what": name, "strata": K, "spacing": spacing,
                "se_stratified": math.sqrt((image_var + t_var) / n),
                "se_full_equal_cost": math.sqrt(image_var / n_equal),
                "full_images_equal_cost": round(n_equal, 1),
                "timestep_share": t_var / (image_var + t_var),
            })  # fmt: skip
        for a, b in pairs:
            diff = totals[a] - totals[b]
            # Same t draws in both cells: the timestep noise of the difference is that of
            # the per-term difference within each stratum.
            t_var = timestep_variance(full[a] - full[b], edges).mean()
            rows.append({
                "what": f"{a} - {b}", "strata": K, "spacing": spacing,
                "se_stratified": math.sqrt((diff.var(ddof=1) + t_var) / n),
                "se_full_equal_cost": math.sqrt(diff.var(ddof=1) / n_equal),
                "full_images_equal_cost": round(n_equal, 1),
                "timestep_share": t_var / (diff.var(ddof=1) + t_var),
            })  # fmt: skip

    check_k = args.check or args.strata[len(args.strata) // 2]
    checks = []
    for name, p in model_for.items():
        start = time.perf_counter()
        with torch.no_grad():
            est = p.diffusion.estimate_bpd(
                p.model,
                x,
                check_k,
                generator=torch.Generator().manual_seed(1),
                max_batch=args.max_batch,
                spacing=args.check_spacing,
            )
        total = est["total_bpd"].double().numpy()
        checks.append({
            "what": name, "strata": check_k, "spacing": args.check_spacing,
            "seconds": round(time.perf_counter() - start, 1),
            "nll_stratified": float(total.mean()),
            "se_stratified_measured": float(total.std(ddof=1) / math.sqrt(n)),
            "nll_full": float(totals[name].mean()), "se_full": float(totals[name].std(ddof=1) / math.sqrt(n)),
        })  # fmt: skip

    result = {"machine": machine(), "test_images": n, "T": T, "rows": rows, "checks": checks}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# NLL estimators at equal cost ({n} test images, T = {T}; {machine()})",
        "",
        "| checkpoint or paired difference | strata | K | s.e. stratified, all images "
        "| s.e. full bound, same cost | images the full bound affords | timestep share of the variance |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['what']} | {r['spacing']} | {r['strata']} | {r['se_stratified']:.4f} | "
        f"{r['se_full_equal_cost']:.4f} | {r['full_images_equal_cost']} | {r['timestep_share']:.2f} |"
        for r in rows
    ]
    lines += [
        "",
        f"Check: `estimate_bpd` with K = {check_k}, {args.check_spacing} strata, on every test image "
        "(another draw of t and x_t).",
        "",
        "| checkpoint | stratified NLL ± s.e. (measured) | full bound ± s.e. | seconds |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {c['what']} | {c['nll_stratified']:.3f} ± {c['se_stratified_measured']:.4f} | "
        f"{c['nll_full']:.3f} ± {c['se_full']:.4f} | {c['seconds']} |"
        for c in checks
    ]
    args.results.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
