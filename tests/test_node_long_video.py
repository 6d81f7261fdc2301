"""AnyCrowd Long Video Sampler without ComfyUI: declaration, input resolution, the
token-replace latent and keep mask, exact per-window layouts, the window wrapper's slicing
and averaging, the reference cache, and the errors raised before any sampling."""

import inspect

import pytest
import torch

from anycrowd_core.codec import TestCodec
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.long_video import plan_windows
from anycrowd_core.long_video_run import ReferenceCache
from node_inputs import boxes_text
from pack import load_pack

pack = load_pack()
nodes = pack.nodes
lvc = nodes.long_video_comfy
H, W, T = 64, 96, 17


@pytest.fixture(scope="module")
def instances(scene):
    return nodes.node_decoupler.AnyCrowdInstanceDecoupler().decouple(
        scene.reference_image[None], scene.reference_masks.float())[0]


def test_node_is_registered_with_tooltips_and_matching_signature():
    cls = pack.NODE_CLASS_MAPPINGS["AnyCrowdLongVideoSampler"]
    assert not hasattr(cls, "MISSING_DEPENDENCY") and cls.RETURN_TYPES == ("IMAGE",)
    params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    types = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, decl in types[section].items():
            assert name in params and decl[1]["tooltip"], name
            if section == "optional":
                assert params[name].default is not inspect.Parameter.empty
    assert types["required"]["strategy"][0] == ("token_replace", "sliding_window")
    assert types["required"]["segment_frames"][1]["default"] == 81 and types["required"]["overlap_frames"][1]["default"] == 5
    assert set(inspect.signature(cls.VALIDATE_INPUTS).parameters) <= set(params)


def test_validate_inputs_reports_bad_plans_and_sizes_before_the_graph_runs():
    v = pack.NODE_CLASS_MAPPINGS["AnyCrowdLongVideoSampler"].VALIDATE_INPUTS
    assert v(width=832, height=480, strategy="token_replace", segment_frames=81, overlap_frames=5) is True
    assert "4n+1" in v(strategy="token_replace", segment_frames=80, overlap_frames=5)
    assert "overlap" in v(strategy="token_replace", segment_frames=81, overlap_frames=4)
    assert "multiples of 16" in v(width=830, height=480)
    assert "choose one of" in v(strategy="context_windows")


def test_inputs_are_resized_and_boxes_mapped_through_the_same_crop(scene, instances):
    big = torch.nn.functional.interpolate(scene.pose_video.movedim(-1, 1), scale_factor=2).movedim(1, -1)
    inputs = nodes.node_long_video.resolve_inputs(instances, big, W, H, boxes_text(scene.track_boxes * 2), "",
                                                  None, None, 1.0, 0.5, True)
    assert inputs.control.shape == (T, H, W, 3) and inputs.num_frames == T
    torch.testing.assert_close(inputs.boxes, scene.track_boxes.clamp(0, W), equal_nan=True)
    assert inputs.binding == [0, 1] and inputs.face is None


def test_token_replace_latent_holds_the_context_right_after_the_references_with_a_keep_mask():
    context = torch.randn(16, 2, 4, 6)
    latent, mask = lvc.context_latent((16, 3 + 3, 4, 6), 3, context)
    assert latent.shape == (1, 16, 6, 4, 6) and mask.shape == (1, 1, 6, 4, 6)
    assert torch.equal(latent[0, :, 3:5], context) and (latent[0, :, :3] == 0).all() and (latent[0, :, 5:] == 0).all()
    assert mask[0, 0, :, 0, 0].tolist() == [1, 1, 1, 0, 0, 1]
    first, none = lvc.context_latent((16, 6, 4, 6), 3, None)
    assert none is None and (first == 0).all()


