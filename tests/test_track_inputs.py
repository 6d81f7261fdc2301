"""The shared track and box inputs of the nodes (nodes/track_inputs.py), without ComfyUI: one
function gives IILR Encode and Long Video Sampler the same boxes, binding and redrawn control,
whichever input (boxes text, track masks, pose tracks) carries the motion."""

import pytest
import torch

from anycrowd_core.boxes import boxes_from_masks, resize_boxes
from anycrowd_core.decoupler import decouple_instances
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.pose.types import NUM_KEYPOINTS, PoseTracks
from anycrowd_core.scenes import make_scene
from pack import load_pack

pack = load_pack()
track_inputs = pack.nodes.track_inputs
reference_instances = pack.nodes.reference_instances
H, W, T = 64, 96, 9


@pytest.fixture(scope="module")
def scene():
    return make_scene(num_characters=2, num_frames=T, height=H, width=W, seed=0)


@pytest.fixture(scope="module")
def reference(scene):
    instances = decouple_instances(scene.reference_image, scene.reference_masks)
    return reference_instances.DecoupledReference(instances, scene.reference_image, scene.reference_masks.float())


def boxes_text(scene) -> str:
    return "\n".join("; ".join(f"{t}: " + ",".join(f"{v:g}" for v in scene.track_boxes[m, t].tolist())
                               for t in range(T)) for m in range(2))


def test_boxes_text_and_track_masks_are_bound_and_mapped_to_the_output_size(scene, reference):
    out = (2 * H, 2 * W)
    from_text = track_inputs.character_boxes(reference, boxes_text(scene), "1,0", T, (H, W), out, "IILR Encode")
    masks = scene.track_masks.float().reshape(-1, H, W)
    from_masks = track_inputs.character_boxes(reference, "", "1,0", T, (H, W), out, "IILR Encode", track_masks=masks)
    for (boxes, identities, redrawn), drawn in ((from_text, scene.track_boxes),
                                                (from_masks, boxes_from_masks(scene.track_masks))):
        assert identities == [1, 0] and redrawn is None  # index form: boxes stay in line order
        assert torch.allclose(boxes, resize_boxes(drawn, (H, W), out), equal_nan=True)


def test_pose_tracks_are_padded_bound_and_redrawn_when_the_binding_leaves_one_out(scene, reference):
    kp = torch.zeros(3, T, NUM_KEYPOINTS, 3)
    kp[:2, :, :18] = scene.keypoints
    kp[2] = kp[0]
    boxes = torch.cat([scene.track_boxes, scene.track_boxes[:1]])
    tracks = PoseTracks(kp, boxes, ~torch.isnan(boxes[..., 0]), H, W, [0, 1, 2])
    got, identities, redrawn = track_inputs.character_boxes(reference, "", "A=1, B=0", T, (H, W), (H, W),
                                                            "Long Video Sampler", tracks=tracks)
    assert identities == [0, 1] and got.shape == (2, T, 4)
    assert redrawn is not None and redrawn.shape == (T, H, W, 3)  # track 2 is left out of the control video
    x0, _, x1, _ = scene.track_boxes[1, 0].tolist()
    assert got[0, 0, 0] == pytest.approx(max(0.0, x0 - 0.1 * (x1 - x0)), abs=1e-4)  # 10% padding, clipped


def test_each_input_error_names_the_input_and_the_fix(scene, reference):
    cases = [
        (dict(boxes=""), "No per-character boxes"),
        (dict(boxes=boxes_text(scene), binding="0,5"), "refers to characters [5]"),
        (dict(boxes=boxes_text(scene), binding="A=0, B=0@+0.3w"), "connect the tracks input"),
        (dict(boxes="100,70,120,90\n100,70,120,90"), "no box inside the 96x64 output frame"),
    ]
    for args, fragment in cases:
        args = {"binding": "", **args}
        with pytest.raises(AnyCrowdError) as err:
            track_inputs.character_boxes(reference, args["boxes"], args["binding"], T, (H, W), (H, W), "IILR Encode")
        assert fragment in str(err.value), (args, str(err.value))
    with pytest.raises(AnyCrowdError, match="another shape"):
        track_inputs.track_masks_input(torch.ones(T, 32, 32), (H, W))
    with pytest.raises(AnyCrowdError, match="shorter than length = 13"):
        track_inputs.control_video_input(scene.pose_video, 13)
    with pytest.raises(AnyCrowdError, match="must come from AnyCrowd Instance Decoupler"):
        reference_instances.reference_input(reference.instances)
