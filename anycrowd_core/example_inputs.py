"""Example input files for the ComfyUI workflows: `python -m anycrowd_core.example_inputs --out ComfyUI/input`.

Writes a procedural multi-character scene in the file names the workflows in workflows/ load:
the reference picture, one white-on-black mask per character, the rendered pose video, the
driving video itself (for the pose-extractor workflow), the boxes text for AnyCrowd IILR
Encode, and the SCAIL-2 style colour-coded masks of the reference and of the video (for the
identity-masks workflow). Stick figures, not people: enough to check a workflow end to end on
your machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .boxes import format_boxes
from .pose.identity_masks_render import scail2_colour_masks
from .errors import command_main
from .scenes import make_scene
from .video_io import write_mp4, write_png
from .files import ensure_output_dir


def write_example_inputs(out: Path, characters: int = 2, frames: int = 81, height: int = 480,
                         width: int = 832, seed: int = 0, scenario: str = "crossing") -> list[Path]:
    """Write the example files into `out`; returns their paths."""
    scene = make_scene(num_characters=characters, num_frames=frames, height=height, width=width,
                       seed=seed, scenario=scenario)
    out = ensure_output_dir(out, "--out")
    written = [write_png(scene.reference_image, out / "anycrowd_reference.png")]
    for i, mask in enumerate(scene.reference_masks):
        written.append(write_png(mask.float()[..., None].expand(-1, -1, 3), out / f"anycrowd_mask_{i}.png"))
    written.append(write_mp4(scene.pose_video, out / "anycrowd_pose.mp4", fps=16))
    written.append(write_mp4(scene.video, out / "anycrowd_driving.mp4", fps=16))
    written.append(write_png(scail2_colour_masks(scene.reference_masks[:, None], background=1.0)[0],
                             out / "anycrowd_reference_mask.png"))
    written.append(write_mp4(scail2_colour_masks(scene.track_masks), out / "anycrowd_identity_masks.mp4", fps=16))
    boxes = out / "anycrowd_boxes.txt"
    boxes.write_text(
        "# paste into AnyCrowd IILR Encode's 'boxes' (pixels of the pose video; one line per character)\n"
        + format_boxes(scene.track_boxes, every=8) + "\n"
    )
    written.append(boxes)
    return written


@command_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anycrowd_core.example_inputs", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder to write into, e.g. ComfyUI/input")
    p.add_argument("--characters", type=int, default=2)
    p.add_argument("--frames", type=int, default=81, help="4n+1")
    p.add_argument("--height", type=int, default=480, help="multiple of 16")
    p.add_argument("--width", type=int, default=832, help="multiple of 16")
    p.add_argument("--scenario", default="crossing", help="crossing, exit_reenter or static")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    paths = write_example_inputs(Path(args.out), args.characters, args.frames, args.height, args.width,
                                 args.seed, args.scenario)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
