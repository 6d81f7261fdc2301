"""`python -m training.run --config run.yaml [key=value ...]`: fine-tune AnyCrowd LoRA and
AGF gates on Wan 2.1 VACE (single process, or `accelerate launch -m training.run ...`).

`--check` validates the configuration (keys, types, files, base checkpoint header) and exits.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from anycrowd_core.errors import AnyCrowdError, command_main
from anycrowd_core.files import write_text_atomic

from .config import load_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.run",
        description="Fine-tune AnyCrowd LoRA + AGF gates on Wan 2.1 VACE (docs/training.md).",
    )
    p.add_argument("--config", help="run YAML (e.g. training/configs/tiny.yaml); defaults apply to missing keys")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides with dotted keys, e.g. optim.lr=2e-4")
    p.add_argument("--check", action="store_true", help="validate the configuration only, then exit")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="PATH|latest",
                   help="resume from a checkpoint folder or the newest one in output.dir/checkpoints")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="stop (with a checkpoint) after this step; the schedule still spans train.max_steps")
    return p


def _resume_before_overrides(argv: list[str]) -> list[str]:
    """`--resume` takes an optional PATH, so in `--resume train.max_steps=20` argparse would
    read the override as the path: a bare `--resume` followed by key=value means latest."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        nxt = out[i + 1]
        if arg == "--resume" and "=" in nxt and not nxt.startswith("-") and not Path(nxt).exists():
            out.insert(i + 1, "latest")
            break
    return out


def resume_command(argv: list[str], checkpoint: Path) -> str:
    """The command line that continues this run from `checkpoint` to train.max_steps (same
    config and overrides)."""
    args = build_parser().parse_intermixed_args(_resume_before_overrides(argv))
    parts = ["python -m training.run"]
    if args.config:
        parts += ["--config", shlex.quote(args.config)]
    parts += [shlex.quote(o) for o in args.overrides]  # --stop-after is left out: it would be reached already
    parts += ["--resume", shlex.quote(str(checkpoint))]
    return " ".join(parts)


@command_main
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_intermixed_args(_resume_before_overrides(argv))
    trainer = None
    try:
        if args.stop_after is not None and args.stop_after < 1:
            raise AnyCrowdError(f"--stop-after {args.stop_after}: give the step (1 or more) to stop after; "
                                "to validate the configuration without training use --check.")
        cfg = load_config(args.config, args.overrides)
        if args.check:
            from .config import check_base

            wan = check_base(cfg.model)
            print(f"config OK (hash {cfg.hash()}): base {cfg.model.base} -> dim {wan.dim}, {wan.num_layers} blocks, "
                  f"{wan.vace_layers} VACE blocks; LoRA rank {cfg.lora.rank} on {', '.join(cfg.lora.targets)} "
                  f"({', '.join(cfg.lora.branches)}); attention {cfg.model.attention}/{cfg.model.agf}")
            return 0
        from .trainer import Trainer

        trainer = Trainer(cfg, resume=args.resume, stop_after=args.stop_after)
        trainer.setup()
        out = Path(cfg.output.dir)
        if trainer.accelerator.is_main_process:
            import yaml

            write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        result = trainer.train()
        if trainer.accelerator.is_main_process:
            write_text_atomic(out / "result.json", json.dumps(result, indent=1))
            print(json.dumps(result, indent=1))
    except KeyboardInterrupt as exc:
        from .checkpoint import list_checkpoints
        from .trainer import TrainingInterrupted

        if isinstance(exc, TrainingInterrupted):
            print(f"\ninterrupted: step {exc.step} is saved in {exc.checkpoint}. Continue with:\n  "
                  f"{resume_command(argv, exc.checkpoint)}", file=sys.stderr)
            return 130
        found = list_checkpoints(trainer.ckpt_dir) if trainer is not None and hasattr(trainer, "ckpt_dir") else []
        if found:
            print(f"\nstopped at once: the last complete checkpoint is {found[-1]}. Continue with:\n  "
                  f"{resume_command(argv, found[-1])}", file=sys.stderr)
        else:
            print("\nstopped at once, before any checkpoint was written: nothing to resume.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
