"""The demo CLI as a newcomer meets it: `--help` names every flag's meaning and default, errors
name the flag to change, summary.json labels the size, and the preview omits no identity."""

import json
import re

import cv2
import pytest

from anycrowd_core.demo import main, parse_args


def test_help_gives_every_flag_a_meaning_and_its_default(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    flags = sorted(set(re.findall(r"^\s+(--[a-z]+)", text, flags=re.M)) - {"--help"})
    assert flags == ["--agf", "--binding", "--cfg", "--characters", "--fps", "--frames", "--height", "--mode",
                     "--model", "--out", "--reference", "--sampler", "--scenario", "--seed", "--shift", "--steps",
                     "--width"]
    # one help entry per flag, from the flag's line to the next flag's line
    entries = re.split(r"\n(?=\s+--[a-z]+)", text[text.index("options:"):])
    for flag in flags:
        entry = " ".join(next(e for e in entries if e.strip().startswith(flag)).split())
        assert "default" in entry or "required" in entry, entry
    flat = " ".join(text.split())
    assert "number of characters in the scene (default: 3)" in flat and "(default: swap)" in flat
    assert "(default: None)" not in flat and "(default: )" not in flat


def test_scene_errors_name_the_flags_to_change(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--characters", "50", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "--characters 50 with --width 192" in err and "larger --width or fewer --characters" in err
    assert "num_characters" not in err


def test_random_demo_labels_the_size_and_previews_every_identity(tmp_path):
    code = main(["--out", str(tmp_path), "--model", "random", "--characters", "8", "--frames", "5",
                 "--height", "64", "--width", "320", "--steps", "1", "--mode", "masked"])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["frames"], summary["height"], summary["width"]) == (5, 64, 320)
    assert summary["identities"] == 8 and "agf" not in summary  # masked mode fuses nothing
    sheet = cv2.imread(str(tmp_path / "preview.png"))
    assert sheet.shape[1] == 9 * 320  # 8 identities + the background, one column each


def test_unknown_sampler_is_refused_by_the_flag_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), "--model", "random", "--sampler", "foo"])
    assert exit_info.value.code == 2
    assert "argument --sampler: invalid choice: 'foo' (choose from 'dpmpp_2m', 'euler', 'heun')" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
