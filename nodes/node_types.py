"""Names of the custom ComfyUI socket types AnyCrowd nodes pass between each other.

ComfyUI only compares these strings when linking sockets; the objects they carry are
plain Python objects defined here and in `anycrowd_core`.
"""

from __future__ import annotations

INSTANCES = "ANYCROWD_INSTANCES"
"""`nodes.reference_instances.DecoupledReference`: the core `DecoupledInstances` (isolated identity
images `[N,H,W,3]`, background `[H,W,3]`, masks, boxes) plus the original reference IMAGE
`[H,W,3]` and instance MASK `[N,H,W]` it was built from (pixels, 0..1)."""

LAYOUT = "ANYCROWD_LAYOUT"
"""`anycrowd_core.layout.TokenLayout`: token groups of one sampled sequence (identity
references, background reference, video tokens per identity, candidate table), built for
one width x height x length and one character count."""

GATES = "ANYCROWD_GATES"
"""`anycrowd_core.attention.agf.GateBank`: the AGF Gating Blocks of every patched
self-attention layer (DiT and VACE branches), used by attention mode `tsda` with agf `gated`."""

TRACKS = "ANYCROWD_TRACKS"
"""`anycrowd_core.pose.types.PoseTracks`: people followed through the driving video with
stable ids (keypoints `[M,T,128,3]` px, padded boxes `[M,T,4]` px with NaN where absent,
presence `[M,T]`), in pixels of the video they were extracted from."""
