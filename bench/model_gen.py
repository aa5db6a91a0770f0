"""A synthetic, deterministic safetensors model for the loading benchmark (bench/loading.py).

    python bench/model_gen.py OUT [--size 1G] [--shards 4] [--seed 0]
                              [--encrypt CIPHERDIR --passfile FILE]

Writes ``OUT/model/`` laid out like a Hugging Face checkpoint of a Llama-style model:

- ``model-0000K-of-0000N.safetensors`` shards, written with ``safetensors.torch.save_file``, so
  each file is laid out the way safetensors lays it out: by dtype (largest alignment first), then
  by name. The tensors mix float32 (norms), bfloat16 (attention, embeddings, every other MLP),
  float16 (lm_head, quantisation scales) and int8 (the other MLPs, weight-only quantised), so
  reading a shard's keys in sorted order (what vLLM does) jumps back and forth in the file.
- ``model.safetensors.index.json`` (``metadata.total_size``, ``weight_map``), ``config.json``,
  ``generation_config.json``, and small synthetic ``tokenizer.json`` / ``tokenizer_config.json``.

and ``OUT/manifest.json`` (outside the model dir, so it is not encrypted or served): every
tensor's shard, dtype, shape, byte range, sha256 of its bytes, and the sha256 of each rank's
slice under tensor parallelism 2 (:func:`loaders.tp_slice`), which the loaders' verification
passes compare against.

Layers are added until the weights reach ``--size``; shards are cut in module order (like
``save_pretrained``) at ``total / --shards``. Values come from ``numpy.random.default_rng`` seeded
per tensor with ``--seed`` and the tensor's name, so the same arguments give the same bytes on
every run (and both mounts in the benchmark serve the same model).

``--encrypt CIPHERDIR --passfile FILE`` then runs ``python -m cryptfs encrypt --scryptn 10``
(gocryptfs format: real gocryptfs and ``cryptfs mount`` both read it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from loaders import TP_WORLD, tp_slice  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
# full-size dims (from 1 GiB up; smaller models shrink them by sqrt(size / 1 GiB), see dims())
HIDDEN = 2048
INTERMEDIATE = 5632
KV = 512  # grouped-query attention: 4 KV heads of 128
VOCAB = 32000
DTYPE_BYTES = {"F32": 4, "BF16": 2, "F16": 2, "I8": 1}


@dataclass(frozen=True)
class Spec:
    name: str
    dtype: str  # safetensors dtype name
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = DTYPE_BYTES[self.dtype]
        for d in self.shape:
            n *= d
        return n


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)(i?B?)?", text.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 1G, 64M)")
    return int(m.group(1)) << (10 * " KMGT".index(m.group(2).upper() or " "))


@dataclass(frozen=True)
class Dims:
    hidden: int
    intermediate: int
    kv: int
    vocab: int


def dims(size: int) -> Dims:
    """Llama-style dims; below 1 GiB every dim shrinks by sqrt(size / 1 GiB) (a smoke-test model)."""
    s = min(1.0, (size / GiB) ** 0.5)

    def r(x: float, q: int) -> int:
        return max(q, round(x / q) * q)

    return Dims(r(HIDDEN * s, 128), r(INTERMEDIATE * s, 128), r(KV * s, 128), r(VOCAB * s, 64))


def layer_specs(i: int, d: Dims) -> list[Spec]:
    """One decoder layer; odd layers carry an int8 weight-only quantised MLP with fp16 scales."""
    p = f"model.layers.{i}."
    h = d.hidden
    specs = [
        Spec(p + "input_layernorm.weight", "F32", (h,)),
        Spec(p + "post_attention_layernorm.weight", "F32", (h,)),
        Spec(p + "self_attn.q_proj.weight", "BF16", (h, h)),
        Spec(p + "self_attn.k_proj.weight", "BF16", (d.kv, h)),
        Spec(p + "self_attn.v_proj.weight", "BF16", (d.kv, h)),
        Spec(p + "self_attn.o_proj.weight", "BF16", (h, h)),
    ]
    mlp = (("gate_proj", (d.intermediate, h)), ("up_proj", (d.intermediate, h)),
           ("down_proj", (h, d.intermediate)))
    for name, shape in mlp:
        if i % 2:
            specs.append(Spec(p + f"mlp.{name}.weight", "I8", shape))
            specs.append(Spec(p + f"mlp.{name}.weight_scale", "F16", (shape[0],)))
        else:
            specs.append(Spec(p + f"mlp.{name}.weight", "BF16", shape))
    return specs


def model_specs(size: int, d: Dims) -> tuple[list[Spec], int]:
    """Tensors in module order, with as many layers as it takes to reach ``size`` bytes."""
    head = [Spec("model.embed_tokens.weight", "BF16", (d.vocab, d.hidden))]
    tail = [Spec("model.norm.weight", "F32", (d.hidden,)), Spec("lm_head.weight", "F16", (d.vocab, d.hidden))]
    layers: list[Spec] = []
    n = 0
    while sum(s.nbytes for s in head + layers + tail) < size:
        layers += layer_specs(n, d)
        n += 1
    return head + layers + tail, n


def make_array(spec: Spec, seed: int) -> np.ndarray:
    """The tensor's values (deterministic per seed and name); bf16 as its raw uint16 bits."""
    rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode())])
    if spec.dtype == "I8":
        return rng.integers(-128, 128, size=spec.shape, dtype=np.int8)
    if spec.name.endswith("norm.weight"):
        vals = 1.0 + 0.05 * rng.standard_normal(spec.shape, dtype=np.float32)
    elif spec.name.endswith("weight_scale"):
        vals = 0.001 + 0.0005 * rng.random(spec.shape, dtype=np.float32)
    else:
        vals = 0.02 * rng.standard_normal(spec.shape, dtype=np.float32)
    if spec.dtype == "F32":
        return vals
    if spec.dtype == "F16":
        return vals.astype(np.float16)
    bits = vals.view(np.uint32)  # bf16: round to nearest even, keep the top 16 bits
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def to_torch(arr: np.ndarray, dtype: str):
    import torch

    t = torch.from_numpy(arr)
    return t.view(torch.bfloat16) if dtype == "BF16" else t


def sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(arr)).cast("B")).hexdigest()


def write_shard(path: str, specs: list[Spec], seed: int) -> dict[str, dict]:
    """Save one shard; return the manifest entries of its tensors (offsets from the header)."""
    from safetensors.torch import save_file

    arrays = {s.name: make_array(s, seed) for s in specs}
    save_file({s.name: to_torch(arrays[s.name], s.dtype) for s in specs}, path, metadata={"format": "pt"})
    with open(path, "rb") as f:
        hlen = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(hlen))
    out = {}
    for s in specs:
        arr = arrays[s.name]
        begin, end = header[s.name]["data_offsets"]
        out[s.name] = {
            "file": os.path.basename(path), "dtype": s.dtype, "shape": list(s.shape),
            "offset": 8 + hlen + begin, "nbytes": end - begin, "sha256": sha256(arr),
            "tp2_sha256": [sha256(tp_slice(arr, s.name, r, TP_WORLD)) for r in range(TP_WORLD)],
        }
        if end - begin != arr.nbytes:
            raise RuntimeError(f"{s.name}: {end - begin} bytes in the file, {arr.nbytes} generated")
    return out


def tokenizer_files(seed: int) -> dict[str, object]:
    """Small synthetic tokenizer files (a byte-level BPE vocabulary of made-up pieces)."""
    rng = np.random.default_rng([seed, 7])
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    merges = []
    while len(vocab) < 2000:
        a, b = ("".join(rng.choice(letters, size=int(rng.integers(1, 4)))) for _ in range(2))
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
            merges.append(f"{a} {b}")
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": i, "content": t, "special": True, "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": False} for t, i in list(vocab.items())[:3]],
           "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
           "post_processor": None, "decoder": {"type": "ByteLevel"},
           "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "vocab": vocab, "merges": merges}}
    cfg = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": 4096,
           "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
    return {"tokenizer.json": tok, "tokenizer_config.json": cfg}


