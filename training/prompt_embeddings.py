"""Prompt embeddings of a training cache: one safetensors file (`TEXT_EMBEDDING_FILE`) keyed
by `prompt_key(prompt)`, made from a precomputed embedding, ComfyUI's umT5 encoder, or
seeded noise for tiny/test runs (with a loud warning). Reused while its fingerprint holds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from anycrowd_core.errors import AnyCrowdError

from . import cache_format as cf
from .prepare_settings import sample_seed


def prompt_key(prompt: str) -> str:
    return "prompt_" + hashlib.sha256(prompt.encode()).hexdigest()[:16]



@dataclass
class TextSource:
    """Where the prompt embeddings come from: kind "file" (precomputed safetensors with one
    `[L, D]` / `[1, L, D]` tensor for the default prompt), "encoder" (ComfyUI's umT5 file) or
    "random" (seeded Gaussian `[1, length, dim]`: tiny/test runs only)."""

    kind: str
    path: str | None = None
    dim: int = 0
    length: int = 32

    def signature(self) -> dict:
        sig = {"kind": self.kind, "dim": self.dim, "length": self.length}
        if self.path:
            sig["file"] = cf.file_signature(Path(self.path))
        return sig


RANDOM_TEXT_WARNING = (
    "RANDOM TEXT EMBEDDING: seeded Gaussian noise stands in for the umT5 prompt embedding. "
    "Fine for tiny/test runs; a model trained on it will not follow text. Use --text-encoder "
    "or --text-embedding for real training."
)


def prepare_text_embeddings(out_dir: Path, source: TextSource, prompts: list[str], seed: int,
                            default_prompt: str, log=print) -> tuple[dict, set[str]]:
    """Create (or reuse) TEXT_EMBEDDING_FILE for `prompts`; returns (header, prompts that
    cannot be embedded, i.e. custom prompts with a precomputed single embedding)."""
    sig = json.dumps({"source": source.signature(), "prompts": sorted(prompts), "seed": seed,
                      "default": default_prompt}, sort_keys=True, default=str)
    fp = hashlib.sha256(sig.encode()).hexdigest()
    path = out_dir / cf.TEXT_EMBEDDING_FILE
    missing: set[str] = set()
    if source.kind == "file":
        missing = {p for p in prompts if p != default_prompt}
    if path.is_file() and cf.read_header(path).get("fingerprint") == fp:
        header = cf.read_header(path)
    else:
        embeddings: dict[str, Tensor] = {}
        header: dict = {"fingerprint": fp, "prompts": {prompt_key(p): p for p in prompts}}
        if source.kind == "random":
            for p in prompts:
                gen = torch.Generator().manual_seed(sample_seed(seed, prompt_key(p), 0) % 2**63)
                embeddings[prompt_key(p)] = torch.randn(1, source.length, source.dim, generator=gen)
            header.update(source="random", warning=RANDOM_TEXT_WARNING)
        elif source.kind == "file":
            file = Path(source.path)
            try:
                from safetensors.torch import load_file

                tensors = load_file(str(file))
            except Exception as exc:
                raise AnyCrowdError(f"cannot read --text-embedding {str(file)!r}: {exc}. It must be a safetensors file.") from exc
            if len(tensors) != 1:
                raise AnyCrowdError(
                    f"--text-embedding {str(file)!r} holds {len(tensors)} tensors {sorted(tensors)}; "
                    "it must hold exactly one [L, D] or [1, L, D] embedding of the prompt."
                )
            emb = next(iter(tensors.values())).float()
            if emb.ndim == 2:
                emb = emb[None]
            if emb.ndim != 3 or emb.shape[0] != 1:
                raise AnyCrowdError(f"--text-embedding tensor has shape {tuple(emb.shape)}; expected [L, D] or [1, L, D].")
            if default_prompt in prompts:
                embeddings[prompt_key(default_prompt)] = emb
            header.update(source=f"file:{file.resolve()}")
            header["prompts"] = {prompt_key(default_prompt): default_prompt}
        elif source.kind == "encoder":
            from .codecs import encode_prompts_with_comfy

            encoded = encode_prompts_with_comfy(source.path, prompts)
            embeddings = {prompt_key(p): e for p, e in zip(prompts, encoded)}
            header.update(source=f"comfy-text-encoder:{Path(source.path).resolve()}")
        else:
            raise AnyCrowdError(f"unknown text source {source.kind!r}")
        if not embeddings:
            embeddings[prompt_key(default_prompt)] = torch.zeros(1, 1, 1)  # keep the file well-formed
        cf.write_text_embeddings(out_dir, embeddings, header)
        header = cf.read_header(path)
    if header.get("source") == "random":
        log(f"WARNING: {RANDOM_TEXT_WARNING}")
    return header, missing
