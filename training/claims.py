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
  arrangement), AnyCrowd's training-layout claim.

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

from anycrowd_core.errors import AnyCrowdError

ARMS = {
    "no_warmup": [],
    "low_warmup": ["timesteps.warmup_alpha=1.0"],
    "high_warmup": ["timesteps.warmup_alpha=-1.0"],
    "shifted_rope": ["model.shifted_rope=true"],
    "no_reassign": ["data.scenes.cross_driven=0.0"],
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


def train(out: Path, arms: list[str], seeds: list[int], steps: int) -> None:
    for seed in seeds:  # seeds outermost: every arm gets a first seed before any gets a third
        for arm in arms:
            folder = run_dir(out, arm, seed)
            if (folder / "result.json").is_file():
                print(f"{folder.name}: done, skipped", flush=True)
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
            print(f"{folder.name}: evaluating ...", flush=True)
            with torch.no_grad():
                result = run_benchmark(COUNTS, scenes, ["cross"], ["tsda"], weights=str(weights_folder(folder)),
                                       log=lambda *_: None)
            (folder / "eval.json").write_text(json.dumps(result, indent=1))


def guidance_grid(out: Path, scenes: int) -> None:
    """The shipped miniature under plain sampling and cumulative guidance over a grid of
    scales -> <out>/guidance.json (tsda on the AnyCrowd model, masked+align on the base)."""
    import torch

    from anycrowd_core.bench.binding import Guidance, run_benchmark

    target = out / "guidance.json"
    results = json.loads(target.read_text()) if target.is_file() else {}
    grid = [Guidance()] + [Guidance("cumulative", p, r) for p in SCALES for r in SCALES]
    for g in grid:
        key = g.kind if g.kind == "cfg" else f"cumulative p{g.pose_scale:g} r{g.ref_scale:g}"
        if key in results:
            continue
        print(f"guidance {key} ...", flush=True)
        with torch.no_grad():
            results[key] = run_benchmark([2, 3, 4], scenes, ["cross"], ["tsda", "masked+align"], guidance=g,
                                         log=lambda *_: None)
        target.write_text(json.dumps(results, indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.claims", description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=["train", "evaluate", "guidance", "report"])
    p.add_argument("--out", default="runs/claims", help="folder of the runs")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--steps", type=int, default=500, help="training budget of every run")
    p.add_argument("--scenes", type=int, default=10, help="held-out scenes per character count (evaluate, guidance)")
    args = p.parse_args(argv)
    try:
        if args.steps < 10:
            raise AnyCrowdError(f"--steps {args.steps}: give at least 10 steps.")
        out = Path(args.out)
        if args.stage == "train":
            train(out, args.arms, args.seeds, args.steps)
        elif args.stage == "evaluate":
            evaluate(out, args.arms, args.seeds, args.scenes)
        elif args.stage == "guidance":
            guidance_grid(out, args.scenes)
    except AnyCrowdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
