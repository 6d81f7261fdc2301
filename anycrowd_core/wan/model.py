"""Wan 2.1 VACE diffusion transformer, readable top to bottom, with the official key names.

Numerically equal to ComfyUI's `VaceWanModel` (checked by tests/test_wan_vs_comfyui.py),
so a checkpoint behaves the same headless and in ComfyUI. Every self-attention layer
of both branches hands its projections to an `AttentionHook` (anycrowd_core.attention.ops),
which is where TSDA / masked attention plug in without touching the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..attention.ops import AttentionHook, SelfAttentionOps, global_attention, sdpa
from ..errors import AnyCrowdError
from .config import WanVaceConfig
from .rope import apply_rope, grid_positions, rope_cos_sin


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """Wan's timestep embedding: `[N]` timesteps (0..1000) -> `[N, dim]` float32 [cos | sin]."""
    half = dim // 2
    t = t.to(torch.float32)
    inv_freq = torch.pow(10000, -torch.arange(half, device=t.device).to(t).div(half))
    angle = torch.outer(t, inv_freq)
    return torch.cat([torch.cos(angle), torch.sin(angle)], dim=1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x * (1 + scale) + shift, with per-frame `[B, F', C]` parameters over `[B, F'*n, C]` tokens.

    F' is 1 (one timestep per sample) or the number of latent frames (one per frame); the
    frame axis is split off x so each frame's tokens see their own parameters.
    """
    xs = x.unflatten(1, (shift.shape[1], -1))
    return torch.addcmul(shift.unsqueeze(2), xs, 1 + scale.unsqueeze(2)).flatten(1, 2)


def gated_add(x: Tensor, y: Tensor, gate: Tensor) -> Tensor:
    """x + y * gate with a per-frame gate `[B, F', C]`."""
    frames = gate.shape[1]
    return torch.addcmul(x.unflatten(1, (frames, -1)), y.unflatten(1, (frames, -1)), gate.unsqueeze(2)).flatten(1, 2)


class Float32Conv3d(nn.Conv3d):
    """Patch embedding that stays float32 under `model.to(bf16)`, as in ComfyUI.

    Latents carry small values whose rounding in half precision would shift every token,
    so ComfyUI builds these convolutions in float32 regardless of the model dtype.
    """

    def _apply(self, fn, recurse=True):
        def keep_float32(t: Tensor) -> Tensor:
            out = fn(t)
            if out.is_floating_point() and out.dtype != torch.float32:
                out = t.to(device=out.device, dtype=torch.float32)
            return out

        return super()._apply(keep_float32, recurse)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv3d(x.float(), self.weight.float(), self.bias.float(), self.stride)


class _AttentionProjections(nn.Module):
    """The q, k, v, o projections and the q/k RMSNorm of Wan's self- and cross-attention
    (the checkpoint's `q.weight` ... `norm_k.weight`, created in this order)."""

    def __init__(self, dim: int, num_heads: int, eps: float, qk_norm: bool):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()
        self.norm_k = nn.RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()


class WanSelfAttention(_AttentionProjections):
    """Self-attention with q/k RMSNorm and 3-axis RoPE; mixing delegated to an AttentionHook."""

    def __init__(self, dim: int, num_heads: int, eps: float, qk_norm: bool, branch: str, index: int):
        super().__init__(dim, num_heads, eps, qk_norm)
        self.head_dim = dim // num_heads
        self.branch, self.index = branch, index

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], attention: AttentionHook | None) -> Tensor:
        cos, sin = rope

        def qkv(tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            heads = (self.num_heads, self.head_dim)
            q = apply_rope(self.norm_q(self.q(tokens)).unflatten(-1, heads), cos, sin)
            k = apply_rope(self.norm_k(self.k(tokens)).unflatten(-1, heads), cos, sin)
            v = self.v(tokens).unflatten(-1, heads)
            return q, k, v

        def out(o: Tensor) -> Tensor:
            return self.o(o.flatten(-2))

        ops = SelfAttentionOps(qkv=qkv, out=out, branch=self.branch, index=self.index)
        return global_attention(x, ops) if attention is None else attention(x, ops)


class WanCrossAttention(_AttentionProjections):
    """Attention from video tokens to the embedded text tokens (no RoPE)."""

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        heads = (self.num_heads, -1)
        q = self.norm_q(self.q(x)).unflatten(-1, heads)
        k = self.norm_k(self.k(context)).unflatten(-1, heads)
        v = self.v(context).unflatten(-1, heads)
        return self.o(sdpa(q, k, v).flatten(-2))


class WanAttentionBlock(nn.Module):
    """One DiT block: modulated self-attention, cross-attention to text, modulated FFN."""

    def __init__(self, cfg: WanVaceConfig, branch: str, index: int):
        super().__init__()
        dim = cfg.dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.self_attn = WanSelfAttention(dim, cfg.num_heads, cfg.eps, cfg.qk_norm, branch, index)
        self.norm3 = nn.LayerNorm(dim, eps=cfg.eps) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = WanCrossAttention(dim, cfg.num_heads, cfg.eps, cfg.qk_norm)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))
        # shift/scale/gate for attention, then for the FFN, added to the timestep projection
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: Tensor, e: Tensor, rope, context: Tensor, attention: AttentionHook | None) -> Tensor:
        # e: [B, F', 6, C] timestep projection, F' = 1 or one per latent frame
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation.to(x.dtype).unsqueeze(0) + e).unbind(2)
        y = self.self_attn(modulate(self.norm1(x), shift1, scale1), rope, attention)
        x = gated_add(x, y, gate1)
        x = x + self.cross_attn(self.norm3(x), context)
        y = self.ffn(modulate(self.norm2(x), shift2, scale2))
        return gated_add(x, y, gate2)


