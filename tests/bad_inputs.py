"""The bad-input audit: every class of wrong input the CLIs and the core should answer with a
clear error (or a documented, sensible behaviour), run and classified.

`python tests/bad_inputs.py` prints one row per case with its outcome and the counts
(docs/reliability.md holds them); tests/test_bad_inputs.py asserts each row. Outcomes:

- clear:     the package's error (AnyCrowdError, or a CLI's `error:` line and exit code 2,
             or argparse's usage error) whose message contains what the case expects;
- wrong:     an error of that kind, but its message misses what it should say;
- traceback: any other exception escaped (a raw Python traceback for the user);
- accepted:  no error at all.

A case expects `error` (clear) or `ok` (accepted: the documented behaviour for that input).
Node inputs are audited in tests/test_nodes_bad_inputs.py and the syntaxes are fuzzed in
tests/test_fuzz_inputs.py; this list covers the CLIs, the trainer and the core API.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from anycrowd_core.errors import AnyCrowdError  # noqa: E402


@dataclass
class Case:
    """`run(tmp)` performs the input in a fresh temporary folder; `expect` is error | ok;
    `says` is a regular expression the error message must match (error cases)."""

    name: str
    area: str
    run: Callable[[Path], object]
    expect: str = "error"
    says: str = ""


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def cli(main: Callable, argv: list[str]) -> CliResult:
    """Run a CLI's main(argv) in-process; argparse's SystemExit becomes its exit code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
    return CliResult(int(code or 0), out.getvalue(), err.getvalue())


def classify(case: Case, tmp: Path) -> tuple[str, str]:
    """(outcome, message) of one case."""
    try:
        result = case.run(tmp)
    except AnyCrowdError as e:
        return _clear_or_wrong(case, str(e))
    except Exception as e:  # noqa: BLE001 - the audit's point: anything else is a traceback
        return "traceback", f"{type(e).__name__}: {e}"[:300]
    if isinstance(result, CliResult) and result.code != 0:
        if "Traceback" in result.err:
            return "traceback", result.err.strip().splitlines()[-1][:300]
        return _clear_or_wrong(case, result.err.strip())
    return "accepted", ""


def _clear_or_wrong(case: Case, message: str) -> tuple[str, str]:
    if case.says and not re.search(case.says, message, re.S):
        return "wrong", message[:300]
    return "clear", message[:300]


def passes(case: Case, outcome: str) -> bool:
    return outcome == ("clear" if case.expect == "error" else "accepted")


# ---------------------------------------------------------------- the cases


def demo(*args: str):
    def run(tmp: Path):
        from anycrowd_core.demo import main

        argv = list(args)
        if "--out" not in argv:
            argv = ["--out", str(tmp / "demo"), *argv]
        return cli(main, [a.replace("{tmp}", str(tmp)) for a in argv])
    return run


TINY_TRAIN = ["model.base=random-tiny", "data.source=scenes", "data.scenes.height=48", "data.scenes.widths=[64]",
              "data.scenes.frames=[5]", "data.scenes.max_characters=2", "data.procedural_samples=2", "lora.rank=4",
              "train.progress=false", "train.tensorboard=false", "train.max_steps=2"]


def train(*args: str, tiny: bool = True):
    def run(tmp: Path):
        from training.run import main

        argv = [a.replace("{tmp}", str(tmp)) for a in args]
        if tiny:
            argv = [*TINY_TRAIN, f"output.dir={tmp / 'run'}", *argv]
        return cli(main, argv)
    return run


def resume_after_damage(file: str, damage: Callable[[Path], None], explicit: bool = False):
    """Train 2 steps with a checkpoint per step, damage `file` of the newest, resume."""
    def run(tmp: Path):
        from training.run import main

        first = cli(main, [*TINY_TRAIN, f"output.dir={tmp}", "train.checkpoint_every=1"])
        assert first.code == 0, first.err
        newest = tmp / "checkpoints" / "step-00000002"
        damage(newest / file)
        where = str(newest) if explicit else "latest"
        return cli(main, [*TINY_TRAIN, f"output.dir={tmp}", "train.checkpoint_every=1", "train.max_steps=3",
                          "--resume", where])
    return run


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])


def manifest(tmp: Path) -> Path:
    from training import procedural_dataset

    raw = tmp / "raw"
    procedural_dataset.generate(raw, clips=1, frames=5, height=64, width=96, seed=0, min_characters=1, max_characters=1)
    return raw / procedural_dataset.MANIFEST


