"""Manual per-character boxes: text/JSON syntax, keyframes, masks -> boxes, resize mapping."""

import math

import pytest
import torch

from anycrowd_core.boxes import (
    boxes_from_mask_sequences,
    center_crop_region,
    parse_boxes,
    resize_boxes,
    validate_boxes_text,
)
from anycrowd_core.errors import AnyCrowdError

NAN = float("nan")


def same(a: torch.Tensor, b) -> bool:
    return torch.equal(torch.nan_to_num(a, nan=-7.0), torch.nan_to_num(torch.as_tensor(b, dtype=a.dtype), nan=-7.0))


def test_static_line_is_the_same_box_in_every_frame():
    boxes = parse_boxes("10,20,50,90", 5, (100, 100))
    assert boxes.shape == (1, 5, 4)
    assert same(boxes, [[[10, 20, 50, 90]] * 5])


def test_lines_are_characters_and_comments_are_skipped():
    boxes = parse_boxes("# heads up\n1,2,3,4\n\n  5 6 7 8  \n# end", 1, (100, 100))
    assert same(boxes, [[[1, 2, 3, 4]], [[5, 6, 7, 8]]])


def test_keyframes_interpolate_linearly_and_hold_outside():
    boxes = parse_boxes("2: 0,0,10,10; 6: 40,0,50,10", 9, (100, 100))[0]
    assert same(boxes[:3], [[0, 0, 10, 10]] * 3)
    assert same(boxes[4], [20, 0, 30, 10])
    assert same(boxes[6:], [[40, 0, 50, 10]] * 3)


def test_none_keyframe_makes_the_character_absent_until_the_next_keyframe():
    boxes = parse_boxes("0: 0,0,10,10; 3: none; 6: 20,0,30,10", 8, (100, 100))[0]
    assert same(boxes[:3], [[0, 0, 10, 10]] * 3)
    assert torch.isnan(boxes[3:6]).all()
    assert same(boxes[6:], [[20, 0, 30, 10]] * 2)


def test_first_keyframe_none_means_absent_before_it():
    boxes = parse_boxes("0: none; 2: 0,0,10,10", 4, (100, 100))[0]
    assert torch.isnan(boxes[:2]).all() and same(boxes[2:], [[0, 0, 10, 10]] * 2)


def test_json_forms_static_per_frame_and_keyframes():
    text = '[[0,0,10,10], [[0,0,4,4], null, [1,1,5,5]], {"0": [0,0,2,2], "2": [2,0,4,2]}]'
    boxes = parse_boxes(text, 3, (100, 100))
    assert same(boxes[0], [[0, 0, 10, 10]] * 3)
    assert same(boxes[1], [[0, 0, 4, 4], [NAN] * 4, [1, 1, 5, 5]])
    assert same(boxes[2], [[0, 0, 2, 2], [1, 0, 3, 2], [2, 0, 4, 2]])


def test_json_single_box_and_single_keyframe_dict_are_one_character():
    assert parse_boxes("[1,2,3,4]", 2, (10, 10)).shape == (1, 2, 4)
    assert parse_boxes('{"0": [1,2,3,4]}', 2, (10, 10)).shape == (1, 2, 4)


def test_numbers_in_0_to_1_are_fractions_of_the_frame():
    boxes = parse_boxes("0.25,0.5,0.75,1", 1, (200, 400))
    assert same(boxes, [[[100, 100, 300, 200]]])


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("10,20,5,90", "x1 <= x0"),
        ("1,2,3", "4 numbers"),
        ("a,b,c,d", "not 4 numbers"),
        ("0: 1,2,3,4; 12: 2,3,4,5", "past the last frame"),
        ("0: 1,2,3,4; 0: 2,3,4,5", "given twice"),
        ("1.5: 1,2,3,4", "whole frame number"),
        ("0: 1,2,3,4; 2,3,4,5", "no 'frame:'"),
        ("none", "cannot be only 'none'"),
        ("[[1,2,3,4], [[1,2,3,4]]]", "per-frame boxes but the video has 9 frames"),
        ("[1,2,3,4", "do not parse"),
        ("", "No boxes given"),
        ("# only a comment", "only comments"),
    ],
)
def test_bad_boxes_raise_with_the_syntax(text, fragment):
    with pytest.raises(AnyCrowdError) as err:
        parse_boxes(text, 9, (100, 100))
    assert fragment in str(err.value)
    assert "Boxes syntax" in str(err.value)


def test_validate_boxes_text_accepts_empty_and_reports_errors():
    assert validate_boxes_text("", 9) is None
    assert validate_boxes_text("# only the default comment\n", 9) is None
    assert validate_boxes_text("1,2,3,4", 9) is None
    assert "x1 <= x0" in validate_boxes_text("3,2,1,4", 9)


def test_mask_sequences_give_tight_boxes_character_by_character():
    masks = torch.zeros(2 * 3, 8, 8)
    masks[0, 1:3, 2:5] = 1  # character 0, frame 0
    masks[4, 0:8, 0:1] = 1  # character 1, frame 1
    boxes = boxes_from_mask_sequences(masks, 3)
    assert boxes.shape == (2, 3, 4)
    assert same(boxes[0, 0], [2, 1, 5, 3])
    assert torch.isnan(boxes[0, 1]).all()
    assert same(boxes[1, 1], [0, 0, 1, 8])


def test_mask_sequences_must_be_a_multiple_of_the_length():
    with pytest.raises(AnyCrowdError, match="not a multiple of the length"):
        boxes_from_mask_sequences(torch.zeros(7, 8, 8), 3)


def test_center_crop_region_matches_the_aspect():
    assert center_crop_region(100, 200, 100, 100) == (0, 50, 100, 100)
    assert center_crop_region(200, 100, 100, 100) == (50, 0, 100, 100)
    assert center_crop_region(64, 96, 32, 48) == (0, 0, 64, 96)


def test_resize_boxes_scales_and_crops_like_the_frames():
    boxes = torch.tensor([[[50.0, 0, 150, 100], [0, 0, 40, 10], [60, 10, 70, 20]]])
    out = resize_boxes(boxes, (100, 200), (50, 50))  # crop x 50..150, then x0.5
    assert same(out[0, 0], [0, 0, 50, 50])
    assert torch.isnan(out[0, 1]).all()  # entirely in the cropped-away border
    assert same(out[0, 2], [5, 5, 10, 10])
    assert math.isnan(resize_boxes(torch.full((1, 1, 4), NAN), (10, 10), (20, 20))[0, 0, 0])


def test_format_boxes_round_trips_integer_boxes_with_absences():
    from anycrowd_core.boxes import format_boxes

    boxes = torch.tensor([
        [[10, 20, 50, 90], [12, 20, 52, 90], [float("nan")] * 4, [14, 22, 54, 92]],
        [[60, 10, 90, 80]] * 4,
    ], dtype=torch.float32)
    text = format_boxes(boxes, every=1)
    assert text.splitlines()[0] == "0: 10,20,50,90; 1: 12,20,52,90; 2: none; 3: 14,22,54,92"
    back = parse_boxes(text, 4, (100, 100))
    assert torch.equal(torch.isnan(back), torch.isnan(boxes))
    assert torch.equal(back.nan_to_num(-1), boxes.nan_to_num(-1))
