"""Output files are never half-written: folders are probed before any work, and an
interrupted write (Ctrl-C, a crash, a full disk) leaves the final name absent or as it was."""

import pytest
import torch

from anycrowd_core import demo, video_io
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.files import atomic_output, ensure_output_dir, write_text_atomic


def test_an_output_folder_is_created_and_probed(tmp_path):
    folder = ensure_output_dir(tmp_path / "a" / "b", "--out")
    assert folder.is_dir() and list(folder.iterdir()) == []


@pytest.mark.parametrize("where", ["file", "proc"])
def test_an_unusable_output_folder_names_the_flag(tmp_path, where):
    path = tmp_path / "afile" if where == "file" else "/proc/anycrowd"
    if where == "file":
        path.write_text("keep me")
    with pytest.raises(AnyCrowdError, match="--out"):
        ensure_output_dir(path, "--out")
    if where == "file":
        assert path.read_text() == "keep me"


def test_an_interrupted_write_keeps_the_previous_file_and_leaves_no_partial(tmp_path):
    final = tmp_path / "summary.json"
    write_text_atomic(final, "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(final) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert final.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_an_mp4_interrupted_after_its_first_frame_is_not_left_behind(tmp_path, monkeypatch):
    import av

    real = av.VideoFrame.from_ndarray
    calls = [0]

    def from_ndarray(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", from_ndarray)
    with pytest.raises(KeyboardInterrupt):
        video_io.write_mp4(torch.rand(5, 16, 16, 3), tmp_path / "out.mp4", fps=8)
    assert list(tmp_path.iterdir()) == []


def test_written_files_have_normal_permissions(tmp_path):
    path = video_io.write_png(torch.rand(8, 8, 3), tmp_path / "p.png")
    assert path.stat().st_mode & 0o644 == 0o644


def test_nan_frames_are_refused_not_written_black(tmp_path):
    frames = torch.rand(3, 16, 16, 3)
    frames[1, 2, 3] = float("nan")
    with pytest.raises(AnyCrowdError, match="NaN"):
        video_io.write_mp4(frames, tmp_path / "v.mp4")
    assert not (tmp_path / "v.mp4").exists()


def test_demo_ctrl_c_exits_130_saying_nothing_is_half_written(tmp_path, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run_demo", interrupted)
    assert demo.main(["--out", str(tmp_path)]) == 130
    assert "half-written" in capsys.readouterr().err
