"""Binding benchmark: does each identity land on the track it is bound to?

`python -m anycrowd_core.bench.binding [--json]` renders held-out procedural scenes (seeds
from `anycrowd_core.mini.seeds.EVAL_SEED_BASE`, disjoint from every training seed), animates
them with AnyCrowd-Mini in each mode, and scores the frames against the scene's exact ground
truth. `evaluate_scene` scores any `ProceduralScene`. Metric definitions: docs/mini.md.

Modes (what runs): `global` (base model, plain VACE attention), `masked` (base, training-free),
`masked+align` (base, training-free, each identity first moved onto its bound track's
starting position), `tsda` / `tsda-mean` / `tsda-max` (AnyCrowd LoRA + gates; AGF gated /
mean / max), `tsda-holistic` (tsda fed one holistic group-photo latent instead of IILR).
Settings: `self` (reference in the scene's own arrangement, natural binding), `cross`
(identities at random non-overlapping positions, random permutation binding), `recast`
(own arrangement, permutation binding), `one_to_many` (two tracks per identity, cross).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from ..boxes import boxes_from_masks
from ..decoupler import DecoupledInstances, decouple_instances
from ..errors import AnyCrowdError, command_main
from ..mini.seeds import EVAL_SEED_BASE
from ..pipeline import AnimationInputs, SamplingSettings, animate
from ..pose.align import align_identities
from ..pose.types import PoseTracks
from ..scenes import LOWER, SCENARIOS, UPPER, ProceduralScene, make_scene

SETTINGS = ("self", "cross", "recast", "one_to_many")
# Eligibility of a track-frame for binding accuracy: mostly unoccluded, both tones visible.
MIN_UNOCCLUDED = 0.9
MIN_PART_PIXELS = 40
FOREGROUND_THRESHOLD = 0.1  # mean |frame - background| over an 8x8 block that counts as foreground
BLOCK = 8


@dataclass(frozen=True)
class ModeSpec:
    """How a benchmark mode runs: attention mode, AGF fusion, alignment, holistic reference."""

    attention: str
    agf: str = "gated"
    align: bool = False
    holistic: bool = False


MODE_SPECS = {
    "global": ModeSpec("global"),
    "masked": ModeSpec("masked"),
    "masked+align": ModeSpec("masked", align=True),
    "tsda": ModeSpec("tsda"),
    "tsda-mean": ModeSpec("tsda", agf="mean"),
    "tsda-max": ModeSpec("tsda", agf="max"),
    "tsda-holistic": ModeSpec("tsda", holistic=True),
}
MODES = tuple(MODE_SPECS)


# ---------------------------------------------------------------- appearance scoring


def part_colours(frames: Tensor, parts: Tensor) -> Tensor:
    """`[T, 2, 3]`: mean RGB of the UPPER and LOWER pixels per frame (0 where a part is not
    visible). frames `[T, H, W, 3]`, parts uint8 `[T, H, W]`."""
    out = torch.zeros(frames.shape[0], 2, 3)
    for j, part in enumerate((UPPER, LOWER)):
        m = (parts == part).float()  # [T, H, W]
        out[:, j] = torch.einsum("thw,thwc->tc", m, frames.float()) / m.flatten(1).sum(1).clamp(min=1)[:, None]
    return out


def eligible_track_frames(scene: ProceduralScene) -> Tensor:
    """bool `[M, T]`: track-frames scored for binding (in frame, >= 90 % unoccluded, both
    tones with >= 40 visible pixels)."""
    visible = scene.track_masks.flatten(2).sum(-1).float()
    unoccluded = visible >= MIN_UNOCCLUDED * scene.body_area.clamp(min=1)
    parts = torch.stack([(scene.track_parts == p).flatten(2).sum(-1) for p in (UPPER, LOWER)], -1)
    return unoccluded & (scene.body_area > 0) & (parts >= MIN_PART_PIXELS).all(-1)


def _box_overlaps(scene: ProceduralScene) -> Tensor:
    """bool `[M, T]`: the track's box intersects another present track's box."""
    b = scene.track_boxes
    present = ~torch.isnan(b).any(-1)
    x0 = torch.maximum(b[:, None, :, 0], b[None, :, :, 0])
    x1 = torch.minimum(b[:, None, :, 2], b[None, :, :, 2])
    y0 = torch.maximum(b[:, None, :, 1], b[None, :, :, 1])
    y1 = torch.minimum(b[:, None, :, 3], b[None, :, :, 3])
    inter = (x1 > x0) & (y1 > y0) & present[:, None] & present[None]
    inter &= ~torch.eye(b.shape[0], dtype=torch.bool)[:, :, None]
    return inter.any(1)


def _round_trip(codec, video: Tensor) -> Tensor:
    return codec.decode(codec.encode(video))


@dataclass
class CodecTruth:
    """The ground truth of a scene and binding after the codec's round trip, what every
    metric compares with (computed once per scene and binding; modes share it).

    truth: `[T, H, W, 3]` frames of the bound animation; empty: `[T, H, W, 3]` the empty
    background; candidates: `[M, K, T, 2, 3]` the (upper, lower) colours track i would show
    if identity `identities[k]` animated it (the other tracks as bound): the codec's blur and
    the background it mixes in are part of every candidate, so the truth is always nearest.
    """

    truth: Tensor
    empty: Tensor
    candidates: Tensor


def codec_truth(scene: ProceduralScene, binding: list[int], identities: list[int], codec) -> CodecTruth:
    """`CodecTruth` of `scene` when track i is animated by `binding[i]`."""
    truth = _round_trip(codec, scene.video_for_binding(binding))
    empty = _round_trip(codec, scene.background.expand_as(scene.video).contiguous())
    candidates = torch.zeros(len(binding), len(identities), scene.num_frames, 2, 3)
    for i in range(len(binding)):
        for j, k in enumerate(identities):
            if k == binding[i]:
                decoded = truth
            else:
                trial = list(binding)
                trial[i] = k
                decoded = _round_trip(codec, scene.video_for_binding(trial))
            candidates[i, j] = part_colours(decoded, scene.track_parts[i])
    return CodecTruth(truth=truth, empty=empty, candidates=candidates)


def score_video(scene: ProceduralScene, video: Tensor, binding, identities=None, codec=None,
                truth: CodecTruth | None = None) -> dict:
    """Score generated frames `[T, H, W, 3]` against `scene` when track i is animated by
    identity `binding[i]`; `identities` = the identities in the reference (default: those
    the binding uses). Every comparison is with the ground truth after the codec's round
    trip (`codec`, default MiniCodec), so the decoded ground truth scores perfectly.
    `truth`: `codec_truth(...)` of this scene and binding, if already computed.

    binding_accuracy: fraction of eligible track-frames (`eligible_track_frames`) whose
        (upper, lower) mean colour is nearest (L2) to the bound identity's candidate among
        all `identities` (`CodecTruth.candidates`); chance = 1 / len(identities);
    bleeding: mean |generated - truth| (RGB, 0..1) over the visible pixels of track-frames
        whose box overlaps another track's box (lower is better; 0 = perfect);
    silhouette_iou: per-frame IoU of the foreground 8x8 blocks (mean |frame - empty
        background| > 0.1, both through the codec) of generated and true frames, averaged;
    background_psnr: PSNR (dB, capped at 60) against the true frames outside the
        characters dilated by 8 px.
    """
    if codec is None:
        from ..mini.codec import MiniCodec

        codec = MiniCodec()
    binding = [int(b) for b in binding]
    identities = sorted(set(binding)) if identities is None else [int(i) for i in identities]
    video = video.float().clamp(0, 1)
    if truth is None:
        truth = codec_truth(scene, binding, identities, codec)
    eligible = eligible_track_frames(scene)
    correct = total = 0
    per_track = []
    for i, k in enumerate(binding):
        colours = part_colours(video, scene.track_parts[i])  # [T, 2, 3]
        d = (colours[None] - truth.candidates[i]).flatten(2).norm(dim=-1)  # [K, T]
        hit = torch.tensor(identities)[d.argmin(0)] == k
        e = eligible[i]
        correct += int((hit & e).sum())
        total += int(e.sum())
        per_track.append(float((hit & e).sum()) / max(int(e.sum()), 1))
    overlap = _box_overlaps(scene) & (scene.track_masks.flatten(2).sum(-1) > 0)
    err = (video - truth.truth).abs().mean(-1)  # [T, H, W]
    bleed_px = torch.zeros_like(err, dtype=torch.bool)
    for i in range(len(binding)):
        bleed_px |= scene.track_masks[i] & overlap[i][:, None, None]
    fg_true = _blocks((truth.truth - truth.empty).abs().mean(-1)) > FOREGROUND_THRESHOLD
    fg_gen = _blocks((video - truth.empty).abs().mean(-1)) > FOREGROUND_THRESHOLD
    inter = (fg_true & fg_gen).flatten(1).sum(1).float()
    uni = (fg_true | fg_gen).flatten(1).sum(1).float()
    iou = float((inter / uni.clamp(min=1)).mean())
    union = scene.track_masks.any(0)  # [T, H, W]
    kernel = np.ones((2 * BLOCK + 1, 2 * BLOCK + 1), np.uint8)
    near = torch.from_numpy(np.stack([cv2.dilate(u.numpy().astype(np.uint8), kernel) > 0 for u in union]))
    bg_err = ((video - truth.truth) ** 2).mean(-1)[~near]
    mse = float(bg_err.mean()) if bg_err.numel() else float("nan")
    return {
        "binding_accuracy": correct / total if total else float("nan"),
        "scored_track_frames": total,
        "per_track_accuracy": per_track,
        "bleeding": float(err[bleed_px].mean()) if bleed_px.any() else float("nan"),
        "silhouette_iou": iou,
        "background_psnr": min(60.0, 10 * math.log10(1.0 / max(mse, 1e-12))) if mse == mse else float("nan"),
        "chance": 1.0 / len(identities),
    }


def _blocks(x: Tensor) -> Tensor:
    """Mean over 8x8 pixel blocks: `[T, H, W]` -> `[T, H/8, W/8]`."""
    t, h, w = x.shape
    return x.reshape(t, h // BLOCK, BLOCK, w // BLOCK, BLOCK).mean((2, 4))


# ---------------------------------------------------------------- running a scene


def _reference_for(scene: ProceduralScene, identities: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """(image, masks, keypoints) of a reference that shows only `identities` (the others
    painted over with the background)."""
    image = scene.reference_image.clone()
    others = [k for k in range(scene.num_characters) if k not in identities]
    if others:
        hide = scene.reference_masks[others].any(0)
        image[hide] = scene.background[hide]
    return image, scene.reference_masks[identities], scene.reference_keypoints[identities]


def _aligned(decoupled: DecoupledInstances, ref_kp: Tensor, scene: ProceduralScene, binding: list[int],
             gray: float = 0.5) -> DecoupledInstances:
    """Each identity moved (and scaled) onto the first track bound to it, at that track's
    first visible frame (anycrowd_core.pose.align, One-to-All "pose" mode)."""
    n = decoupled.num_identities
    follow = [binding.index(k) for k in range(n)]
    kp = scene.keypoints[follow]
    boxes = scene.track_boxes[follow]
    tracks = PoseTracks(keypoints=kp, boxes=boxes, present=~torch.isnan(boxes).any(-1),
                        height=scene.video.shape[1], width=scene.video.shape[2], track_ids=list(range(n)))
    aligned = align_identities(decoupled.identity_images, decoupled.masks, ref_kp, tracks, anchor_frame=0, gray=gray)
    return DecoupledInstances(
        identity_images=aligned.images, background=decoupled.background, masks=aligned.masks,
        boxes=boxes_from_masks(aligned.masks[:, None])[:, 0], offsets=aligned.matrices[:, :, 2].clone(),
        scales=aligned.scales,
    )


def _moved_keypoints(decoupled: DecoupledInstances, masks: Tensor, kp: Tensor) -> Tensor:
    """Reference keypoints after the decoupler moved (and maybe shrank) each character."""
    out = kp.clone()
    for k in range(kp.shape[0]):
        ys, xs = torch.nonzero(masks[k], as_tuple=True)
        src = torch.tensor([float(xs.min()), float(ys.min())])
        corner = src + decoupled.offsets[k]
        out[k, :, :2] = (kp[k, :, :2] - src) * decoupled.scales[k] + corner
    return out


def _holistic(decoupled: DecoupledInstances) -> DecoupledInstances:
    """Every identity frame replaced by ONE group photo (all identities composited on the
    background, as placed): the reference is VAE-encoded holistically, not per instance."""
    group = decoupled.background.clone()
    for k in range(decoupled.num_identities):
        group[decoupled.masks[k]] = decoupled.identity_images[k][decoupled.masks[k]]
    images = group[None].expand(decoupled.num_identities, -1, -1, -1).clone()
    return DecoupledInstances(identity_images=images, background=decoupled.background, masks=decoupled.masks,
                              boxes=decoupled.boxes, offsets=decoupled.offsets, scales=decoupled.scales)


@dataclass(frozen=True)
class Guidance:
    """How the benchmark samples: `cfg` is the miniature's own (cfg 1, its prompt is empty);
    `cumulative` is One-to-All's cumulative guidance with `pose_scale` and `ref_scale`."""

    kind: str = "cfg"
    pose_scale: float = 1.5
    ref_scale: float = 1.5

    def settings(self) -> dict:
        return {"guidance": self.kind, "pose_scale": self.pose_scale, "ref_scale": self.ref_scale}