def generate(out: str, size: int, shards: int, seed: int) -> dict:
    model = os.path.join(out, "model")
    os.makedirs(model)
    d = dims(size)
    specs, layers = model_specs(size, d)
    total = sum(s.nbytes for s in specs)
    groups: list[list[Spec]] = [[]]
    acc = 0
    for s in specs:  # cut in module order, like save_pretrained's max_shard_size
        if groups[-1] and acc >= total * len(groups) / shards and len(groups) < shards:
            groups.append([])
        groups[-1].append(s)
        acc += s.nbytes
    n = len(groups)
    tensors: dict[str, dict] = {}
    for k, group in enumerate(groups, 1):
        name = f"model-{k:05d}-of-{n:05d}.safetensors"
        tensors.update(write_shard(os.path.join(model, name), group, seed))
    weight_map = {s.name: tensors[s.name]["file"] for s in specs}
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": d.hidden,
              "intermediate_size": d.intermediate, "num_hidden_layers": layers,
              "num_attention_heads": d.hidden // 128, "num_key_value_heads": d.kv // 128, "head_dim": 128,
              "vocab_size": d.vocab, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "torch_dtype": "bfloat16", "tie_word_embeddings": False,
              "bos_token_id": 1, "eos_token_id": 2,
              "quantization_note": "synthetic: odd layers' MLP weights are int8 with fp16 per-channel scales"}
    small = {"model.safetensors.index.json": index, "config.json": config,
             "generation_config.json": {"bos_token_id": 1, "eos_token_id": 2, "do_sample": False},
             **tokenizer_files(seed)}
    for fname, obj in small.items():
        with open(os.path.join(model, fname), "w") as f:
            json.dump(obj, f, indent=1, sort_keys=fname != "tokenizer.json")
            f.write("\n")
    files = {f: os.path.getsize(os.path.join(model, f)) for f in sorted(os.listdir(model))}
    for f in files:  # clean pages, and the data is on disk before it is encrypted
        fd = os.open(os.path.join(model, f), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    manifest = {"seed": seed, "size_arg": size, "weights_bytes": total, "layers": layers,
                "shards": [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)],
                "files": files, "total_bytes": sum(files.values()), "tp_world": TP_WORLD, "tensors": tensors}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return manifest


def encrypt(plain: str, cipher: str, passfile: str) -> None:
    subprocess.run([sys.executable, "-m", "cryptfs", "encrypt", "--scryptn", "10", "--passfile", passfile,
                    "-q", plain, cipher], check=True)
    for dirpath, _, names in os.walk(cipher):
        for name in names:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Generate a deterministic sharded safetensors model.")
    p.add_argument("out", help="output directory (created; must not exist): OUT/model, OUT/manifest.json")
    p.add_argument("--size", type=parse_size, default=1 << 30, help="weights at least this big (default 1G)")
    p.add_argument("--shards", type=int, default=4, help="number of shards (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encrypt", metavar="CIPHERDIR", help="then encrypt OUT/model here (gocryptfs format)")
    p.add_argument("--passfile", help="password file for --encrypt")
    args = p.parse_args(argv)
    if args.shards < 2:
        p.error("--shards must be >= 2")
    if args.encrypt and not args.passfile:
        p.error("--encrypt needs --passfile")
    t0 = time.perf_counter()
    m = generate(args.out, args.size, args.shards, args.seed)
    dtypes: dict[str, int] = {}
    for t in m["tensors"].values():
        dtypes[t["dtype"]] = dtypes.get(t["dtype"], 0) + t["nbytes"]
    print(f"{args.out}/model: {len(m['tensors'])} tensors, {m['layers']} layers, {len(m['shards'])} shards, "
          f"{m['weights_bytes'] / MiB:.1f} MiB of weights ("
          + ", ".join(f"{k} {v / MiB:.0f} MiB" for k, v in sorted(dtypes.items()))
          + f"); {time.perf_counter() - t0:.1f} s")
    if args.encrypt:
        t1 = time.perf_counter()
        encrypt(os.path.join(args.out, "model"), args.encrypt, args.passfile)
        print(f"encrypted into {args.encrypt} in {time.perf_counter() - t1:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
