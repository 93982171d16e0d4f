"""Destination layouts (pure): plain files under ``-O``, or the Hugging Face cache.

``--layout hf-cache`` makes ``-O`` a Hugging Face hub cache (what
``HF_HUB_CACHE`` points to), so ``huggingface_hub`` and ``transformers`` with
``HF_HUB_OFFLINE=1`` load from it unchanged::

    models--org--name/blobs/<etag>                    the file (etag: sha256 for LFS
                                                      files, git blob sha1 otherwise)
    models--org--name/snapshots/<commit>/<path>  ->  ../../blobs/<etag>
    models--org--name/refs/<revision>                 the commit (unless a commit was asked)
"""

from __future__ import annotations

import dataclasses
import posixpath

from raydf.cluster.spec import TaskSpec, task_key
from raydf.errors import ConfigError
from raydf.plan import RepoPlan
from raydf.uri import Source

__all__ = ["LAYOUTS", "hf_cache_layout"]

LAYOUTS = ("files", "hf-cache")


def hf_cache_layout(
    plan: RepoPlan, tasks: list[TaskSpec], source: Source, revision: str
) -> tuple[list[TaskSpec], list[tuple[str, str]]]:
    """Tasks placed as blobs with snapshot links, and the ``refs`` file to write."""
    if source.scheme != "hf":
        raise ConfigError(f"--layout hf-cache needs an hf:// URL, not {source}")
    repo_dir = f"{source.repo_type}--{source.repo_id.replace('/', '--')}"
    repo_paths: dict[str, list[str]] = {}
    for f in plan.files:
        repo_paths.setdefault(task_key(f, plan.commit, plan.url), []).append(f.repo_path)
    laid_out = []
    for task in tasks:
        digest = task.file.digest
        if digest is None:
            raise ConfigError(f"{task.file.repo_path} has no hub digest to name its blob")
        blob = f"{repo_dir}/blobs/{digest[1]}"
        links = []
        for repo_path in repo_paths[task.task_id]:
            link = f"{repo_dir}/snapshots/{plan.commit}/{repo_path}"
            links.append((link, posixpath.relpath(blob, posixpath.dirname(link))))
        laid_out.append(dataclasses.replace(task, paths=(blob,), links=tuple(links)))
    refs = [] if revision == plan.commit else [(f"{repo_dir}/refs/{revision}", plan.commit)]
    return laid_out, refs
