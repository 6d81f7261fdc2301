"""`python -m training.prepare`: a JSONL manifest of multi-character clips -> one cached
training sample per clip (latents, IILR VACE context, layout inputs, AGF soft labels).

Formats: docs/training_data.md. Bad clips are skipped and reported, never fatal; valid
cache entries (same fingerprint) are reused, so re-running only builds what changed.
The parts: `manifest` (the lines), `prepare_readers` (the clip's files), `sample_builder`
(one entry), `prompt_embeddings` (the text file), `prepare_settings` (the flags' values).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from anycrowd_core.codec import VideoCodec
from anycrowd_core.errors import AnyCrowdError, command_main
from anycrowd_core.files import ensure_output_dir, write_text_atomic

from . import cache_format as cf
from .manifest import read_manifest
from .prepare_settings import DEFAULT_PROMPT, DTYPES, PrepareSettings
from .prompt_embeddings import TextSource, prepare_text_embeddings, prompt_key
from .sample_builder import build_sample


@dataclass
class PrepareReport:
    """Outcome of a prepare run: entry file names built / reused, skipped samples
    ({"line", "id", "clip", "reason"}), and the cache folder."""

    out_dir: Path
    built: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    @property
    def entries(self) -> list[str]:
        return sorted(self.built + self.reused)

    def summary(self) -> str:
        lines = [f"training.prepare: {len(self.built)} built, {len(self.reused)} reused, "
                 f"{len(self.skipped)} skipped -> {self.out_dir}"]
        if self.skipped:
            width = max(len(str(s["id"])) for s in self.skipped)
            lines.append(f"  {'line':>5}  {'id':<{width}}  reason")
            for s in self.skipped:
                lines.append(f"  {s['line']:>5}  {str(s['id']):<{width}}  {s['reason']}")
            lines.append(f"  (also written to {self.out_dir / cf.SKIPPED_FILE})")
        return "\n".join(lines)


def _progress(items, enabled: bool):
    if not enabled:
        return items
    try:
        from tqdm import tqdm

        return tqdm(items, desc="prepare", unit="sample")
    except ImportError:
        return items


def _lazy_codec(codec: VideoCodec | Callable[[], VideoCodec]) -> Callable[[], VideoCodec]:
    """A getter that calls a codec factory on first use only (a VideoCodec is returned as is)."""
    state = {"codec": codec if not callable(codec) or hasattr(codec, "encode") else None}

    def get_codec():
        if state["codec"] is None:
            state["codec"] = codec()
        return state["codec"]

    return get_codec


def prepare(manifest: Path, out_dir: Path, settings: PrepareSettings,
            codec: VideoCodec | Callable[[], VideoCodec], text: TextSource, *,
            progress: bool = True, fail_fast: bool = False, log=print) -> PrepareReport:
    """Build the cache for every manifest line (times `settings.variants`).

    codec: a VideoCodec, or a zero-argument factory called only if something must be
    encoded (so a fully cached re-run never loads the VAE). Problems with one sample are
    recorded in the report, `skipped.jsonl` and the printed summary; `fail_fast` re-raises
    errors that are not user-fixable (for debugging).
    """
    settings.validate()
    manifest, out_dir = Path(manifest), Path(out_dir)
    if not manifest.is_file():
        raise AnyCrowdError(f"manifest {str(manifest)!r} does not exist: pass --manifest PATH.jsonl.")
    ensure_output_dir(out_dir, "--out")
    report = PrepareReport(out_dir=out_dir)
    samples, report.skipped = read_manifest(manifest)

    prompts = sorted({s.prompt or settings.prompt for s in samples} or {settings.prompt})
    text_header, unembeddable = prepare_text_embeddings(out_dir, text, prompts, settings.seed, settings.prompt, log)
    get_codec = _lazy_codec(codec)

    work = [(s, v) for s in samples for v in range(settings.variants)]
    for s, v in _progress(work, progress):
        name = (s.id if settings.variants == 1 else f"{s.id}_v{v}") + cf.SAMPLE_SUFFIX
        path = out_dir / name
        prompt = s.prompt or settings.prompt

        def skip(reason: str):
            report.skipped.append({"line": s.line, "id": s.id if settings.variants == 1 else f"{s.id}_v{v}",
                                   "clip": str(s.clip), "reason": reason})

        if prompt in unembeddable:
            skip("custom prompt but --text-embedding holds only the default prompt's embedding: "
                 "use --text-encoder, or drop the prompt")
            continue
        try:
            fp = cf.fingerprint(s.input_files(), {**settings.fingerprint_dict(), "variant": v,
                                                  "sample": s.raw, "prompt": prompt})
        except FileNotFoundError as exc:
            skip(f"missing file: {exc.filename}")
            continue
        if cf.is_valid(path, fp):
            report.reused.append(name)
            continue
        try:
            tensors, header = build_sample(s, v, settings, get_codec(), prompt_key(prompt))
            cf.write_sample(path, tensors, {**header, "fingerprint": fp})
            report.built.append(name)
        except AnyCrowdError as exc:
            skip(str(exc))
        except Exception as exc:  # an unreadable file can fail deep inside cv2/av/numpy
            if fail_fast:
                raise
            skip(f"{type(exc).__name__}: {exc}")
            if not progress:
                log(traceback.format_exc())

    _write_reports(out_dir, report, settings, text_header)
    log(report.summary())
    return report


def _write_reports(out_dir: Path, report: PrepareReport, settings: PrepareSettings, text_header: dict) -> None:
    write_text_atomic(out_dir / cf.SKIPPED_FILE, "".join(json.dumps(s) + "\n" for s in report.skipped))
    index = {
        "format_version": cf.FORMAT_VERSION,
        "entries": report.entries,
        "settings": {**settings.fingerprint_dict(), "variants": settings.variants, "prompt": settings.prompt},
        "text_embedding": cf.TEXT_EMBEDDING_FILE,
        "text_source": text_header.get("source"),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if text_header.get("warning"):
        index["warning"] = text_header["warning"]
    write_text_atomic(out_dir / cf.INDEX_FILE, json.dumps(index, indent=2) + "\n")


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.prepare", description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", required=True, help="JSONL manifest (docs/training_data.md)")
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--codec", choices=("test", "comfy"), default="comfy",
                   help="comfy: ComfyUI's Wan 2.1 VAE (needs --vae, COMFYUI_PATH); test: the core's test codec")
    p.add_argument("--vae", help="Wan 2.1 VAE file (wan_2.1_vae.safetensors) for --codec comfy")
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--frames", type=int, default=49, help="window length, 4n+1 (paper: 49)")
    p.add_argument("--stride", type=int, default=1, help="take every stride-th frame of the clip")
    p.add_argument("--variants", type=int, default=1, help="cache entries per clip (different windows/references/reassignments)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-reassign", action="store_true", help="keep characters in place (no stochastic reassignment)")
    p.add_argument("--no-background", action="store_true", help="no IILR background reference frame")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="storage dtype of latents (bfloat16 halves the cache)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="the fixed prompt (samples may override with 'prompt')")
    p.add_argument("--pose-models", help="folder with yolox_l.onnx + dw-ll_ucoco_384.onnx for samples without pose")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--text-embedding", help="precomputed prompt embedding (safetensors, one [L, D] tensor)")
    text.add_argument("--text-encoder", help="umT5 text encoder file, encoded with ComfyUI (COMFYUI_PATH)")
    text.add_argument("--random-text-dim", type=int, help="tiny/test runs: seeded random embedding of this width")
    p.add_argument("--random-text-len", type=int, default=32, help="tokens of the random embedding")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--fail-fast", action="store_true", help="re-raise unexpected errors (debugging)")
    return p


@command_main
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .codecs import codec_id_for_file, make_codec

    if args.codec == "comfy":
        if not args.vae:
            raise AnyCrowdError("--codec comfy needs --vae PATH to the Wan 2.1 VAE (or use --codec test).")
        codec_id = codec_id_for_file("comfy", args.vae)
    else:
        codec_id = "test:seed=0"
    settings = PrepareSettings(
        width=args.width, height=args.height, frames=args.frames, stride=args.stride, seed=args.seed,
        reassign=not args.no_reassign, background=not args.no_background, variants=args.variants,
        dtype=args.dtype, codec_id=codec_id, prompt=args.prompt, pose_models=args.pose_models,
    )
    if args.text_embedding:
        text = TextSource("file", path=args.text_embedding)
    elif args.text_encoder:
        text = TextSource("encoder", path=args.text_encoder)
    else:
        if args.random_text_dim <= 0 or args.random_text_len <= 0:
            raise AnyCrowdError("--random-text-dim and --random-text-len must be positive.")
        text = TextSource("random", dim=args.random_text_dim, length=args.random_text_len)
    report = prepare(Path(args.manifest), Path(args.out), settings,
                     lambda: make_codec(args.codec, args.vae)[0], text,
                     progress=not args.no_progress, fail_fast=args.fail_fast)
    if not report.entries:
        print("error: no usable samples: fix the skipped ones (see the table above).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
