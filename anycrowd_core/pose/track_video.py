"""Headless tracking: driving poses -> identity tracks, with corrections, saved for reuse.

    python -m anycrowd_core.pose.track_video --out DIR
        (--video FILE --pose-models DIR | --poses POSE_KEYPOINT.json [--video FILE] | --tracks-json FILE [--video FILE])
        [--edits "swap 0 1 @40; drop 5"] [--no-appearance] [--max-gap 8] [--min-track-length 3] [--fps 16]

Where the poses come from: DWPose on `--video` (onnx files under `--pose-models`), any pack's
POSE_KEYPOINT JSON (`--poses`, retracked), or tracks saved before (`--tracks-json`, not tracked
again). The video, when given, feeds the colour cue and is shown under the preview. Writes
tracks.json (POSE_KEYPOINT with track ids and boxes: `--tracks-json` of the next run, or the
Pose From Keypoints node with identities = as_given), pose.mp4 (the VACE control) and
preview.mp4 (ids and frame numbers, to write `--edits`). docs/pose_tracking.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import AnyCrowdError, command_main
from ..files import ensure_output_dir
from .keypoint_format import load_tracks_json, pose_keypoint_to_sequence, save_tracks_json
from .render import render_identity_preview, render_pose_video
from .track_edits import apply_track_edits, check_track_edits_syntax
from .tracking import track_people
from .types import PoseTracks


def obtain_tracks(args: argparse.Namespace, video) -> PoseTracks:
    """The tracks the flags ask for: loaded, or tracked from poses / the video (colour cue on
    unless --no-appearance), then corrected by --edits."""
    size = dict(height=int(video.shape[1]), width=int(video.shape[2])) if video is not None else {}
    if args.tracks_json:
        tracks = load_tracks_json(args.tracks_json, **size)
    else:
        if args.poses:
            try:
                text = Path(args.poses).read_text(encoding="utf-8")
            except OSError as exc:
                raise AnyCrowdError(f"--poses {args.poses!r}: cannot read it ({exc.strerror or exc}).") from None
            seq = pose_keypoint_to_sequence(text, **size)
        else:
            from .dwpose import DWPoseEstimator

            seq = DWPoseEstimator.from_folders([args.pose_models]).estimate_video(video)
        if video is not None and len(seq.frames) != int(video.shape[0]):
            raise AnyCrowdError(f"--video has {int(video.shape[0])} frames but the poses have {len(seq.frames)}: "
                                "give the video the poses were extracted from.")
        tracks = track_people(seq, max_gap=args.max_gap, min_track_length=args.min_track_length,
                              frames=None if args.no_appearance else video)
    if video is not None and int(video.shape[0]) != tracks.num_frames:
        raise AnyCrowdError(f"--video has {int(video.shape[0])} frames but the tracks have {tracks.num_frames}: "
                            "give the video the tracks were made from.")
    return apply_track_edits(tracks, args.edits)


def run(args: argparse.Namespace) -> dict:
    """Check every flag first, then track (or load), correct and write the outputs."""
    from ..video_io import read_video, write_mp4

    sources = [bool(args.poses), bool(args.tracks_json), bool(args.pose_models)]
    if sum(sources) != 1:
        raise AnyCrowdError("Give exactly one source of poses: --pose-models (DWPose on --video), --poses "
                            "(POSE_KEYPOINT JSON) or --tracks-json (tracks saved by an earlier run).")
    if args.pose_models and not args.video:
        raise AnyCrowdError("--pose-models runs DWPose on the video: give --video too.")
    check_track_edits_syntax(args.edits)
    if args.fps < 1:
        raise AnyCrowdError(f"--fps must be at least 1, got {args.fps}.")
    out = ensure_output_dir(args.out, "--out")
    video = read_video(args.video) if args.video else None
    tracks = obtain_tracks(args, video)
    save_tracks_json(tracks, out / "tracks.json")
    write_mp4(render_pose_video(tracks), out / "pose.mp4", fps=args.fps)
    write_mp4(render_identity_preview(video, tracks), out / "preview.mp4", fps=args.fps)
    return {
        "tracks": tracks.num_tracks, "track_ids": list(tracks.track_ids), "frames": tracks.num_frames,
        "size": [tracks.width, tracks.height], "edits": args.edits,
        "appearance": bool(video is not None and not args.no_appearance and not args.tracks_json),
        "outputs": ["tracks.json", "pose.mp4", "preview.mp4"],
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m anycrowd_core.pose.track_video", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="folder for tracks.json, pose.mp4 and preview.mp4")
    p.add_argument("--video", help="the driving video (DWPose input, colour cue, preview background)")
    p.add_argument("--pose-models", help="folder with yolox_l.onnx and dw-ll_ucoco_384.onnx (DWPose on --video)")
    p.add_argument("--poses", help="POSE_KEYPOINT JSON from any pose pack (people are retracked)")
    p.add_argument("--tracks-json", help="tracks saved by an earlier run (tracks.json): used as they are")
    p.add_argument("--edits", default="", help="track corrections, e.g. \"swap 0 1 @40; drop 5\" (ids as in the preview)")
    p.add_argument("--no-appearance", action="store_true", help="track by pose and motion only (no colour cue)")
    p.add_argument("--max-gap", type=int, default=8, help="frames a person may be missed and keep the id")
    p.add_argument("--min-track-length", type=int, default=3, help="shorter tracks are dropped")
    p.add_argument("--fps", type=int, default=16, help="frame rate of the written videos")
    return p.parse_args(argv)


@command_main
def main(argv=None) -> int:
    args = parse_args(argv)
    summary = run(args)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
