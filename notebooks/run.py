"""Execute notebooks top to bottom with nbclient, on this Python (nbconvert is not needed).

    python notebooks/run.py notebooks/origin_traffic.ipynb notebooks/scale.ipynb
    python notebooks/run.py --out /tmp/executed notebooks/scale.ipynb

By default each notebook is rewritten in place with its outputs; ``--out DIR``
writes the executed copies there instead. The kernel is this interpreter
(``sys.executable``, e.g. the project's venv), whatever kernels Jupyter knows
about: a kernelspec for it is written to a temporary folder. Settings reach
the notebooks through the environment (``RAYDF_NB_*``, see each notebook's
first cell). A cell's error stops the run and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import nbformat
from ipykernel.kernelspec import get_kernel_dict
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

__all__ = ["execute", "main"]

KERNEL = "raydf-nb"


def execute(path: Path, *, env: Mapping[str, str] | None = None,
            timeout: int | None = None) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` in a fresh kernel on ``sys.executable``; return it with outputs.

    The kernel's working directory is the notebook's folder and its
    environment is ``env`` (default ``os.environ``); ``timeout`` is per cell,
    in seconds (None: no limit). Raises ``CellExecutionError`` at the first
    cell that fails. The file itself is not written.
    """
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="raydf-kernel-") as kernels:
        # argv: [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        spec = Path(kernels) / KERNEL / "kernel.json"
        spec.parent.mkdir()
        spec.write_text(json.dumps(get_kernel_dict()))
        specs = KernelSpecManager(kernel_dirs=[kernels])
        km = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
        client = NotebookClient(nb, km=km, timeout=timeout, kernel_name=KERNEL,
                                resources={"metadata": {"path": str(Path(path).resolve().parent)}})
        # cleanup_kc: shut the kernel down at the end, or at a failure, although we made its manager.
        client.execute(cleanup_kc=True, env=dict(os.environ if env is None else env))
    # Name the kernel as a reader's Jupyter knows it, not the temporary one.
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path, metavar="NOTEBOOK")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write executed copies here (default: in place)")
    parser.add_argument("--timeout", type=int, default=None, metavar="S", help="per-cell limit, seconds")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        print(f"executing {path}", file=sys.stderr, flush=True)
        try:
            nb = execute(path, timeout=args.timeout)
        except CellExecutionError as exc:
            print(f"{path}: a cell failed:\n{exc}", file=sys.stderr)
            return 1
        target = path if args.out is None else args.out / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        print(f"wrote {target}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