def prepare(*args: str):
    def run(tmp: Path):
        from training.prepare import main

        argv = ["--manifest", str(manifest(tmp)), "--codec", "test", "--random-text-dim", "8", "--no-progress",
                "--width", "96", "--height", "64", "--frames", "5"]
        extra = [a.replace("{tmp}", str(tmp)) for a in args]
        for flag in ("--width", "--height", "--frames"):  # the case's own value wins
            if flag in extra and flag in argv:
                i = argv.index(flag)
                del argv[i : i + 2]
        if "--out" not in extra:
            extra = ["--out", str(tmp / "cache"), *extra]
        return cli(main, argv + extra)
    return run


def a_file(tmp: Path) -> str:
    path = tmp / "a_file"
    path.write_text("not a folder")
    return str(path)


def scene_inputs(**changes):
    from anycrowd_core.pipeline import AnimationInputs
    from anycrowd_core.scenes import make_scene

    scene = make_scene(num_characters=2, num_frames=5, height=48, width=64, seed=0, scenario="crossing")
    fields = dict(reference_image=scene.reference_image.clone(), reference_masks=scene.reference_masks,
                  control_video=scene.pose_video.clone(), track_boxes=scene.track_boxes.clone())
    fields.update(changes)
    return AnimationInputs(**fields)


def animate_with(inputs=None, **settings):
    def run(tmp: Path):
        from anycrowd_core.codec import TestCodec
        from anycrowd_core.pipeline import SamplingSettings, animate
        from anycrowd_core.wan import WanVaceConfig, random_wan_vace

        model = random_wan_vace(WanVaceConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, vace_layers=1,
                                              text_dim=8, freq_dim=32), 0)
        text = torch.zeros(1, 4, 8)
        chosen = dict(steps=2, cfg=1.0)
        chosen.update(settings)
        return animate(model, TestCodec(), inputs() if inputs else scene_inputs(), text, text,
                       SamplingSettings(**chosen))
    return run


def with_nan(name: str):
    def make():
        inputs = scene_inputs()
        getattr(inputs, name)[0, 0, 0] = float("nan")
        return inputs
    return make


def with_boxes(edit):
    def make():
        inputs = scene_inputs()
        edit(inputs.track_boxes)
        return inputs
    return make


def outside(boxes):
    boxes[1] = torch.tensor([500.0, 500.0, 520.0, 540.0])


def infinite(boxes):
    boxes[0, 2] = torch.tensor([0.0, 0.0, math.inf, 20.0])


def sample_with(sigmas: list[float]):
    def run(tmp: Path):
        from anycrowd_core.sampling import sample

        return sample(lambda x, s: x * 0, (1, 4), torch.tensor(sigmas), seed=0)
    return run


def write(kind: str, value=float("nan"), fps=8):
    def run(tmp: Path):
        from anycrowd_core.video_io import write_mp4, write_png

        if kind == "mp4":
            frames = torch.zeros(3, 16, 16, 3)
            frames[1] = value
            return write_mp4(frames, tmp / "v.mp4", fps=fps)
        image = torch.zeros(16, 16, 3)
        image[0, 0] = value
        return write_png(image, tmp / "i.png")
    return run


def call(fn: Callable[[], object]):
    def run(tmp: Path):
        return fn()
    return run


def _frames(n):
    from anycrowd_core.codec import check_frame_count

    return lambda: check_frame_count(n)


def _boxes(text):
    from anycrowd_core.boxes import parse_boxes

    return lambda: parse_boxes(text, 9, (128, 192))


def _binding(text):
    from anycrowd_core.pose.binding import check_binding_syntax

    return lambda: check_binding_syntax(text)


def _settings(**kw):
    from anycrowd_core.pipeline import SamplingSettings

    return lambda: SamplingSettings(**kw).validate()


def gates_with_nan(tmp: Path):
    from anycrowd_core.attention import GateBank
    from anycrowd_core.wan import WanVaceConfig
    from training.export import save_gates

    gates = GateBank(32, 2, 1, 8)
    with torch.no_grad():
        next(gates.parameters()).fill_(float("nan"))
    return save_gates(tmp / "gates.safetensors", gates,
                      WanVaceConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, vace_layers=1))


