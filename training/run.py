"""`python -m training.run --config run.yaml [key=value ...]`: fine-tune AnyCrowd LoRA and
AGF gates on Wan 2.1 VACE (single process, or `accelerate launch -m training.run ...`).

`--check` validates the configuration (keys, types, files, base checkpoint header) and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from anycrowd_core.errors import AnyCrowdError

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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
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

            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
        result = trainer.train()
        if trainer.accelerator.is_main_process:
            (out / "result.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
            print(json.dumps(result, indent=1))
    except AnyCrowdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
