"""The example inputs for the workflows: the files the workflows load, readable back."""

import cv2
import torch

from anycrowd_core.boxes import parse_boxes
from anycrowd_core.example_inputs import main
from anycrowd_core.scenes import make_scene
from anycrowd_core.video_io import read_video


def test_example_inputs_are_the_files_the_workflows_load(tmp_path):
    assert main(["--out", str(tmp_path), "--frames", "9", "--height", "64", "--width", "96"]) == 0
    scene = make_scene(num_characters=2, num_frames=9, height=64, width=96, seed=0)
    mask = cv2.imread(str(tmp_path / "anycrowd_mask_1.png"), cv2.IMREAD_GRAYSCALE) > 127
    assert torch.equal(torch.from_numpy(mask), scene.reference_masks[1])
    assert read_video(tmp_path / "anycrowd_pose.mp4").shape == (9, 64, 96, 3)
    assert read_video(tmp_path / "anycrowd_driving.mp4").shape == (9, 64, 96, 3)
    boxes = parse_boxes((tmp_path / "anycrowd_boxes.txt").read_text(), 9, (64, 96))
    assert boxes.shape == (2, 9, 4)
    keyframes = [0, 8]
    expected = scene.track_boxes[:, keyframes].round()
    assert torch.equal(boxes[:, keyframes].nan_to_num(-1), expected.nan_to_num(-1))


def test_example_inputs_report_bad_sizes(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--frames", "10"]) == 2
    assert "4n+1" in capsys.readouterr().err
