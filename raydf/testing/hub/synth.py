"""Synthetic repositories in one call: deterministic, realistic-looking, fast.

Same arguments and seed give byte-identical files. Weights are real safetensors
files (an 8-byte header length, a JSON header, then the tensor bytes) whose
bytes come from ``numpy.random.default_rng``: one random block per file, then
each next block is that block XOR a per-block random word, which writes
~1 GB/s instead of the ~0.5 GB/s of drawing every byte.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from raydf.testing.hub.repos import META_SUFFIX, REPO_TYPES

_BLOCK = 4 * 2**20
_MIN_SAFETENSORS = 128  # below this a header does not fit: the file is raw bytes


def make_model(
    root: Path | str,
    repo_id: str,
    shard_sizes: Sequence[int] = (64 * 2**20,) * 4,
    seed: int = 0,
    repo_type: str = "models",
) -> Path:
    """Write a model repo under ``root`` and return its folder.

    Files: ``model-0000k-of-0000n.safetensors`` (one per entry of
    ``shard_sizes``, each exactly that many bytes), ``model.safetensors.index.json``,
    ``config.json``, ``generation_config.json``, ``tokenizer.json``,
    ``tokenizer_config.json``, ``README.md`` and ``.gitattributes``.
    ``repo_id`` may be ``"org/name@label"`` to write another revision's folder
    (see :func:`write_repo_meta`). An existing folder is replaced.
    """
    folder = _fresh_folder(root, repo_type, repo_id)
    n = len(shard_sizes)
    weight_map: dict[str, str] = {}
    total = 0
    for k, size in enumerate(shard_sizes):
        filename = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        tensor = f"model.layers.{k}.weight"
        with open(folder / filename, "wb") as fh:
            total += _write_safetensors(fh, tensor, size, seed, k)
        weight_map[tensor] = filename
    name = repo_id.split("/")[-1].split("@")[0]
    _write_json(folder / "model.safetensors.index.json", {
        "metadata": {"total_size": total}, "weight_map": weight_map,
    })
    _write_json(folder / "config.json", {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "num_hidden_layers": n, "num_attention_heads": 4, "vocab_size": 256,
        "torch_dtype": "bfloat16", "raydf_seed": seed,
    })
    _write_json(folder / "generation_config.json", {
        "bos_token_id": 1, "eos_token_id": 2, "max_new_tokens": 64, "raydf_seed": seed,
    })
    _write_json(folder / "tokenizer.json", _tokenizer(seed))
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]", "model_max_length": 2048,
    })
    (folder / "README.md").write_text(
        f"---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n\n# {name}\n\n"
        f"Synthetic model written by raydf.testing.make_model (seed {seed}, {n} shards).\n"
    )
    _write_gitattributes(folder)
    return folder


def make_dataset(
    root: Path | str,
    repo_id: str,
    file_sizes: Sequence[int] = (2 * 2**20,) * 3,
    seed: int = 0,
    repo_type: str = "datasets",
) -> Path:
    """Write a dataset repo under ``root`` and return its folder.

    Files: ``data/train/train-0000k-of-0000n.parquet`` (one per entry of
    ``file_sizes``), ``data/validation/validation-00000-of-00001.parquet``
    (64 KiB), ``README.md`` and ``.gitattributes``. The parquet-named files
    hold deterministic random bytes, not real parquet.
    """
    folder = _fresh_folder(root, repo_type, repo_id)
    n = len(file_sizes)
    shards = [(f"data/train/train-{k:05d}-of-{n:05d}.parquet", s) for k, s in enumerate(file_sizes)]
    shards.append(("data/validation/validation-00000-of-00001.parquet", 64 * 2**10))
    for k, (rel, size) in enumerate(shards):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        with open(folder / rel, "wb") as fh:
            _write_random(fh, size, seed, k)
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n"
        "  - split: train\n    path: data/train/*.parquet\n"
        "  - split: validation\n    path: data/validation/*.parquet\n---\n\n"
        f"Synthetic dataset written by raydf.testing.make_dataset (seed {seed}).\n"
    )
    _write_gitattributes(folder)
    return folder


def make_small_files(
    root: Path | str,
    repo_id: str,
    count: int = 2000,
    size: int = 16 * 2**10,
    lfs_share: float = 0.5,
    seed: int = 0,
    repo_type: str = "datasets",
) -> Path:
    """Write a repo of ``count`` small files of ``size`` bytes each and return its folder.

    The first ``round(count * lfs_share)`` are LFS (``data/shard-0000k.parquet``),
    the others regular files (``meta/item-0000k.json``): a dataset of thousands of
    files, as image and text datasets often are. Deterministic random bytes.
    """
    if count < 0 or size < 0 or not 0.0 <= lfs_share <= 1.0:
        raise ValueError(f"want count >= 0, size >= 0 and 0 <= lfs_share <= 1, got "
                         f"{count}, {size}, {lfs_share}")
    folder = _fresh_folder(root, repo_type, repo_id)
    lfs = round(count * lfs_share)
    (folder / "data").mkdir()
    (folder / "meta").mkdir()
    rng = np.random.default_rng([seed, count, size])
    for k in range(count):
        rel = f"data/shard-{k:05d}.parquet" if k < lfs else f"meta/item-{k - lfs:05d}.json"
        (folder / rel).write_bytes(rng.bytes(size))
    return folder


def write_repo_meta(
    root: Path | str,
    repo_id: str,
    *,
    repo_type: str = "models",
    private: bool = False,
    gated: bool | str = False,
    branches: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    moved_to: str | None = None,
) -> Path:
    """Write ``ROOT/<type>/<owner>/<name>.hub.json`` and return its path.

    ``branches`` and ``tags`` map a revision name to a sibling folder name,
    e.g. ``tags={"v1.0": "name@v1.0"}``. ``gated`` is False, True (= "manual"),
    "auto" or "manual". ``moved_to="owner/new"`` marks ``repo_id`` as renamed
    (write no folder for it): its urls redirect to the new name.
    """
    owner, name = repo_id.split("/")
    path = Path(root) / repo_type / owner / f"{name}{META_SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta: dict[str, object] = {"private": private, "gated": gated,
                               "branches": dict(branches or {}), "tags": dict(tags or {})}
    if moved_to is not None:
        meta["moved_to"] = moved_to
    _write_json(path, meta)
    return path


def _fresh_folder(root: Path | str, repo_type: str, repo_id: str) -> Path:
    if repo_type not in REPO_TYPES or repo_id.count("/") != 1:
        raise ValueError(
            f"want repo_type in {REPO_TYPES} and repo_id 'owner/name', got {repo_type!r}, {repo_id!r}"
        )
    folder = Path(root) / repo_type / repo_id
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _write_safetensors(fh: BinaryIO, tensor: str, size: int, seed: int, stream: int) -> int:
    """Write a one-tensor safetensors file of exactly ``size`` bytes; return the tensor bytes."""
    if size < _MIN_SAFETENSORS:
        _write_random(fh, size, seed, stream)
        return size
    data = size - 8
    # The header holds the data length, whose digits change the header length:
    # iterate to the fixed point (two or three rounds).
    while True:
        header = json.dumps(
            {"__metadata__": {"format": "pt"},
             tensor: {"dtype": "U8", "shape": [data], "data_offsets": [0, data]}},
            separators=(",", ":"),
        ).encode()
        header += b" " * (-len(header) % 8)
        if size - 8 - len(header) == data:
            break
        data = size - 8 - len(header)
    fh.write(struct.pack("<Q", len(header)) + header)
    _write_random(fh, data, seed, stream)
    return data


def _write_random(fh: BinaryIO, size: int, seed: int, stream: int) -> None:
    rng = np.random.default_rng([seed, stream])
    base = np.frombuffer(rng.bytes(_BLOCK), dtype=np.uint64)
    keys = np.frombuffer(rng.bytes(8 * (size // _BLOCK + 1)), dtype=np.uint64)
    block = np.empty_like(base)
    raw = block.view(np.uint8)
    for k in range(0, size, _BLOCK):
        np.bitwise_xor(base, keys[k // _BLOCK], out=block)
        fh.write(raw[: min(_BLOCK, size - k)].data)


def _tokenizer(seed: int) -> dict[str, object]:
    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"tok{i}_{seed}": i for i in range(3, 256)})
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
        "decoder": None, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    }


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _write_gitattributes(folder: Path) -> None:
    (folder / ".gitattributes").write_text(
        "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        "*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    )