def evaluate_scene(scene: ProceduralScene, mode: str = "masked", binding=None, seed: int = 0, *,
                   reference: str = "cross", mini=None, steps: int | None = None,
                   truth: CodecTruth | None = None, guidance: Guidance | None = None) -> dict:
    """Animate `scene` with AnyCrowd-Mini in `mode` and score it (see `score_video`).

    binding: entry i is the identity (reference character) that animates track i, as in
        `Binding.identities`; default track i -> identity i. Identities that no track uses
        are left out of the reference (one-to-many: a binding such as [0, 1, 0, 1]).
    reference: "self" keeps the scene's reference arrangement; "cross" moves the identities
        to random non-overlapping positions (seeded by `seed`).
    Returns the metrics plus `video` (`[T, H, W, 3]` float 0..1, the generated frames),
    `mode`, `binding`, `seconds`. `truth`: see `score_video` (shared by the modes of a benchmark).
    """
    if mode not in MODE_SPECS:
        raise AnyCrowdError(f"Unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
    if reference not in ("self", "cross"):
        raise AnyCrowdError(f"reference must be 'self' or 'cross', got {reference!r}.")
    spec = MODE_SPECS[mode]
    binding = list(range(scene.num_characters)) if binding is None else [int(b) for b in binding]
    if len(binding) != scene.num_characters or not all(0 <= b < scene.num_characters for b in binding):
        raise AnyCrowdError(
            f"binding must give one identity (0..{scene.num_characters - 1}) per track ({scene.num_characters} "
            f"tracks), got {binding}."
        )
    if mini is None:
        from ..mini import load_mini

        mini = load_mini()
    from ..mini import MINI_SAMPLING

    identities = sorted(set(binding))
    local = [identities.index(b) for b in binding]
    image, masks, ref_kp = _reference_for(scene, identities)
    decoupled = decouple_instances(image, masks, reassign=reference == "cross", seed=seed)
    if spec.align:
        decoupled = _aligned(decoupled, _moved_keypoints(decoupled, masks, ref_kp), scene, local)
    if spec.holistic:
        decoupled = _holistic(decoupled)
    model, gates = mini.model_for(spec.attention)
    settings = SamplingSettings(steps=steps or MINI_SAMPLING["steps"], cfg=MINI_SAMPLING["cfg"],
                                shift=MINI_SAMPLING["shift"], sampler=MINI_SAMPLING["sampler"], seed=seed,
                                mode=spec.attention, agf=spec.agf,
                                shifted_rope=mini.shifted_rope and model is mini.anycrowd,
                                **(guidance or Guidance()).settings())
    inputs = AnimationInputs(reference_image=image, reference_masks=decoupled.masks, control_video=scene.pose_video,
                             track_boxes=scene.track_boxes, binding=local, decoupled=decoupled)
    started = time.perf_counter()
    result = animate(model, mini.codec, inputs, mini.text, None, settings, gates=gates)
    scores = score_video(scene, result.frames, binding, identities, mini.codec, truth)
    return {**scores, "video": result.frames, "mode": mode, "binding": binding, "reference": reference,
            "seconds": time.perf_counter() - started, "decoupled": decoupled}


# ---------------------------------------------------------------- the benchmark


def width_for(count: int) -> int:
    """Scene width for `count` characters: 192 px up to 4, then 64 px per character."""
    return 192 if count <= 4 else 64 * count


def eval_scene(count: int, index: int, frames: int = 9) -> ProceduralScene:
    """Held-out scene `index` with `count` characters (seed EVAL_SEED_BASE + 1000 * count
    + index; scenarios in turn)."""
    return make_scene(num_characters=count, num_frames=frames, height=128, width=width_for(count),
                      seed=EVAL_SEED_BASE + 1000 * count + index, scenario=SCENARIOS[index % len(SCENARIOS)])


def setting_binding(setting: str, count: int, seed: int) -> tuple[list[int], str]:
    """(binding, reference arrangement) of a setting for a scene with `count` tracks."""
    rng = np.random.default_rng(seed)
    if setting == "self":
        return list(range(count)), "self"
    if setting in ("cross", "recast"):
        perm = list(range(count))
        if count > 1:
            while any(p == i for i, p in enumerate(perm)):  # a derangement: no track keeps its identity
                perm = rng.permutation(count).tolist()
        return perm, "cross" if setting == "cross" else "self"
    if setting == "one_to_many":
        ids = max(1, (count + 1) // 2)
        return [int(v) for v in rng.permutation([i % ids for i in range(count)])], "cross"
    raise AnyCrowdError(f"Unknown setting {setting!r}; choose one of {', '.join(SETTINGS)}.")


def run_benchmark(counts, scenes: int, settings, modes, *, frames: int = 9, steps: int | None = None,
                  log=print, grid_path=None, weights: str | None = None, guidance: Guidance | None = None) -> dict:
    """Mean metrics per (setting, count, mode) over `scenes` held-out scenes each.
    weights: a folder with the three miniature files (default: the shipped ones);
    guidance: plain (default, the miniature's cfg 1) or cumulative guidance."""
    from ..mini import load_mini

    mini = load_mini(weights)
    rows = []
    grid = []
    for setting in settings:
        for count in counts:
            if setting == "one_to_many" and count < 2:
                continue
            batch = []
            for i in range(scenes):
                scene, seed = eval_scene(count, i, frames), EVAL_SEED_BASE + 7919 * count + i
                binding, reference = setting_binding(setting, count, seed)
                batch.append((scene, seed, binding, reference,
                              codec_truth(scene, binding, sorted(set(binding)), mini.codec)))
            for mode in modes:
                results = []
                for i, (scene, seed, binding, reference, truth) in enumerate(batch):
                    r = evaluate_scene(scene, mode, binding, seed, reference=reference, mini=mini, steps=steps,
                                       truth=truth, guidance=guidance)
                    results.append(r)
                    if grid_path is not None and i == 0 and setting == settings[0]:
                        grid.append((f"{count} chars, {mode}", r["video"]))
                row = {"setting": setting, "characters": count, "mode": mode, "scenes": len(results)}
                for key in ("binding_accuracy", "bleeding", "silhouette_iou", "background_psnr", "chance", "seconds"):
                    vals = [r[key] for r in results if r[key] == r[key]]
                    row[key] = float(np.mean(vals)) if vals else float("nan")
                row["min_binding_accuracy"] = float(min(r["binding_accuracy"] for r in results))
                by = {}
                for (scene, *_), r in zip(batch, results):
                    by.setdefault(scene.scenario, []).append(r["binding_accuracy"])
                row["by_scenario"] = {k: float(np.mean(v)) for k, v in by.items()}
                rows.append(row)
                log(f"{setting:12s} n={count} {mode:14s} binding {row['binding_accuracy']:.3f} "
                    f"bleeding {row['bleeding']:.3f} IoU {row['silhouette_iou']:.3f} bg {row['background_psnr']:.1f} dB "
                    f"({row['seconds']:.1f} s/scene)")
    if grid_path is not None and grid:
        _write_grid(grid, grid_path)
    return {"rows": rows, "settings": {"frames": frames, "steps": steps, "scenes": scenes,
                                       "guidance": dataclasses.asdict(guidance or Guidance())}}


def _write_grid(grid, path) -> None:
    from ..video_io import preview_sheet, write_png

    write_png(preview_sheet([v[::2] for _, v in grid], labels=[name for name, _ in grid], num_columns=5), path)


def markdown_table(result: dict) -> str:
    """The benchmark rows as a markdown table (docs/mini.md)."""
    lines = ["| setting | chars | mode | binding acc. | min | chance | bleeding | silhouette IoU | background PSNR |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        lines.append(f"| {r['setting']} | {r['characters']} | {r['mode']} | **{r['binding_accuracy']:.3f}** | "
                     f"{r['min_binding_accuracy']:.2f} | {r['chance']:.2f} | {r['bleeding']:.3f} | "
                     f"{r['silhouette_iou']:.3f} | {r['background_psnr']:.1f} dB |")
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _choices(allowed):
    def parse(text: str) -> list[str]:
        items = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in items if v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(allowed)}")
        return items

    return parse


@command_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m anycrowd_core.bench.binding",
                                description="Identity-pose binding of AnyCrowd-Mini on held-out procedural scenes.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--characters", type=_int_list, default=[2, 3, 4], help="character counts, e.g. 2,3,4,6,9")
    p.add_argument("--scenes", type=int, default=20, help="held-out scenes per count")
    p.add_argument("--settings", type=_choices(SETTINGS), default=["cross"], help=f"from {', '.join(SETTINGS)}")
    p.add_argument("--modes", type=_choices(MODES), default=list(MODES), help=f"from {', '.join(MODES)}")
    p.add_argument("--frames", type=int, default=9, help="frames per scene, 4n+1")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the miniature's)")
    p.add_argument("--weights", default=None,
                   help="folder with anycrowd_mini_{base,lora,gates}.safetensors (default: the shipped miniature)")
    p.add_argument("--grid", default=None, help="write a picture grid (PNG) of the first scene per count and mode")
    p.add_argument("--guidance", choices=["cfg", "cumulative"], default="cfg",
                   help="cfg: the miniature's plain sampling (cfg 1); cumulative: One-to-All's cumulative guidance")
    p.add_argument("--pose-scale", type=float, default=1.5, help="cumulative: scale of (pose - unconditional)")
    p.add_argument("--ref-scale", type=float, default=1.5, help="cumulative: scale of (reference+pose - pose)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    if args.scenes < 1:
        p.error("--scenes must be at least 1")
    with torch.no_grad():
        result = run_benchmark(
            args.characters, args.scenes, args.settings, args.modes, frames=args.frames, steps=args.steps,
            log=(lambda s: print(s, file=sys.stderr)) if args.json else print, grid_path=args.grid,
            weights=args.weights, guidance=Guidance(args.guidance, args.pose_scale, args.ref_scale),
        )
    print(json.dumps(result, indent=1) if args.json else markdown_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
