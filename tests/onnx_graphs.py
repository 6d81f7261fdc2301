"""Tiny ONNX graphs with the exact input/output signatures of the DWPose files, emitting planted
outputs, so tests run the real onnxruntime session, pre-processing and decoding code.

yolox_l.onnx: "images" float32 [1, 3, 640, 640] -> "output" float32 [1, 8400, 85]
dw-ll_ucoco_384.onnx: "input" float32 [batch, 3, 384, 288] -> "simcc_x" [batch, 133, 576],
"simcc_y" [batch, 133, 768].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # old enough for every onnxruntime >= 1.17

YOLOX_HW = (640, 640)
YOLOX_STRIDES = (8, 16, 32)
YOLOX_ANCHORS = sum((640 // s) ** 2 for s in YOLOX_STRIDES)  # 8400
POSE_HW = (384, 288)
K = 133
SPLIT = 2


def _save(graph, path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, path)
    return path


def _const(name, array) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name))


def _zero_times_sum(inp: str, prefix: str) -> list:
    """Nodes computing `0 * sum(inp)` (a scalar), so the graph really consumes its input."""
    return [
        helper.make_node("ReduceSum", [inp], [f"{prefix}_sum"], keepdims=0),
        _const(f"{prefix}_zero", np.float32(0)),
        helper.make_node("Mul", [f"{prefix}_sum", f"{prefix}_zero"], [f"{prefix}_nil"]),
    ]


# ----------------------------------------------------------------------------- YOLOX


def anchor_index(stride: int, gx: int, gy: int) -> int:
    """Row of YOLOX's output for grid cell (gx, gy) of `stride` (strides 8, 16, 32 in order)."""
    offset = 0
    for s in YOLOX_STRIDES:
        if s == stride:
            return offset + gy * (YOLOX_HW[1] // s) + gx
        offset += (YOLOX_HW[0] // s) * (YOLOX_HW[1] // s)
    raise ValueError(stride)


def plant_box(table: np.ndarray, box_input_px, obj: float, cls: float = 1.0, label: int = 0,
              stride: int = 16) -> int:
    """Write the raw YOLOX row that decodes to `box_input_px` (xyxy in the 640x640 input)
    into the cell containing its centre; returns the row index."""
    x1, y1, x2, y2 = map(float, box_input_px)
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    gx, gy = int(cx // stride), int(cy // stride)
    i = anchor_index(stride, gx, gy)
    table[i, 0] = cx / stride - gx
    table[i, 1] = cy / stride - gy
    table[i, 2] = np.log(w / stride)
    table[i, 3] = np.log(h / stride)
    table[i, 4] = obj
    table[i, 5 + label] = cls
    return i


def empty_yolox_table() -> np.ndarray:
    return np.zeros((YOLOX_ANCHORS, 85), np.float32)


def yolox_graph(path, table: np.ndarray, pixel_gain: np.ndarray | None = None,
                pixel=(0, 5, 5)) -> Path:
    """YOLOX-signature graph: output = table + pixel_gain * images[0, c, y, x] / 255
    (+ 0 * sum(images)). `pixel_gain` lets a planted score depend on one input pixel, which
    exposes channel order, normalisation and letterbox padding."""
    gain = np.zeros_like(table) if pixel_gain is None else pixel_gain.astype(np.float32)
    c, y, x = pixel
    nodes = [
        _const("table", table[None].astype(np.float32)),
        _const("gain", gain[None]),
        _const("starts", np.array([0, c, y, x], np.int64)),
        _const("ends", np.array([1, c + 1, y + 1, x + 1], np.int64)),
        helper.make_node("Slice", ["images", "starts", "ends"], ["pix4"]),
        _const("shape111", np.array([1, 1, 1], np.int64)),
        helper.make_node("Reshape", ["pix4", "shape111"], ["pix"]),
        _const("inv255", np.float32(1 / 255)),
        helper.make_node("Mul", ["pix", "inv255"], ["pixn"]),
        helper.make_node("Mul", ["gain", "pixn"], ["dyn"]),
        helper.make_node("Add", ["table", "dyn"], ["t1"]),
        *_zero_times_sum("images", "z"),
        helper.make_node("Add", ["t1", "z_nil"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_yolox",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *YOLOX_HW])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, YOLOX_ANCHORS, 85])],
    )
    return _save(graph, path)


# ----------------------------------------------------------------------------- RTMPose


def plant_simcc(locs_input_px: np.ndarray, score_x: np.ndarray, score_y: np.ndarray | None = None):
    """SimCC maps `[133, 576]`, `[133, 768]` with one peak per keypoint at the bin of its
    location (input px * split ratio) and the given peak heights (zeros elsewhere)."""
    score_y = score_x if score_y is None else score_y
    sx = np.zeros((K, POSE_HW[1] * SPLIT), np.float32)
    sy = np.zeros((K, POSE_HW[0] * SPLIT), np.float32)
    bx = np.clip(np.rint(locs_input_px[:, 0] * SPLIT).astype(int), 0, sx.shape[1] - 1)
    by = np.clip(np.rint(locs_input_px[:, 1] * SPLIT).astype(int), 0, sy.shape[1] - 1)
    sx[np.arange(K), bx] = score_x
    sy[np.arange(K), by] = score_y
    return sx, sy


def _pose_io(batch):
    b = batch if batch is not None else "batch"
    return (
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [b, 3, *POSE_HW])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [b, K, POSE_HW[1] * SPLIT]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [b, K, POSE_HW[0] * SPLIT])],
    )


def pose_table_graph(path, simcc_x: np.ndarray, simcc_y: np.ndarray, batch: int | None = None) -> Path:
    """RTMPose-signature graph whose batch item i outputs planted maps `simcc_x[i]`,
    `simcc_y[i]` (tables `[N_max, 133, 576]`, `[N_max, 133, 768]` sliced to the batch size),
    plus 0 * sum(input). `batch=None` makes the batch axis dynamic, as in the real file."""
    nodes = [
        _const("tx", simcc_x.astype(np.float32)),
        _const("ty", simcc_y.astype(np.float32)),
        helper.make_node("Shape", ["input"], ["ishape"]),
        _const("zero1", np.array([0], np.int64)),
        _const("one1", np.array([1], np.int64)),
        helper.make_node("Slice", ["ishape", "zero1", "one1"], ["n"]),
        helper.make_node("Slice", ["tx", "zero1", "n", "zero1"], ["sx"]),
        helper.make_node("Slice", ["ty", "zero1", "n", "zero1"], ["sy"]),
        *_zero_times_sum("input", "z"),
        helper.make_node("Add", ["sx", "z_nil"], ["simcc_x"]),
        helper.make_node("Add", ["sy", "z_nil"], ["simcc_y"]),
    ]
    graph = helper.make_graph(nodes, "tiny_rtmpose_table", *_pose_io(batch))
    return _save(graph, path)


def pose_blob_graph(path, gain: float = 0.4, batch: int | None = None) -> Path:
    """RTMPose-signature graph that follows the image: every keypoint's SimCC peak sits at the
    column / row holding the largest value of input channel 0 (normalised red, for RGB input),
    upsampled by the split ratio, times `gain`. A bright red dot in the frame thus comes back
    as the keypoint location through the real crop warp and its inverse."""
    h, w = POSE_HW
    nodes = [
        _const("c_starts", np.array([0], np.int64)),
        _const("c_ends", np.array([1], np.int64)),
        _const("c_axes", np.array([1], np.int64)),
        helper.make_node("Slice", ["input", "c_starts", "c_ends", "c_axes"], ["red"]),  # [N,1,h,w]
        helper.make_node("ReduceMax", ["red"], ["colmax"], axes=[2], keepdims=0),  # [N,1,w]
        helper.make_node("ReduceMax", ["red"], ["rowmax"], axes=[3], keepdims=0),  # [N,1,h]
        _const("g", np.float32(gain)),
    ]
    for src, n, out in (("colmax", w, "simcc_x"), ("rowmax", h, "simcc_y")):
        nodes += [
            helper.make_node("Unsqueeze", [src, "ax3"], [f"{out}_u"]),  # [N,1,n,1]
            helper.make_node("Concat", [f"{out}_u", f"{out}_u"], [f"{out}_d"], axis=3),  # [N,1,n,2]
            _const(f"{out}_shape", np.array([0, 1, n * SPLIT], np.int64)),
            helper.make_node("Reshape", [f"{out}_d", f"{out}_shape"], [f"{out}_r"]),  # [N,1,2n]
            _const(f"{out}_k", np.array([1, K, 1], np.int64)),
            helper.make_node("Expand", [f"{out}_r", f"{out}_k"], [f"{out}_e"]),  # [N,K,2n]
            helper.make_node("Mul", [f"{out}_e", "g"], [out]),
        ]
    nodes.insert(0, _const("ax3", np.array([3], np.int64)))
    graph = helper.make_graph(nodes, "tiny_rtmpose_blob", *_pose_io(batch))
    return _save(graph, path)