class VaceBlock(WanAttentionBlock):
    """A VACE context block: a DiT block on the control tokens plus projections in and out.

    Block 0 injects the video tokens (before_proj(c) + x); every block emits a skip
    after_proj(c) that the DiT adds to its hidden state, scaled by the context's strength.
    """

    def __init__(self, cfg: WanVaceConfig, index: int):
        super().__init__(cfg, "vace", index)
        if index == 0:
            self.before_proj = nn.Linear(cfg.dim, cfg.dim)
        self.after_proj = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, c: Tensor, x: Tensor, e: Tensor, rope, context: Tensor, attention: AttentionHook | None):
        if self.self_attn.index == 0:
            c = self.before_proj(c) + x
        c = super().forward(c, e, rope, context, attention)
        return self.after_proj(c), c


class Head(nn.Module):
    """Final modulated LayerNorm and projection to patch pixels."""

    def __init__(self, cfg: WanVaceConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        # e: [B, F', C] timestep embedding (before the 6-way projection)
        shift, scale = (self.modulation.to(x.dtype).unsqueeze(0) + e.unsqueeze(2)).unbind(2)
        return self.head(modulate(self.norm(x), shift, scale))


class WanVaceModel(nn.Module):
    """Wan 2.1 DiT with the VACE context branch; the state dict is exactly the checkpoint's.

    Call: model(x, t, context, vace_context, vace_strength=1.0, attention=None)
      x:            `[B, in_dim=16, F, h, w]` noisy latents (h, w = pixels / 8, even)
      t:            `[B]` or `[B, F]` timesteps on Wan's 0..1000 scale (per latent frame allowed)
      context:      `[B, L_text, text_dim]` T5 features
      vace_context: `[B, 96, F, h, w]` for one context or `[N, B, 96, F, h, w]` for N contexts
      vace_strength: float, or one float per context
      attention:    AttentionHook for every self-attention layer, None = full attention
    Returns the flow-matching velocity `[B, out_dim, F, h, w]` in x's dtype.
    """

    def __init__(self, cfg: WanVaceConfig):
        super().__init__()
        self.config = cfg
        dim = cfg.dim
        self.gradient_checkpointing = False
        self.patch_embedding = Float32Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(WanAttentionBlock(cfg, "dit", i) for i in range(cfg.num_layers))
        self.head = Head(cfg)
        self.vace_blocks = nn.ModuleList(VaceBlock(cfg, n) for n in range(cfg.vace_layers))
        self.vace_patch_embedding = Float32Conv3d(cfg.vace_in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.vace_block_for_dit_block = cfg.vace_block_for_dit_block

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype (that of the transformer weights; patch embeddings stay float32)."""
        return self.text_embedding[0].weight.dtype

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in backward (torch.utils.checkpoint, non-reentrant)."""
        self.gradient_checkpointing = enabled

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        context: Tensor,
        vace_context: Tensor,
        vace_strength: float | Sequence[float] = 1.0,
        attention: AttentionHook | None = None,
        rope_positions: Tensor | None = None,
    ) -> Tensor:
        """See the class docstring. `rope_positions` `[L, 3]` overrides the (t, h, w) token
        positions used by RoPE (e.g. shifted positions for reference frames)."""
        cfg, dtype, out_dtype = self.config, self.dtype, x.dtype
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        vace_contexts = self._check_inputs(x, t, context, vace_context)
        strengths = self._strengths(vace_strength, vace_contexts.shape[0])
        batch = x.shape[0]

        # inputs are rounded to the model dtype first, as ComfyUI's BaseModel does
        x = self.patch_embedding(x.to(dtype)).to(dtype)
        grid = x.shape[2:]  # token grid (F, h/2, w/2)
        x = x.flatten(2).transpose(1, 2)  # [B, L, C] row-major over (t, h, w)

        # one timestep per sample ([B, 1]) or per latent frame ([B, F])
        t = t.reshape(batch, -1)
        e = self.time_embedding(sinusoidal_embedding(t.flatten(), cfg.freq_dim).to(dtype)).unflatten(0, (batch, -1))
        e0 = self.time_projection(e).unflatten(2, (6, cfg.dim))

        context = self.text_embedding(context.to(dtype))

        # all VACE contexts are embedded in one batch, then each runs its own VACE stream
        c = self.vace_patch_embedding(vace_contexts.flatten(0, 1).to(dtype)).to(dtype)
        c = list(c.flatten(2).transpose(1, 2).unflatten(0, (-1, batch)).unbind(0))

        if rope_positions is None:
            rope_positions = grid_positions(*grid, device=x.device)
        elif rope_positions.shape != (x.shape[1], 3):
            raise AnyCrowdError(
                f"rope_positions has shape {tuple(rope_positions.shape)}, expected ({x.shape[1]}, 3): "
                "one (t, h, w) position per token."
            )
        rope = rope_cos_sin(rope_positions, cfg.head_dim)

        x_orig = x
        for i, block in enumerate(self.blocks):
            x = self._run(block, x, e0, rope, context, attention)
            n = self.vace_block_for_dit_block.get(i)
            if n is not None:
                for j in range(len(c)):
                    skip, c[j] = self._run(self.vace_blocks[n], c[j], x_orig, e0, rope, context, attention)
                    x = x + skip * strengths[j]

        x = self.head(x, e)
        return self.unpatchify(x, grid).to(out_dtype)

    def _run(self, block: nn.Module, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def unpatchify(self, x: Tensor, grid) -> Tensor:
        """`[B, L, p_t*p_h*p_w*out_dim]` tokens -> `[B, out_dim, F, h, w]` latents."""
        pt, ph, pw = self.config.patch_size
        f, h, w = grid
        x = x.reshape(x.shape[0], f, h, w, pt, ph, pw, self.config.out_dim)
        x = torch.einsum("bfhwpqrc->bcfphqwr", x)
        return x.reshape(x.shape[0], self.config.out_dim, f * pt, h * ph, w * pw)

    def _check_inputs(self, x: Tensor, t: Tensor, context: Tensor, vace_context: Tensor) -> Tensor:
        """Validate shapes (user-fixable) and return vace_context as `[N, B, 96, F, h, w]`."""
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_dim:
            raise AnyCrowdError(
                f"Wan latents must be [B, {cfg.in_dim}, F, H/8, W/8], got {tuple(x.shape)}; pass the "
                "VAE-encoded video latents (16 channels)."
            )
        batch, _, frames, h, w = x.shape
        pt, ph, pw = cfg.patch_size
        if frames % pt or h % ph or w % pw:
            raise AnyCrowdError(
                f"Latent size {frames}x{h}x{w} is not a multiple of the patch {cfg.patch_size}; "
                "use widths and heights that are multiples of 16 pixels."
            )
        if t.shape not in ((batch,), (batch, frames // pt)):
            raise AnyCrowdError(
                f"Timestep shape {tuple(t.shape)} does not fit batch {batch} with {frames} latent "
                f"frames; pass t as [B] (one per sample) or [B, F] (one per latent frame)."
            )
        if context.ndim != 3 or context.shape[0] != batch or context.shape[2] != cfg.text_dim:
            raise AnyCrowdError(
                f"Text context must be [B={batch}, L, {cfg.text_dim}], got {tuple(context.shape)}; "
                "pass the umT5 encoder output for each sample."
            )
        if vace_context.ndim == 5:
            vace_context = vace_context.unsqueeze(0)
        expected = (batch, cfg.vace_in_dim, frames, h, w)
        if vace_context.ndim != 6 or tuple(vace_context.shape[1:]) != expected:
            raise AnyCrowdError(
                f"VACE context must be [B, {cfg.vace_in_dim}, F, h, w] or [N, B, {cfg.vace_in_dim}, F, h, w] "
                f"matching the latents {tuple(x.shape)}, got {tuple(vace_context.shape)}; encode the "
                "control video and mask at the latents' frame count and size."
            )
        return vace_context

    @staticmethod
    def _strengths(vace_strength, count: int) -> list[float]:
        if isinstance(vace_strength, Tensor):
            vace_strength = vace_strength.tolist()
        if isinstance(vace_strength, (int, float)):
            return [float(vace_strength)] * count
        strengths = [float(s) for s in vace_strength]
        if len(strengths) != count:
            raise AnyCrowdError(
                f"Got {len(strengths)} VACE strengths for {count} VACE contexts; give one strength "
                "per context (or a single number for all)."
            )
        return strengths