def test_window_wrapper_slices_every_vace_context_and_averages_by_update_count():
    windows = plan_windows(17, 9, 5)  # three windows of 3 latent frames over 5
    hooks = [object() for _ in windows]
    wrapper = lvc.WindowedModelFunction(windows, hooks, num_ref_frames=2)
    x = torch.randn(2, 16, 7, 2, 3)
    vc = torch.randn(2, 2, 96, 7, 2, 3)  # two VACE contexts (pose + face)
    seen = []

    def apply_model(x_w, t, **c):
        seen.append(c["transformer_options"][nodes.comfy_patch.HOOK_KEY])
        assert x_w.shape[2] == c["vace_context"].shape[3] == 5
        assert torch.equal(c["vace_context"][:, :, :, :2], vc[:, :, :, :2])  # references in every window
        return x_w * 2 + c["vace_context"][:, :, :16].sum(1)

    y = wrapper(apply_model, {"input": x, "timestep": torch.ones(2), "c": {"vace_context": vc, "transformer_options": {}}})
    assert seen == hooks and wrapper.calls == 3
    torch.testing.assert_close(y, x * 2 + vc[:, :, :16].sum(1))  # overlaps averaged: the same value everywhere
    ramped = lvc.WindowedModelFunction(windows, hooks, num_ref_frames=2, ramp=True)
    torch.testing.assert_close(ramped(apply_model, {"input": x, "timestep": torch.ones(2),
                                                    "c": {"vace_context": vc, "transformer_options": {}}}), y)


def test_window_wrapper_calls_an_earlier_wrapper_per_window():
    windows = plan_windows(13, 9, 5)
    calls = []

    def previous(apply_model, args):
        calls.append(args["input"].shape[2])
        return apply_model(args["input"], args["timestep"], **args["c"])

    wrapper = lvc.WindowedModelFunction(windows, [None, None], num_ref_frames=1, previous=previous)
    x = torch.randn(1, 16, 5, 2, 2)
    y = wrapper(lambda x_w, t, **c: x_w, {"input": x, "timestep": torch.ones(1), "c": {}})
    assert calls == [4, 4] and torch.allclose(y, x)


def test_reference_cache_encodes_each_reference_image_once():
    calls = []

    class Codec(TestCodec):
        def encode(self, frames):
            calls.append(int(frames.shape[0]))
            return super().encode(frames)

    cache = ReferenceCache(Codec())
    img = torch.rand(1, 16, 16, 3)
    a = cache.encode(img)
    b = cache.encode(img.clone())
    cache.encode(torch.rand(5, 16, 16, 3))
    cache.encode(torch.rand(5, 16, 16, 3))
    assert torch.equal(a, b) and calls == [1, 5, 5]


def test_errors_before_sampling(scene, instances):
    node = nodes.node_long_video.AnyCrowdLongVideoSampler()
    from types import SimpleNamespace

    not_vace = SimpleNamespace(model=SimpleNamespace(diffusion_model=SimpleNamespace(blocks=[])))
    kwargs = dict(vae=None, positive=[], negative=[], instances=instances, control_video=scene.pose_video, width=W,
                  height=H, strength=1.0, boxes=boxes_text(scene.track_boxes), binding="", attention_mode="masked",
                  agf_mode="gated", seed=0, steps=2, cfg=3.0, sampler_name="euler", scheduler="simple", shift=8.0,
                  strategy="token_replace", segment_frames=9, overlap_frames=5)
    with pytest.raises(AnyCrowdError, match="Wan 2.1 VACE"):
        node.generate(not_vace, **kwargs)
    resolve = nodes.node_long_video.resolve_inputs
    with pytest.raises(AnyCrowdError, match="No per-character boxes"):
        resolve(instances, scene.pose_video, W, H, "", "", None, None, 1.0, 0.5, True)
    with pytest.raises(AnyCrowdError, match="face_video has 9 frames"):
        resolve(instances, scene.pose_video, W, H, boxes_text(scene.track_boxes), "", None, scene.video[:9], 1.0, 0.5, True)
    with pytest.raises(AnyCrowdError, match="binding"):
        resolve(instances, scene.pose_video, W, H, boxes_text(scene.track_boxes), "0,1,1", None, None, 1.0, 0.5, True)
