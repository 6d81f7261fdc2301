"""Headless tracking command: POSE_KEYPOINT in, tracks.json / pose.mp4 / preview.mp4 out, saved
tracks reused without tracking, edits applied, flags checked before any work."""

import json

import pytest
import torch

from anycrowd_core.pose.keypoint_format import load_tracks_json
from anycrowd_core.pose.scenarios import make_scenario
from anycrowd_core.pose.track_edits import apply_track_edits
from anycrowd_core.pose.track_video import main
from anycrowd_core.video_io import read_video, write_mp4

pytest.importorskip("av")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    sc = make_scenario("scene_crossing3", 0)  # 33 frames, 128 x 192
    frames = []
    for f in sc.sequence.frames:
        people = [{"pose_keypoints_2d": [float(v) for v in f.keypoints[j, :18].reshape(-1)]} for j in range(f.num_people)]
        frames.append({"people": people, "canvas_width": 192, "canvas_height": 128})
    (d / "poses.json").write_text(json.dumps(frames))
    write_mp4(sc.frames(), d / "video.mp4", fps=8)
    return d


def test_poses_are_tracked_saved_and_rendered(clip, capsys):
    out = clip / "a"
    assert main(["--out", str(out), "--poses", str(clip / "poses.json"), "--video", str(clip / "video.mp4")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tracks"] == 3 and summary["frames"] == 33 and summary["appearance"] is True
    tracks = load_tracks_json(out / "tracks.json")
    assert tracks.track_ids == [0, 1, 2] and bool(tracks.present.all())
    assert tuple(read_video(out / "preview.mp4").shape) == (33, 128, 192, 3)
    assert tuple(read_video(out / "pose.mp4").shape) == (33, 128, 192, 3)


def test_saved_tracks_are_reused_and_corrected_without_tracking_again(clip, capsys, monkeypatch):
    out = clip / "b"
    assert main(["--out", str(out), "--poses", str(clip / "poses.json")]) == 0
    saved = load_tracks_json(out / "tracks.json")

    def no_tracking(*a, **k):
        raise AssertionError("tracked again")

    monkeypatch.setattr("anycrowd_core.pose.track_video.track_people", no_tracking)
    again = clip / "c"
    assert main(["--out", str(again), "--tracks-json", str(out / "tracks.json"), "--edits", "swap 0 2 @10; drop 1"]) == 0
    edited = load_tracks_json(again / "tracks.json")
    expected = apply_track_edits(saved, "swap 0 2 @10; drop 1")
    assert edited.track_ids == [0, 2] and torch.equal(edited.keypoints, expected.keypoints)


@pytest.mark.parametrize("args, fragment", [
    (["--edits", "swap 0 @3"], "line 1, character 7"),
    ([], "exactly one source of poses"),
    (["--pose-models", "models"], "give --video too"),
])
def test_bad_flags_are_refused_before_any_work(clip, capsys, args, fragment):
    source = [] if "--pose-models" in args or not args else ["--poses", str(clip / "poses.json")]
    assert main(["--out", str(clip / "bad")] + source + args) == 2
    assert fragment in capsys.readouterr().err
    assert not (clip / "bad").exists()
