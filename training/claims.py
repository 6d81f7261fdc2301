"""`python -m training.claims train|evaluate|report --out runs/claims`: the controlled
fine-tunes behind docs/claims.md. Each arm is the AnyCrowd-Mini recipe
(training/configs/mini_anycrowd.yaml) on the shipped miniature base, with one switch changed,
trained for the same budget with the same seeds:

- `no_warmup`: the recipe itself (the control);
- `low_warmup`: RealisDance-DiT's low-noise warmup over the first half of the budget;
- `high_warmup`: the mirrored, high-noise warmup (warmup_alpha = -1), the control for
  "low noise first" against "any skew first";
- `shifted_rope`: RealisDance-DiT's shifted RoPE for the reference frames;
- `no_reassign`: no stochastic reassignment (every reference in the scene's own
  arrangement), AnyCrowd's training-layout claim;
- `ref_dropout`: 20 % of samples with neutral references, so the model knows the "pose
  only" condition that cumulative guidance evaluates (the recipe has no reference dropout).

`train` runs what is missing (a finished run is skipped, so the queue resumes), `evaluate`
scores each run with the binding benchmark, `guidance` measures cumulative guidance against
plain sampling on the shipped miniature, `report` prints the per-arm table (mean and spread
over seeds) and draws the loss curves.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from anycrowd_core.errors import AnyCrowdError, command_main

ARMS = {
    "no_warmup": [],
    "low_warmup": ["timesteps.warmup_alpha=1.0"],
    "high_warmup": ["timesteps.warmup_alpha=-1.0"],
    "shifted_rope": ["model.shifted_rope=true"],
    "no_reassign": ["data.scenes.cross_driven=0.0"],
    "ref_dropout": ["conditioning.reference_dropout=0.2"],
}
RECIPE = Path(__file__).resolve().parent / "configs" / "mini_anycrowd.yaml"


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / f"{arm}-s{seed}"


def train_overrides(arm: str, seed: int, steps: int, folder: Path) -> list[str]:
    from anycrowd_core.mini.model import BASE_FILE, WEIGHTS_DIR

    extra = list(ARMS[arm])
    if "warmup" in arm and arm != "no_warmup":
        extra.append(f"timesteps.warmup_steps={steps // 2}")
    return [
        f"model.base={WEIGHTS_DIR / BASE_FILE}", f"train.max_steps={steps}", f"train.seed={seed}",
        "train.log_every=10", f"train.val_every={max(steps // 10, 1)}", "train.checkpoint_every=0",
        "train.progress=false", f"optim.warmup_steps={max(steps // 30, 1)}", f"output.dir={folder}", *extra,
    ]


def _claim(folder: Path, marker: str = ".claimed") -> bool:
    """Atomically mark `folder` as taken by this worker (several `train` or `evaluate`
    workers may share one --out, each with its own thread); False if another holds it."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(folder / marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def train(out: Path, arms: list[str], seeds: list[int], steps: int) -> None:
    for seed in seeds:  # seeds outermost: every arm gets a first seed before any gets a third
        for arm in arms:
            folder = run_dir(out, arm, seed)
            if (folder / "result.json").is_file():
                print(f"{folder.name}: done, skipped", flush=True)
                continue
            if not _claim(folder):
                print(f"{folder.name}: being trained by another worker, skipped", flush=True)
                continue
            started = time.perf_counter()
            print(f"{folder.name}: training {steps} steps ...", flush=True)
            cmd = [sys.executable, "-m", "training.run", "--config", str(RECIPE), *train_overrides(arm, seed, steps, folder)]
            code = subprocess.call(cmd, stdout=subprocess.DEVNULL)
            if code != 0:
                raise AnyCrowdError(f"{folder.name}: training failed (exit {code}); run it by hand: {' '.join(cmd)}")
            print(f"{folder.name}: {time.perf_counter() - started:.0f} s", flush=True)


COUNTS = [2, 3, 4, 6]  # 6: more characters than any training scene (count generalisation)
SCALES = [1.0, 1.5, 2.0]


