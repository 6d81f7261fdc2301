"""Specification of Wan 2.1 VACE weight loading: formats, prefixes, dtypes and clear errors."""

import pytest
import torch
from safetensors.torch import save_file

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.wan import inspect_wan_vace, load_wan_vace, save_wan_vace
from tiny_wan import random_state_dict, tiny_config, tiny_inputs, tiny_model

CFG = tiny_config()


def load(source, **kwargs):
    return load_wan_vace(source, num_heads=CFG.num_heads, **kwargs)


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model.", "diffusion_model."])
def test_save_then_load_round_trips_weights_and_outputs(tmp_path, prefix):
    model = tiny_model(seed=2)
    path = tmp_path / "wan_vace_tiny.safetensors"
    save_wan_vace(model, path, prefix=prefix)
    loaded = load(path)
    assert loaded.config == CFG
    original, again = model.state_dict(), loaded.state_dict()
    assert original.keys() == again.keys()
    assert all(torch.equal(original[k], again[k]) for k in original)
    inputs = tiny_inputs()
    with torch.no_grad():
        # same weights; tensors read from the file sit at other memory alignments, which
        # can switch CPU matmul kernels, so outputs agree to float32 rounding only
        torch.testing.assert_close(loaded(**inputs), model(**inputs), rtol=1e-5, atol=1e-5)


def test_other_parts_of_a_full_checkpoint_are_ignored():
    sd = random_state_dict(CFG, prefix="model.diffusion_model.")
    sd["first_stage_model.decoder.conv.weight"] = torch.zeros(3)
    sd["text_encoders.umt5xxl.shared.weight"] = torch.zeros(3)
    assert load(sd).config == CFG


def test_loading_assigns_the_given_tensors_without_copying():
    sd = random_state_dict(CFG)
    model = load(sd, dtype=torch.float32)
    assert model.blocks[1].self_attn.q.weight.data_ptr() == sd["blocks.1.self_attn.q.weight"].data_ptr()
    assert not model.training


def test_dtype_argument_casts_weights_but_patch_embeddings_stay_float32():
    model = load(random_state_dict(CFG), dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert model.vace_blocks[0].after_proj.weight.dtype == torch.bfloat16
    assert model.patch_embedding.weight.dtype == torch.float32
    assert model.vace_patch_embedding.bias.dtype == torch.float32


def test_default_dtype_is_the_files_dtype(tmp_path):
    path = tmp_path / "fp16.safetensors"
    save_file(random_state_dict(CFG, dtype=torch.float16), str(path))
    assert load(path).dtype == torch.float16


def test_num_heads_default_follows_wan_head_width_of_128():
    cfg = tiny_config(dim=256, num_heads=2, text_dim=16)
    model = load_wan_vace(random_state_dict(cfg))
    assert model.config == cfg


def test_missing_keys_are_named():
    sd = random_state_dict(CFG)
    del sd["blocks.1.cross_attn.k.weight"], sd["vace_blocks.1.after_proj.bias"]
    with pytest.raises(AnyCrowdError, match="2 missing keys.*blocks.1.cross_attn.k.weight"):
        load(sd)


def test_unexpected_keys_are_named():
    sd = random_state_dict(CFG)
    sd["blocks.0.self_attn.q.lora_A.weight"] = torch.zeros(4, 64)
    with pytest.raises(AnyCrowdError, match="1 unexpected keys.*blocks.0.self_attn.q.lora_A.weight"):
        load(sd)


def test_misshaped_keys_name_found_and_expected_shapes():
    sd = random_state_dict(CFG)
    sd["blocks.2.ffn.2.bias"] = torch.zeros(63)
    with pytest.raises(AnyCrowdError, match=r"blocks.2.ffn.2.bias: \[63\], expected \[64\]"):
        load(sd)


def test_plain_wan_t2v_checkpoint_is_rejected_with_advice():
    sd = {k: v for k, v in random_state_dict(CFG).items() if not k.startswith("vace_")}
    with pytest.raises(AnyCrowdError, match="plain Wan 2.1 T2V model.*needs a Wan 2.1 VACE checkpoint"):
        load(sd)


def test_plain_wan_i2v_checkpoint_is_named_as_i2v(tmp_path):
    sd = {k: v for k, v in random_state_dict(CFG).items() if not k.startswith("vace_")}
    sd["img_emb.proj.0.bias"] = torch.zeros(1280)
    path = tmp_path / "wan_i2v.safetensors"
    save_file(sd, str(path))
    with pytest.raises(AnyCrowdError, match="wan_i2v.safetensors is a plain Wan 2.1 I2V model"):
        load(path)


def test_non_wan_file_is_rejected(tmp_path):
    path = tmp_path / "vae.safetensors"
    save_file({"encoder.conv1.weight": torch.zeros(8, 3, 3, 3), "decoder.conv_out.bias": torch.zeros(3)}, str(path))
    with pytest.raises(AnyCrowdError, match="vae.safetensors is not a Wan 2.1 diffusion model.*encoder.conv1.weight"):
        load(path)


def test_truncated_safetensors_file_is_named(tmp_path):
    path = tmp_path / "wan_vace_cut.safetensors"
    save_wan_vace(tiny_model(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AnyCrowdError, match="wan_vace_cut.safetensors.*truncated or corrupt"):
        load(path)


def test_garbage_file_is_named(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\x07" * 100)
    with pytest.raises(AnyCrowdError, match="garbage.safetensors is not a readable safetensors file"):
        load(path)


def test_pickle_checkpoints_are_refused_without_being_opened(tmp_path):
    path = tmp_path / "wan.pt"
    path.write_bytes(b"not even a pickle")
    with pytest.raises(AnyCrowdError, match="only .safetensors"):
        load(path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(AnyCrowdError, match="does not exist"):
        load(tmp_path / "nope.safetensors")


def test_fp8_scaled_checkpoints_are_refused_with_advice():
    sd = random_state_dict(CFG)
    sd["scaled_fp8"] = torch.zeros(0)
    with pytest.raises(AnyCrowdError, match="fp8_scaled.*bf16 or fp16"):
        load(sd)


def test_inspect_reads_the_config_from_the_header_and_refuses_like_the_loader(tmp_path):
    cfg = tiny_config()
    path = tmp_path / "tiny_vace.safetensors"
    save_file(random_state_dict(cfg, 0, prefix="model.diffusion_model."), str(path))
    assert inspect_wan_vace(path, num_heads=cfg.num_heads) == cfg
    broken = random_state_dict(cfg, 0)
    broken["blocks.2.ffn.2.bias"] = broken["blocks.2.ffn.2.bias"][:-1]
    save_file(broken, str(tmp_path / "bad.safetensors"))
    with pytest.raises(AnyCrowdError, match=r"blocks.2.ffn.2.bias: \[63\], expected \[64\]"):
        inspect_wan_vace(tmp_path / "bad.safetensors", num_heads=cfg.num_heads)
