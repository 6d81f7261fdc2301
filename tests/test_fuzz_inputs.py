"""Property-based fuzzing of the text users type: the boxes syntax, the binding syntax, trainer
config overrides and the frame count / size validators. Whatever the input, the result is a
valid value or an `AnyCrowdError` (a message, never a traceback), and what parses formats back
to text that parses to the same thing.

Deterministic (derandomize, no example database: nothing is written to .hypothesis/) and sized
to run in well under a minute on two CPU cores.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

# database=None keeps examples out of .hypothesis/, but Hypothesis still caches the constants it
# finds in the source there: keep that outside the repository too (unless a CI sets its own).
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "anycrowd-hypothesis")
from hypothesis import strategies as st  # noqa: E402

from anycrowd_core import codec  # noqa: E402
from anycrowd_core.boxes import format_boxes, has_boxes, parse_boxes, validate_boxes_text  # noqa: E402
from anycrowd_core.errors import AnyCrowdError  # noqa: E402
from anycrowd_core.pose.binding import check_binding_syntax, parse_binding  # noqa: E402
from anycrowd_core.pose.types import NUM_KEYPOINTS, PoseTracks  # noqa: E402


def fuzz(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(torch.nan_to_num(a, nan=-7.0), torch.nan_to_num(b, nan=-7.0))


# ------------------------------------------------------------------ shared number mutations

WEIRD_NUMBERS = [
    "inf", "-inf", "+inf", "nan", "NaN", "-nan", "Infinity", "INF", "1e309", "-1e309", "1e999", "-0", "+0", "-0.0",
    "1e-400", "1e38", "1e39", "3.5e38", "1e6", "1000001", "9" * 30, "9" * 400, "9" * 5000, "1_0", "0x10", "0b1",
    "1e", "e5", ".", "..", "1..2", "1.2.3", "--1", "+-1", "١٢", "１２", "٣", "½", "²", "", " ", "\t", "\u00a0",
    "none", "null", "-", "off", "true", "[]", "()", "1,", ",1",
]


def number_text(small: int = 600):
    """Numbers as a user might type them, plus the mutations above."""
    return st.one_of(
        st.integers(-5, small).map(str),
        st.floats(-2, 2, allow_nan=False).map(lambda f: f"{f:.3g}"),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-(10**40), 10**40).map(str),
        st.sampled_from(WEIRD_NUMBERS),
        st.text(st.characters(categories=["Nd"]), min_size=1, max_size=4),  # unicode digits
    )


# ------------------------------------------------------------------ boxes syntax

T_FRAMES, FRAME_SIZE = 13, (480, 832)
NONE_WORDS = ["none", "null", "-", "absent", "off", "NONE"]


@st.composite
def box_text(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(NONE_WORDS))
    n = draw(st.sampled_from([4, 4, 4, 4, 3, 5, 0, 1]))
    sep = draw(st.sampled_from([",", ", ", " ", ",,", "\t", " , ", ";", "\u00a0", "\u3000"]))
    body = sep.join(draw(number_text()) for _ in range(n))
    wrap = draw(st.sampled_from(["{}", "{}", "[{}]", "({})", "[{}", " {} "]))
    return wrap.format(body)


@st.composite
def keyframe_line(draw):
    if draw(st.booleans()):
        return draw(box_text())
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        frame = draw(st.one_of(st.integers(0, T_FRAMES + 2).map(str), number_text(T_FRAMES)))
        colon = draw(st.sampled_from([":", ": ", " :", "::", "", ":;"]))
        parts.append(f"{frame}{colon} {draw(box_text())}")
    return draw(st.sampled_from(["; ", ";", ";;", " ; ", ";\t"])).join(parts) + draw(st.sampled_from(["", ";", " "]))


@st.composite
def boxes_text(draw):
    lines = draw(st.lists(st.one_of(keyframe_line(), st.just("# comment"), st.just("")), min_size=0, max_size=4))
    return draw(st.sampled_from(["\n", "\r\n", "\n\n", "\u2028", "\x0b"])).join(lines)


JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 900), st.integers(), st.integers(10**300, 10**320),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["1,2,30,40", "none", "x", ""]),
)
JSON_KEY = st.one_of(st.integers(0, T_FRAMES + 2).map(str), number_text(T_FRAMES))


@st.composite
def boxes_json(draw):
    value = draw(st.recursive(JSON_LEAF, lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(JSON_KEY, inner, max_size=4)), max_leaves=24))
    text = json.dumps(value)  # nan / inf come out as NaN / Infinity
    if draw(st.integers(0, 15)) == 0:
        depth = draw(st.integers(100, 5000))
        text = "[" * depth + text + "]" * depth
    return text


def check_boxes_result(boxes: torch.Tensor, text: str) -> None:
    """A parse result is `[M, T, 4]` float32; each box is absent (all NaN) or finite with x1 > x0, y1 > y0."""
    assert boxes.dim() == 3 and boxes.shape[1:] == (T_FRAMES, 4) and boxes.dtype == torch.float32
    nan = torch.isnan(boxes)
    assert not torch.isinf(boxes).any(), text
    assert torch.equal(nan.any(-1), nan.all(-1)), text
    b = boxes[~nan.any(-1)]
    assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all(), text


def parse_or_error(text: str):
    """parse_boxes -> tensor, or None after an AnyCrowdError; anything else fails the test."""
    try:
        boxes = parse_boxes(text, T_FRAMES, FRAME_SIZE)
    except AnyCrowdError as e:
        assert str(e).strip()
        assert validate_boxes_text(text, T_FRAMES) is not None or not has_boxes(text)
        return None
    check_boxes_result(boxes, text)
    return boxes


def check_boxes_round_trip(boxes: torch.Tensor) -> None:
    """format_boxes writes text that parses back, and formatting is idempotent after rounding
    (unless every number is <= 1: the syntax reads those as fractions of the frame)."""
    for every in (1, 3):
        text = format_boxes(boxes, every=every)
        if all(float(v) <= 1 for v in re.findall(r"-?\d+(?:\.\d+)?", re.sub(r"^\d+:|;\s*\d+:", ",", text, flags=re.M))):
            continue
        again = parse_boxes(text, T_FRAMES, FRAME_SIZE)
        check_boxes_result(again, text)
        assert format_boxes(again, every=every) == text


@fuzz(700)
@given(boxes_text())
@example("0: 120,40,260,470; inf: 300,40,440,470")
@example("nan: 1,2,30,40")
@example("1e309: 1,2,30,40")
@example("0: 1,2,3e38,40")
@example("0: 0,0,1e-300,1e-300")
@example("9" * 5000 + ": 1,2,30,40")
@example("0: 1,2,30,40; 00: 5,6,70,80")
def test_boxes_text_parses_or_raises_anycrowderror(text):
    boxes = parse_or_error(text)
    if boxes is not None:
        check_boxes_round_trip(boxes)


@fuzz(300)
@given(boxes_json())
@example("[[0, 0, 10, " + "1" * 400 + "]]")
@example("[[0, 0, 10, 1e308]]")
@example("[[0, NaN, 10, 20]]")
@example('[{"0": [0, 0, 10, 20], "00": [0, 0, 30, 40]}]')
@example("[[true, false, true, true]]")
@example("[" * 3000 + "]" * 3000)
def test_boxes_json_parses_or_raises_anycrowderror(text):
    boxes = parse_or_error(text)
    if boxes is not None:
        check_boxes_round_trip(boxes)


@fuzz(300)
@given(st.one_of(st.text(max_size=60), st.text("0123456789,.:;-+ e\n#[]{}\"nafINulo\t", max_size=60)))
def test_boxes_random_text_parses_or_raises_anycrowderror(text):
    boxes = parse_or_error(text)
    if boxes is not None:
        check_boxes_round_trip(boxes)


@st.composite
def pixel_tracks(draw):
    """Integer pixel boxes `[M, T, 4]`, NaN where absent, at least one coordinate > 1 px."""
    m = draw(st.integers(1, 3))
    rows = []
    for _ in range(m * T_FRAMES):
        if draw(st.integers(0, 4)) == 0:
            rows.append([math.nan] * 4)
        else:
            x0, y0 = draw(st.integers(-50, 800)), draw(st.integers(-50, 450))
            rows.append([x0, y0, x0 + draw(st.integers(1, 300)), y0 + draw(st.integers(1, 300))])
    boxes = torch.tensor(rows, dtype=torch.float32).reshape(m, T_FRAMES, 4)
    finite = boxes[~torch.isnan(boxes)]
    if finite.numel() == 0 or float(finite.max()) <= 1:
        boxes[0, 0] = torch.tensor([10.0, 20.0, 110.0, 220.0])
    return boxes


@fuzz(150)
@given(pixel_tracks(), st.integers(1, 5))
def test_format_then_parse_round_trips_pixel_boxes(boxes, every):
    text = format_boxes(boxes, every=every)
    again = parse_boxes(text, T_FRAMES, FRAME_SIZE)
    if every == 1:
        assert same(again, boxes), text  # every frame written: exact
    assert format_boxes(again, every=every) == text
    assert torch.equal(torch.isnan(again), torch.isnan(boxes))  # presence survives any spacing


def test_format_boxes_refuses_infinite_and_widens_sub_pixel_boxes():
    with pytest.raises(AnyCrowdError, match="infinite"):
        format_boxes(torch.tensor([[[0.0, 0.0, math.inf, 10.0]]]))
    thin = torch.tensor([[[10.2, 0.0, 10.4, 5.0]]])
    assert format_boxes(thin) == "0: 10,0,11,5"
    assert parse_boxes(format_boxes(thin), 1, FRAME_SIZE).tolist() == [[[10.0, 0.0, 11.0, 5.0]]]


@pytest.mark.parametrize("text, words", [
    ("0: 1,2,30,40; inf: 5,6,70,80", "keyframe 'inf' is not a frame number"),
    ("nan: 1,2,30,40", "keyframe 'nan' is not a frame number"),
    ("1e309: 1,2,30,40", "must be a whole frame number >= 0"),
    ("-0: 1,2,30,40", "must be a whole frame number >= 0"),
    ("9" * 50 + ": 1,2,30,40", "too large for a frame number"),
    ("0: 1,2,inf,40", "non-finite number 'inf'"),
    ("0: 1,2,1e309,40", "non-finite number '1e309'"),
    ("1,2,30,1e7", "'1e7' in box '1,2,30,1e7' is out of range"),
    ("1,2,3_0,40", "'3_0' is not a number"),
    ("0: 1,2,30,40; 00: 5,6,70,80", "keyframe 0 is given twice"),
    ("[[0, NaN, 10, 20]]", "character 0: box [0, nan, 10, 20] has a non-finite number nan"),
    ("[[0, 0, 10, " + "1" * 400 + "]]", "non-finite number inf"),
    ("[[true, 0, 10, 20]]", "True is not a number"),
    ('[{"0": [0, 0, 10, 20], "00": [0, 0, 30, 40]}]', "keyframe 0 is given twice"),
    ("[" * 3000 + "]" * 3000, "nested too deeply"),
    ("0: 0,0,1e-300,1e-300", "x1 <= x0 or y1 <= y0"),
])
def test_bad_numbers_name_the_line_keyframe_and_number(text, words):
    with pytest.raises(AnyCrowdError) as err:
        parse_boxes(text, T_FRAMES, FRAME_SIZE)
    msg = str(err.value)
    assert words in msg and "Boxes syntax" in msg
    assert len(msg.splitlines()[0]) < 400  # a pasted 5000-digit number is not echoed in full


def test_unicode_digits_read_as_the_numbers_they_are():
    assert parse_boxes("٠: ١٠,٢٠,٣٠,٤٠", 1, FRAME_SIZE).tolist() == [[[10.0, 20.0, 30.0, 40.0]]]


# ------------------------------------------------------------------ binding syntax


def three_tracks(ids=(0, 1, 2)) -> PoseTracks:
    t = 3
    kp = torch.zeros(3, t, NUM_KEYPOINTS, 3)
    boxes = torch.tensor([[10.0, 10.0, 40.0, 60.0], [50.0, 10.0, 80.0, 60.0], [90.0, 10.0, 120.0, 60.0]])
    kp[:, :, :18, 0] = ((boxes[:, 0] + boxes[:, 2]) / 2)[:, None, None]
    kp[:, :, :18, 1] = 30.0
    kp[:, :, :18, 2] = 0.9
    return PoseTracks(kp, boxes[:, None].repeat(1, t, 1), torch.ones(3, t, dtype=torch.bool), 128, 192, list(ids))


TRACKS = {"0,1,2": three_tracks(), "3,5,9": three_tracks((3, 5, 9))}
EMPTY_TRACKS = PoseTracks(torch.zeros(0, 3, NUM_KEYPOINTS, 3), torch.zeros(0, 3, 4), torch.zeros(0, 3, dtype=torch.bool),
                          128, 192, [])


@st.composite
def binding_clause(draw):
    letter = draw(st.sampled_from(list("ABCDZabc") + ["AB", "1", "#", "é", "", " A"]))
    eq = draw(st.sampled_from(["=", "=", " = ", "==", "", ":"]))
    track = st.one_of(st.sampled_from(["0", "1", "2", "3", "5", "9"]), st.integers(0, 12).map(str),
                      st.sampled_from(["9" * 30, "9" * 5000, "0000000001", "١", "-1", "", " ", "0x1", "1.5", "T1"]))
    tracks = draw(st.sampled_from(["+", " + ", "++"])).join(draw(st.lists(track, min_size=1, max_size=3)))
    clause = f"{letter}{eq}{tracks}"
    if draw(st.booleans()):
        terms = ""
        for _ in range(draw(st.integers(0, 3))):
            sign = draw(st.sampled_from(["+", "-", "", " + ", " - "]))
            number = draw(st.one_of(st.floats(0, 3, allow_nan=False).map(lambda f: f"{f:.3g}"),
                                    st.sampled_from(["0", ".5", "2.", "9" * 400, "1" * 320, "9" * 7, "1e5", "inf",
                                                     "nan", "١.٥", "", "1000001"])))
            unit = draw(st.sampled_from(["w", "h", "px", "py", "", "pz", " w", "W"]))
            terms += f"{sign}{number}{unit}"
        clause += draw(st.sampled_from(["@", "@ ", "@@"])) + terms
    return clause


@st.composite
def binding_text(draw):
    clauses = draw(st.lists(binding_clause(), min_size=0, max_size=4))
    if draw(st.booleans()):
        clauses += ["A=0", "B=1", "C=2"]  # complete a 3-identity binding
    return draw(st.sampled_from([",", ", ", ";", "\n", " ", ",,", "\r\n", " ,\t"])).join(clauses)


def check_binding(text: str, tracks: PoseTracks, n: int) -> None:
    try:
        b = parse_binding(text, tracks, n)
    except AnyCrowdError as e:
        assert str(e).strip()
        return
    check_binding_syntax(text)  # what parses passes the early check
    m = len(b.identities)
    assert m == len(b.sources) == len(b.source_ids) == b.offsets.shape[0] == b.tracks.num_tracks
    assert sorted(set(b.identities)) == list(range(n))
    assert torch.isfinite(b.offsets).all(), text
    present = b.tracks.present
    boxes = b.tracks.boxes[present]
    assert torch.isfinite(boxes).all() and ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all(), text
    assert torch.isnan(b.tracks.boxes[~present]).all()
    assert torch.isfinite(b.tracks.keypoints).all()
    # the canonical string parses back to the same binding
    again = parse_binding(b.to_string(), tracks, n)
    assert (again.identities, again.sources, again.source_ids) == (b.identities, b.sources, b.source_ids)
    assert torch.equal(again.offsets, b.offsets) and again.to_string() == b.to_string()


@fuzz(500)
@given(binding_text(), st.sampled_from(sorted(TRACKS)), st.integers(1, 4))
@example("A=" + "9" * 5000, "0,1,2", 1)
@example("A=0@+" + "9" * 400 + "w, B=1, C=2", "0,1,2", 3)
@example("A=0@+" + "1" * 320 + "px-" + "1" * 320 + "px, B=1, C=2", "0,1,2", 3)
@example("A=0@+1000001px, B=1", "0,1,2", 2)
@example("A=0@+5000w, B=1", "0,1,2", 2)
@example("A=١, B=0@+١.٥w", "0,1,2", 2)
def test_binding_parses_or_raises_anycrowderror(text, ids, n):
    check_binding(text, TRACKS[ids], n)
    try:
        check_binding_syntax(text)
    except AnyCrowdError:
        pass


@fuzz(200)
@given(st.one_of(st.text(max_size=40), st.text("ABCab=0123456789+-@.,; \npxywh\t#", max_size=40)),
       st.integers(1, 3))
def test_binding_random_text_parses_or_raises_anycrowderror(text, n):
    check_binding(text, TRACKS["0,1,2"], n)
    try:
        check_binding_syntax(text)
    except AnyCrowdError:
        pass


@pytest.mark.parametrize("text, words", [
    ("A=" + "9" * 5000, "track number 999999999999... is too large"),
    ("A=0@+" + "9" * 400 + "w", "offset number 999999999999... is out of range"),
    ("A=0@+1000001px", "offset number 1000001 is out of range"),
    ("A=0@+600000px+600000px", "shifts by +1.2e+06px"),
    ("A=0@+9999w", "out of range"),
])
def test_binding_number_errors_point_at_the_number(text, words):
    tracks = TRACKS["0,1,2"]
    with pytest.raises(AnyCrowdError) as err:
        parse_binding(text, tracks, 1)
    msg = str(err.value)
    assert words in msg
    line, caret = msg.splitlines()[1:3]
    assert len(line) < 100  # the line shown is cut around the caret, which stays under the problem
    assert line[caret.index("^")] in "19A"


def test_binding_without_tracks_is_an_anycrowderror():
    for text in (",", "A=0", ";;"):
        with pytest.raises(AnyCrowdError, match="No motion tracks|does not exist"):
            parse_binding(text, EMPTY_TRACKS, 1)
    with pytest.raises(AnyCrowdError, match="must be text"):
        check_binding_syntax(None)


# ------------------------------------------------------------------ trainer config overrides

config = pytest.importorskip("training.config")
CONFIG_KEYS = config._all_keys()
CONFIG_VALUES = [
    "0", "1", "-1", "2", "5", "9", "0.5", "2e-4", "1e3", "1.5", "-0", "1e309", "-1e309", "inf", "-inf", ".inf", "-.inf",
    ".nan", "nan", "NaN", "1e-400", "9" * 30, "9" * 5000, "-" + "1" * 4400, "true", "no", "null", "~", "", "[1,2]",
    "[", "{a: 1}", "[.nan]", "[1e309, 2]", "[0.9, .inf]", "[0.9, 0.999]", "x", "1_0", "١", "0x10", "fp32", "tsda",
    "- a", "!!python/none", "&a 1", "*a", "'q", "[1e999]", "{}", "[[1]]", "\t", "a,b", "dit,vace", "9,1e309",
    "[" * 1000 + "]" * 1000, "{" * 1000,
]


@st.composite
def override(draw):
    key = draw(st.one_of(st.sampled_from(CONFIG_KEYS), st.text("abcdefgilmnoprstuvw._", max_size=20)))
    key += draw(st.sampled_from(["", "", "", "", ".", "x", ".x", "..", " "]))
    value = draw(st.one_of(
        st.sampled_from(CONFIG_VALUES),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers().map(str),
        st.text("0123456789.e-+[],{}:naif ", max_size=14),
        st.text(max_size=12),
    ))
    return key + draw(st.sampled_from(["=", "=", "=", " = ", "", "=="])) + value


def non_finite_fields(obj, path=""):
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from non_finite_fields(getattr(obj, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from non_finite_fields(v, f"{path}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj):
        yield path


@fuzz(300)
@given(override())
@example("optim.lr=.nan")
@example("optim.lr=1e309")
@example("model.vace_strength=inf")
@example("train.val_sigmas=[.nan]")
@example("train.max_steps=" + "9" * 5000)
@example("optim.betas=[" + "1" * 5000 + ", 0.9]")
@example("optim.lr=" + "[" * 1000 + "]" * 1000)
@example("lora.branches=" + "{" * 1000)
def test_config_overrides_load_or_raise_anycrowderror(item):
    try:
        cfg = config.load_config(None, [item], check_files=False)
    except AnyCrowdError as e:
        assert str(e).strip()
    else:
        assert list(non_finite_fields(cfg)) == [], item  # NaN / infinity are refused, not trained with
    try:
        config.apply_override(config.RunConfig(), item)
    except AnyCrowdError:
        pass


# ------------------------------------------------------------------ frame count / size validators

def valid_count(n: int) -> bool:
    return n >= 1 and (n - 1) % 4 == 0


def suggested_counts(msg: str) -> list[int]:
    m = re.search(r"(?:to|e\.g\.) (\d+) or (\d+) frames", msg)
    assert m, msg
    return [int(m.group(1)), int(m.group(2))]


ANY_INT = st.one_of(st.integers(-20, 200), st.integers(), st.integers(-(2**70), 2**70))


@fuzz(400)
@given(ANY_INT)
@example(0)
@example(-1)
@example(2)
@example(10**100)
def test_frame_count_validators_on_any_int(n):
    lo, hi = codec.nearest_valid_frame_counts(n)
    assert valid_count(lo) and valid_count(hi) and lo <= hi
    assert (lo == hi) == valid_count(n)
    if n >= 1:
        assert lo <= n <= hi and hi - lo <= 4
    else:
        assert (lo, hi) == (1, 5)
    if valid_count(n):
        codec.check_frame_count(n)
        assert codec.pixel_frames(codec.latent_frames(n)) == n
        assert isinstance(codec.latent_frames(n), int)
    else:
        for call in (codec.check_frame_count, codec.latent_frames):
            with pytest.raises(AnyCrowdError) as err:
                call(n)
            msg = str(err.value)
            a, b = suggested_counts(msg)
            assert a != b and valid_count(a) and valid_count(b)
            if n < 1:
                assert "at least 1 frame" in msg and (a, b) == (1, 5)
            else:
                assert (a, b) == (lo, hi)
    if n >= 1:
        assert codec.pixel_frames(n) == 4 * (n - 1) + 1
    else:
        with pytest.raises(AnyCrowdError, match="at least 1 frame"):
            codec.pixel_frames(n)


@fuzz(300)
@given(ANY_INT, st.sampled_from([16, 64, 480]))
def test_frame_size_validator_on_any_int(v, other):
    ok = v >= 16 and v % 16 == 0
    for height, width, name in ((v, other, "height"), (other, v, "width")):
        if ok:
            codec.check_frame_size(height, width)
            continue
        with pytest.raises(AnyCrowdError) as err:
            codec.check_frame_size(height, width)
        msg = str(err.value)
        use = re.search(rf"{name} -?\d+ \(use (\d+)(?: or (\d+))?\)", msg)
        assert use, msg
        sizes = [int(s) for s in use.groups() if s is not None]
        assert len(set(sizes)) == len(sizes) and all(s >= 16 and s % 16 == 0 for s in sizes)


NOT_INTS = [True, False, 0.0, 5.0, 9.0, 5.5, -1.0, math.inf, -math.inf, math.nan, 1e308, "9", "", None, [9],
            np.float64(9.0), torch.tensor(9.0), torch.tensor([9, 9])]


@pytest.mark.parametrize("value", NOT_INTS, ids=repr)
def test_validators_refuse_bools_floats_and_text(value):
    for call in (codec.check_frame_count, codec.latent_frames, codec.pixel_frames, codec.nearest_valid_frame_counts,
                 lambda v: codec.check_frame_size(v, 64), lambda v: codec.check_frame_size(64, v)):
        with pytest.raises(AnyCrowdError, match="must be a whole number"):
            call(value)


@pytest.mark.parametrize("value", [np.int64(9), np.int32(9), torch.tensor(9)], ids=repr)
def test_validators_take_integer_scalars_of_numpy_and_torch(value):
    codec.check_frame_count(value)
    assert codec.latent_frames(value) == 3 and codec.pixel_frames(value) == 33
    codec.check_frame_size(value * 16, value * 16)