def weights_folder(folder: Path) -> Path:
    """The miniature's three files for a run: the shipped base, the run's LoRA and gates."""
    from anycrowd_core.mini.model import BASE_FILE, GATES_FILE, LORA_FILE, WEIGHTS_DIR

    weights = folder / "weights"
    weights.mkdir(exist_ok=True)
    for name, source in ((BASE_FILE, WEIGHTS_DIR / BASE_FILE), (LORA_FILE, folder / LORA_FILE),
                         (GATES_FILE, folder / GATES_FILE)):
        link = weights / name
        if not link.exists():
            link.symlink_to(source.resolve())
    return weights


def evaluate(out: Path, arms: list[str], seeds: list[int], scenes: int) -> None:
    """Binding benchmark (tsda, cross-driven) of every finished run -> <run>/eval.json."""
    import torch

    from anycrowd_core.bench.binding import run_benchmark

    for seed in seeds:
        for arm in arms:
            folder = run_dir(out, arm, seed)
            if not (folder / "result.json").is_file() or (folder / "eval.json").is_file():
                continue
            if not _claim(folder, ".evaluating"):
                continue
            print(f"{folder.name}: evaluating ...", flush=True)
            with torch.no_grad():
                result = run_benchmark(COUNTS, scenes, ["cross"], ["tsda"], weights=str(weights_folder(folder)),
                                       log=lambda *_: None)
            (folder / "eval.json").write_text(json.dumps(result, indent=1))


def guidance_grid(out: Path, scenes: int, run: str | None = None) -> None:
    """The miniature under plain sampling and cumulative guidance over a grid of scales ->
    <out>/guidance.json (the shipped miniature: tsda on the AnyCrowd model, masked+align on
    the base) or <out>/<run>/guidance.json (a run's adapter, tsda, a smaller grid)."""
    import torch

    from anycrowd_core.bench.binding import Guidance, run_benchmark

    if run is None:
        target, weights, modes = out / "guidance.json", None, ["tsda", "masked+align"]
        grid = [Guidance()] + [Guidance("cumulative", p, r) for p in SCALES for r in SCALES]
    else:
        folder = out / run
        if not (folder / "result.json").is_file():
            raise AnyCrowdError(f"{folder} is not a finished run: train it first.")
        target, weights, modes = folder / "guidance.json", str(weights_folder(folder)), ["tsda"]
        grid = [Guidance()] + [Guidance("cumulative", p, r) for p, r in ((1.0, 1.5), (1.5, 1.0), (1.5, 1.5), (1.0, 2.0))]
    results = json.loads(target.read_text()) if target.is_file() else {}
    for g in grid:
        key = g.kind if g.kind == "cfg" else f"cumulative p{g.pose_scale:g} r{g.ref_scale:g}"
        if key in results:
            continue
        print(f"guidance {key} ...", flush=True)
        with torch.no_grad():
            results[key] = run_benchmark([2, 3, 4], scenes, ["cross"], modes, guidance=g, weights=weights,
                                         log=lambda *_: None)
        target.write_text(json.dumps(results, indent=1))


def _mean_spread(values: list[float]) -> str:
    import statistics

    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _losses(folder: Path, tag: str) -> list[tuple[int, float]]:
    from .loss_curve import read_scalars

    return read_scalars(folder, tag) if (folder / "tensorboard").is_dir() else []


