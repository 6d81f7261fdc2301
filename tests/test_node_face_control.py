"""AnyCrowd Face Control node without ComfyUI: declaration, the face stream appended as a
second VACE context aligned with IILR Encode's latent, face_video only without a layout,
binding rules shared with IILR Encode, and errors."""

import inspect

import pytest
import torch

from anycrowd_core.codec import TestCodec
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.iilr import encode_control_stream
from anycrowd_core.latent_format import process_in
from anycrowd_core.pose.types import PoseTracks
from anycrowd_core.scenes import make_scene
from node_inputs import text_cond
from pack import load_pack
from test_face_control import plant_tracks, static_centres
from comfy_vae_stand_in import TestVAE

pack = load_pack()
nodes = pack.nodes
H, W, T = 64, 96, 9




@pytest.fixture(scope="module")
def scene():
    return make_scene(num_characters=2, num_frames=T, height=H, width=W, seed=0, scenario="crossing")


@pytest.fixture(scope="module")
def encoded(scene):
    instances = nodes.node_decoupler.AnyCrowdInstanceDecoupler().decouple(
        scene.reference_image[None], scene.reference_masks.float())[0]
    boxes = "\n".join(",".join(f"{v:g}" for v in row) for row in ([5, 5, 45, 60], [50, 5, 90, 60]))
    return nodes.node_iilr_encode.AnyCrowdIILREncode().encode(
        text_cond(1.0), text_cond(-1.0), TestVAE(), instances, scene.pose_video, W, H, T, 1, 1.0, boxes=boxes)


def tracks():
    return plant_tracks(static_centres((25, 25), (72, 32)))


def test_node_is_registered_with_tooltips_and_matching_signature():
    cls = pack.NODE_CLASS_MAPPINGS["AnyCrowdFaceControl"]
    assert not hasattr(cls, "MISSING_DEPENDENCY")
    assert cls.RETURN_TYPES == ("CONDITIONING", "CONDITIONING", "IMAGE")
    params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    types = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, decl in types[section].items():
            assert name in params and decl[1]["tooltip"]
    assert types["optional"]["tracks"][0] == "ANYCROWD_TRACKS" and types["optional"]["layout"][0] == "ANYCROWD_LAYOUT"
    assert cls.VALIDATE_INPUTS(mode="eyes") != True and cls.VALIDATE_INPUTS(mode="local", strength=0.5) is True  # noqa: E712


def test_face_stream_is_appended_as_a_second_vace_context_with_its_own_strength(scene, encoded):
    positive, negative, latent, trim, layout = encoded
    pos, neg, face = nodes.node_face_control.AnyCrowdFaceControl().apply(
        positive, negative, TestVAE(), scene.video, "local", 0.4, 1.5, layout=layout, tracks=tracks())
    for before, after in ((positive, pos), (negative, neg)):
        opts, old = after[0][1], before[0][1]
        assert len(old["vace_frames"]) == 1 and len(opts["vace_frames"]) == 2
        assert opts["vace_strength"] == [1.0, 0.4]
        assert opts["vace_frames"][0] is old["vace_frames"][0]  # the pose stream is untouched
        assert opts["vace_frames"][1].shape == old["vace_frames"][0].shape  # aligned with IILR's latent
        assert opts["vace_frames"][1].shape[2] == latent["samples"].shape[2]
    assert face.shape == (T, H, W, 3)
    # in model space the reference slots hold nothing and the rest is the encoded face video
    stream = encode_control_stream(TestCodec(0), face, num_ref_frames=trim)
    got = pos[0][1]["vace_frames"][1][0]
    model_space = torch.cat([process_in(got[:16]), process_in(got[16:])])
    torch.testing.assert_close(model_space, stream[:32], atol=1e-5, rtol=1e-5)
    assert torch.equal(pos[0][1]["vace_mask"][1][0], stream[32:])


def test_without_a_layout_only_the_face_video_is_made(scene):
    positive = text_cond(1.0)
    pos, neg, face = nodes.node_face_control.AnyCrowdFaceControl().apply(
        positive, text_cond(-1.0), TestVAE(), scene.video, "global", 0.5, 1.5, tracks=tracks())
    assert pos is positive and face.shape == scene.video.shape
    assert (face == 0.5).float().mean() > 0.5 and (face != 0.5).any()


def test_pose_keypoint_input_works_like_tracks(scene):
    from anycrowd_core.pose.keypoint_format import tracks_to_pose_keypoint

    node = nodes.node_face_control.AnyCrowdFaceControl()
    via_tracks = node.apply(text_cond(), text_cond(), TestVAE(), scene.video, "local", 0.5, 1.5, tracks=tracks())[2]
    via_kp = node.apply(text_cond(), text_cond(), TestVAE(), scene.video, "local", 0.5, 1.5,
                        pose_keypoint=tracks_to_pose_keypoint(tracks()))[2]
    torch.testing.assert_close(via_kp, via_tracks, atol=1e-6, rtol=0)


def test_binding_picks_the_tracks_that_get_a_face_and_shifted_copies_read_their_source():
    bound = nodes.node_face_control.bound_tracks
    t = tracks()
    kept, offsets = bound(t, "", None)
    assert kept is t and torch.equal(offsets, torch.zeros(2, 2))
    one, offsets = bound(t, "A=1", 1)
    assert one.num_tracks == 1 and torch.equal(one.keypoints[0], t.keypoints[1])
    copies, offsets = bound(t, "A=0, B=0@+20px", 2)
    assert copies.num_tracks == 2 and offsets[1].tolist() == [20.0, 0.0]
    assert bound(t, "1,0", 2)[0].num_tracks == 2


def test_errors_name_the_fix(scene, encoded):
    node = nodes.node_face_control.AnyCrowdFaceControl()
    positive, negative, _latent, _trim, layout = encoded
    with pytest.raises(AnyCrowdError, match="connect tracks"):
        node.apply(positive, negative, TestVAE(), scene.video, "local", 0.5, 1.5, layout=layout)
    with pytest.raises(AnyCrowdError, match="same frames as the control video"):
        short = plant_tracks(static_centres((25, 25), (72, 32))[:, :5])
        node.apply(positive, negative, TestVAE(), scene.video[:5], "local", 0.5, 1.5, layout=layout, tracks=short)
    with pytest.raises(AnyCrowdError, match="ANYCROWD_LAYOUT"):
        node.apply(positive, negative, TestVAE(), scene.video, "local", 0.5, 1.5, layout="layout", tracks=tracks())
    wrong = PoseTracks(tracks().keypoints, tracks().boxes, tracks().present, 32, 48, [0, 1])
    with pytest.raises(AnyCrowdError, match="same video the pose extractor read"):
        node.apply(positive, negative, TestVAE(), scene.video, "local", 0.5, 1.5, tracks=wrong)