CASES: list[Case] = [
    # ---- demo CLI
    Case("demo --seed -1", "demo", demo("--seed", "-1"), says="--seed"),
    Case("demo --seed 2**64", "demo", demo("--seed", str(2**64)), says="--seed"),
    Case("demo --out is a file", "demo", lambda t: demo("--out", a_file(t))(t), says="--out.*file"),
    Case("demo --out /proc (not writable)", "demo", demo("--out", "/proc"), says="--out"),
    Case("demo --fps 0", "demo", demo("--fps", "0"), says="--fps"),
    Case("demo --fps -5", "demo", demo("--fps", "-5"), says="--fps"),
    Case("demo --steps 0", "demo", demo("--steps", "0"), says="--steps"),
    Case("demo --cfg nan", "demo", demo("--model", "random", "--cfg", "nan"), says="--cfg"),
    Case("demo --cfg inf", "demo", demo("--model", "random", "--cfg", "inf"), says="--cfg"),
    Case("demo --shift nan", "demo", demo("--model", "random", "--shift", "nan"), says="shift"),
    Case("demo --shift 0", "demo", demo("--model", "random", "--shift", "0"), says="shift"),
    Case("demo --frames 0", "demo", demo("--frames", "0"), says="--frames"),
    Case("demo --frames 10", "demo", demo("--frames", "10"), says="--frames 9 or --frames 13"),
    Case("demo --width 100", "demo", demo("--width", "100"), says="--width"),
    Case("demo --height 0", "demo", demo("--height", "0"), says="--height"),
    Case("demo --characters 0", "demo", demo("--characters", "0"), says="--characters"),
    Case("demo --characters 50", "demo", demo("--characters", "50"), says="--characters"),
    Case("demo --binding 0,x,1", "demo", demo("--binding", "0,x,1"), says="--binding"),
    Case("demo --binding 5,0,1", "demo", demo("--binding", "5,0,1"), says="--binding"),
    Case("demo --scenario nope", "demo", demo("--scenario", "nope"), says="scenario"),
    # ---- training CLI: configuration
    Case("train optim.lr=nan", "train", train("optim.lr=nan"), says="optim.lr.*finite"),
    Case("train optim.lr=inf", "train", train("optim.lr=inf"), says="optim.lr"),
    Case("train optim.lr=1e309", "train", train("optim.lr=1e309"), says="optim.lr"),
    Case("train optim.lr=-1", "train", train("optim.lr=-1"), says="optim.lr"),
    Case("train optim.betas=[0.9,nan]", "train", train("optim.betas=[0.9,nan]"), says="optim.betas"),
    Case("train loss.agf_weight=nan", "train", train("loss.agf_weight=nan"), says="agf_weight"),
    Case("train timesteps.shift=inf", "train", train("timesteps.shift=inf"), says="timesteps.shift"),
    Case("train optim.learning_rate=1e-4 (did-you-mean)", "train", train("optim.learning_rate=1e-4"),
         says="Did you mean 'optim.lr'"),
    Case("train learning_rate=1e-4 (did-you-mean)", "train", train("learning_rate=1e-4"), says="optim.lr"),
    Case("train train.max_steps=0", "train", train("train.max_steps=0"), says="max_steps"),
    Case("train train.max_steps=1e309", "train", train("train.max_steps=1e309"), says="max_steps"),
    Case("train lora.rank=0", "train", train("lora.rank=0"), says="lora.rank"),
    Case("train data.scenes.frames=[10]", "train", train("data.scenes.frames=[10]"), says=r"9 or 13"),
    Case("train data.scenes.frames=[0]", "train", train("data.scenes.frames=[0]"), says=r"frames"),
    Case("train train.mixed_precision=fp8", "train", train("train.mixed_precision=fp8"), says="mixed_precision"),
    Case("train model.base=missing.safetensors", "train", train("model.base={tmp}/missing.safetensors"),
         says="missing.safetensors"),
    Case("train --config missing.yaml", "train", train("--config", "{tmp}/missing.yaml"), says="--config"),
    Case("train output.dir is a file", "train", lambda t: train(f"output.dir={a_file(t)}")(t), says="output.dir"),
    Case("train output.dir=/proc", "train", train("output.dir=/proc"), says="output.dir"),
    Case("train --stop-after 0", "train", train("--stop-after", "0"), says="--stop-after"),
    Case("train --stop-after -1", "train", train("--stop-after", "-1"), says="--stop-after"),
    # ---- training CLI: running
    Case("train diverging (optim.lr=1e30): no NaN adapter", "train", train("optim.lr=1e30", "optim.max_grad_norm=null"),
         says="stopped at step .*optim.lr"),
    Case("train --resume followed by key=value", "train",
         lambda t: (train()(t), train("--resume", "train.max_steps=3")(t))[1], expect="ok"),
    Case("resume latest: truncated trainable.safetensors falls back", "train",
         resume_after_damage("trainable.safetensors", truncate), expect="ok"),
    Case("resume latest: corrupt optimizer.pt falls back", "train",
         resume_after_damage("optimizer.pt", lambda p: p.write_bytes(b"junk")), expect="ok"),
    Case("resume latest: corrupt state.json falls back", "train",
         resume_after_damage("state.json", lambda p: p.write_text("{")), expect="ok"),
    Case("resume latest: missing rng_0.pt falls back", "train",
         resume_after_damage("rng_0.pt", lambda p: p.unlink()), expect="ok"),
    Case("resume PATH: truncated trainable.safetensors", "train",
         resume_after_damage("trainable.safetensors", truncate, explicit=True), says="trainable.safetensors"),
    Case("resume PATH: missing rng_0.pt", "train",
         resume_after_damage("rng_0.pt", lambda p: p.unlink(), explicit=True), says="rng_0.pt is missing"),
    Case("export gates holding NaN", "train", gates_with_nan, says="non-finite"),
    # ---- prepare CLI
    Case("prepare --out is a file", "prepare", lambda t: prepare("--out", a_file(t))(t), says="--out"),
    Case("prepare --out /proc", "prepare", prepare("--out", "/proc"), says="--out"),
    Case("prepare --frames 10", "prepare", prepare("--frames", "10"), says=r"9 or 13"),
    Case("prepare --width 100", "prepare", prepare("--width", "100"), says="100"),
    Case("prepare --random-text-dim 0", "prepare", prepare("--random-text-dim", "0"), says="random-text-dim"),
    Case("prepare --manifest missing", "prepare",
         lambda t: cli(__import__("training.prepare", fromlist=["main"]).main,
                       ["--manifest", str(t / "no.jsonl"), "--out", str(t / "c"), "--codec", "test",
                        "--random-text-dim", "8"]), says="manifest"),
    # ---- core API
    Case("sample(): sigmas upward from 0", "core", sample_with([0.0, 0.5, 1.0]), says="downwards"),
    Case("sample(): sigmas with nan", "core", sample_with([1.0, float("nan"), 0.0]), says="finite"),
    Case("sample(): negative sigma", "core", sample_with([1.0, 0.5, -0.1]), says="finite and >= 0"),
    Case("write_mp4: NaN frames (was a black video)", "core", write("mp4"), says="NaN"),
    Case("write_mp4: fps nan", "core", write("mp4", 0.5, fps=float("nan")), says="fps"),
    Case("write_png: NaN pixels", "core", write("png"), says="NaN"),
    Case("animate: NaN in the reference image", "core", animate_with(with_nan("reference_image")),
         says="reference image"),
    Case("animate: NaN in the control video", "core", animate_with(with_nan("control_video")), says="control video"),
    Case("animate: cfg nan", "core", animate_with(cfg=float("nan")), says="cfg"),
    Case("animate: vace_strength inf", "core", animate_with(vace_strength=float("inf")), says="vace_strength"),
    Case("animate: shift 0", "core", animate_with(shift=0.0), says="shift"),
    Case("animate: a bound track's boxes never meet the frame", "core", animate_with(with_boxes(outside)),
         says="track 1 .*identity 1"),
    Case("animate: an infinite box", "core", animate_with(with_boxes(infinite)), says="track_boxes"),
    Case("SamplingSettings(seed=-1)", "core", call(_settings(seed=-1)), says="seed"),
    Case("check_frame_count(0): message", "core", call(_frames(0)), says=r"^(?!.*\b1 or 1\b)"),
    Case("check_frame_count(-7)", "core", call(_frames(-7)), says=r"^(?!.*-\d+ or)"),
    Case("boxes keyframe inf", "core", call(_boxes("0: 0,0,inf,10")), says="inf|finite"),
    Case("boxes keyframe nan", "core", call(_boxes("0: 0,0,nan,10")), says="nan|finite"),
    Case("boxes keyframe 1e309", "core", call(_boxes("0: 0,0,1e309,10")), says="1e309|finite"),
    Case("boxes keyframe 9e99 frame index", "core", call(_boxes("9e99: 0,0,10,10")), says="frame|keyframe"),
    Case("binding syntax 'A='", "core", call(_binding("A=")), says="A="),
    Case("binding syntax '=1'", "core", call(_binding("=1")), says="=1"),
]


def run_all(cases: list[Case] = CASES) -> list[tuple[Case, str, str]]:
    rows = []
    for case in cases:
        with tempfile.TemporaryDirectory() as tmp:
            outcome, message = classify(case, Path(tmp))
        rows.append((case, outcome, message))
    return rows


def main() -> int:
    torch.set_num_threads(1)
    rows = run_all()
    counts: dict[str, int] = {}
    for case, outcome, message in rows:
        counts[outcome] = counts.get(outcome, 0) + 1
        mark = "ok " if passes(case, outcome) else "BAD"
        print(f"{mark} {case.area:8s} {outcome:9s} {case.name}" + (f"\n      {message[:160]}" if message else ""))
    good = sum(passes(c, o) for c, o, _ in rows)
    print(f"\n{len(rows)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
          + f"; as expected: {good}/{len(rows)}")
    return 0 if good == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