def _mean_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Mean over runs at the steps every run logged."""
    if not curves:
        return []
    common = sorted(set.intersection(*[{s for s, _ in c} for c in curves]))
    maps = [dict(c) for c in curves]
    return [(s, sum(m[s] for m in maps) / len(maps)) for s in common]


def report(out: Path, arms: list[str], seeds: list[int], figures: Path | None) -> str:
    """Markdown tables: per arm, binding accuracy (tsda, cross) per character count and the
    final validation loss, mean ± standard deviation over the seeds; the guidance grid."""
    lines = ["| arm | runs | " + " | ".join(f"binding, {c} chars" for c in COUNTS) + " | bleeding (2-4) | "
             "silhouette IoU (2-4) | final val loss | train loss, last 50 steps |",
             "| --- | --- | " + " | ".join("---" for _ in COUNTS) + " | --- | --- | --- | --- |"]
    curves, val_curves = {}, {}
    for arm in arms:
        per_count = {c: [] for c in COUNTS}
        bleed, iou, val, tail, runs = [], [], [], [], 0
        arm_curves, arm_val = [], []
        for seed in seeds:
            folder = run_dir(out, arm, seed)
            if not (folder / "eval.json").is_file():
                continue
            runs += 1
            rows = json.loads((folder / "eval.json").read_text())["rows"]
            for r in rows:
                per_count[r["characters"]].append(r["binding_accuracy"])
            small = [r for r in rows if r["characters"] <= 4]
            bleed.append(sum(r["bleeding"] for r in small) / len(small))
            iou.append(sum(r["silhouette_iou"] for r in small) / len(small))
            v = _losses(folder, "val/loss")
            if v:
                val.append(v[-1][1])
                arm_val.append(v)
            t = _losses(folder, "train/loss")
            if t:
                tail.append(sum(x for _, x in t[-5:]) / len(t[-5:]))
                arm_curves.append(t)
        curves[arm], val_curves[arm] = _mean_curve(arm_curves), _mean_curve(arm_val)
        lines.append(f"| {arm} | {runs} | " + " | ".join(_mean_spread(per_count[c]) for c in COUNTS)
                     + f" | {_mean_spread(bleed)} | {_mean_spread(iou)} | {_mean_spread(val)} | {_mean_spread(tail)} |")
    text = "\n".join(lines)
    for guidance_file in [out / "guidance.json"] + sorted(out.glob("*/guidance.json")):
        grid = json.loads(guidance_file.read_text())
        source = "shipped miniature" if guidance_file.parent == out else guidance_file.parent.name
        rows = [f"guidance on the {source}:", "",
                "| guidance | mode | binding, 2 / 3 / 4 chars | bleeding | silhouette IoU | background PSNR |",
                "| --- | --- | --- | --- | --- | --- |"]
        for key, result in grid.items():
            for mode in ("tsda", "masked+align"):
                mine = [r for r in result["rows"] if r["mode"] == mode]
                if not mine:
                    continue
                acc = " / ".join(f"{r['binding_accuracy']:.3f}" for r in mine)
                mean = {k: sum(r[k] for r in mine) / len(mine) for k in ("bleeding", "silhouette_iou", "background_psnr")}
                rows.append(f"| {key} | {mode} | {acc} | {mean['bleeding']:.3f} | {mean['silhouette_iou']:.3f} | "
                            f"{mean['background_psnr']:.1f} dB |")
        text += "\n\n" + "\n".join(rows)
    if figures is not None:
        import numpy as np

        from anycrowd_core.video_io import write_png

        from .loss_curve import draw_overlay

        groups = {"warmup": ("no_warmup", "low_warmup", "high_warmup"),
                  "shifted RoPE, reassignment, ref. dropout": ("no_warmup", "shifted_rope", "no_reassign", "ref_dropout")}
        rows = []
        for what, source, window in (("training loss (own sigma draws)", curves, 5),
                                     ("validation loss (fixed sigmas)", val_curves, 1)):
            rows.append(np.concatenate([
                draw_overlay(f"{what}, mean over seeds: {name}", {a: source[a] for a in group if source.get(a)},
                             window=window)
                for name, group in groups.items()], axis=1))
        write_png(np.concatenate(rows, axis=0), figures)
        text += f"\n\n(figure: {figures})"
    return text


@command_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.claims", description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=["train", "evaluate", "guidance", "report"])
    p.add_argument("--out", default="runs/claims", help="folder of the runs")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--steps", type=int, default=500, help="training budget of every run")
    p.add_argument("--scenes", type=int, default=10, help="held-out scenes per character count (evaluate, guidance)")
    p.add_argument("--figure", default=None, help="report: write the loss curves to this PNG")
    p.add_argument("--run", default=None, help="guidance: measure this run's adapter (e.g. ref_dropout-s1)")
    args = p.parse_args(argv)
    if args.steps < 10:
        raise AnyCrowdError(f"--steps {args.steps}: give at least 10 steps.")
    out = Path(args.out)
    if args.stage == "train":
        train(out, args.arms, args.seeds, args.steps)
    elif args.stage == "evaluate":
        evaluate(out, args.arms, args.seeds, args.scenes)
    elif args.stage == "guidance":
        guidance_grid(out, args.scenes, args.run)
    else:
        print(report(out, args.arms, args.seeds, Path(args.figure) if args.figure else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
