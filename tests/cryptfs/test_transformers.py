"""A Hugging Face model (tiny Llama, random weights, safetensors) loads through our mount with
transformers on CPU and gives exactly the logits of the plaintext copy.

Needs the ``hf`` extra (torch CPU build + transformers); CI installs it and sets
CRYPTFS_REQUIRE_HF=1 so that this test cannot silently skip there.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support import PASSWORD_FILE, cryptfs_mount

if os.environ.get("CRYPTFS_REQUIRE_HF"):
    import torch
    import transformers
else:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")


def test_tiny_llama_same_logits_through_the_mount(oracle, tmp_path):
    config = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=64)
    torch.manual_seed(0)
    plain = tmp_path / "plain"
    transformers.LlamaForCausalLM(config).save_pretrained(plain, safe_serialization=True)
    assert any(p.suffix == ".safetensors" for p in plain.iterdir())
    cipher = tmp_path / "cipher"
    oracle.init(cipher, PASSWORD_FILE)
    with oracle.mount(cipher, tmp_path / "g", PASSWORD_FILE) as g:
        subprocess.run(["cp", "-a", f"{plain}/.", str(g)], check=True)
    ids = torch.tensor([[1, 5, 9, 20, 77, 200]])
    with torch.no_grad():
        want = transformers.AutoModelForCausalLM.from_pretrained(plain)(ids).logits
        with cryptfs_mount(cipher, tmp_path / "m") as m:
            got = transformers.AutoModelForCausalLM.from_pretrained(m)(ids).logits
    assert got.shape == (1, 6, 256)
    assert torch.equal(got, want)
