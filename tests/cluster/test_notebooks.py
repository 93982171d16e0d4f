"""The benchmark notebooks run top to bottom at their small defaults and draw their figures.

``notebooks/origin_traffic.ipynb`` runs the fan-out benchmark (a LocalCluster
of 2 nodes, a 16 MiB model) in its kernel; ``notebooks/scale.ipynb`` runs the
simulation, and its validation once with the measured results of the first
notebook and once without any. They run with ``notebooks/run.py`` (nbclient, a
kernel on this interpreter), in memory: the committed notebooks keep their
outputs. The kernel gets its own short TMPDIR, so every Ray process it starts
names that folder on its command line: none may outlive the kernel.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.cluster

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CELL_TIMEOUT = 300  # seconds; the benchmark cell takes ~45 s on an idle 2-core machine


def _load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("raydf_notebooks_run", NOTEBOOKS / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()


def _env(tmp: Path, **settings: str) -> dict[str, str]:
    """This environment without any RAYDF_NB_* (the notebooks' defaults apply), plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYDF_NB_")}
    return {**env, "TMPDIR": str(tmp), **settings}


def _ours(tmp: Path) -> list[psutil.Process]:
    """Processes whose command line names ``tmp``: the Ray processes a kernel started there."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if str(tmp) in " ".join(proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def _execute(name: str, env: dict[str, str]) -> Any:
    path = NOTEBOOKS / name
    committed = path.read_bytes()
    nb = runner.execute(path, env=env, timeout=CELL_TIMEOUT)
    assert path.read_bytes() == committed, f"executing {name} rewrote the committed notebook"
    return nb


def _code_cells(nb: Any) -> list[Any]:
    return [c for c in nb.cells if c.cell_type == "code"]


def _pngs(nb: Any) -> int:
    return sum("image/png" in out.get("data", {}) for c in _code_cells(nb) for out in c.outputs)


def _text(nb: Any) -> str:
    return "".join(out.get("text", "") for c in _code_cells(nb) for out in c.outputs)


def _assert_every_cell_ran(nb: Any) -> None:
    for k, cell in enumerate(_code_cells(nb)):
        assert cell.execution_count is not None, f"code cell {k} did not run"
        errors = [out for out in cell.outputs if out.output_type == "error"]
        assert not errors, f"code cell {k} failed: {errors[0].ename}: {errors[0].evalue}"


@pytest.fixture(scope="module")
def tmp() -> Iterator[Path]:
    # Short: Ray puts unix sockets under TMPDIR/ray/session_*/sockets (108-byte limit).
    path = Path(tempfile.mkdtemp(prefix="rnb-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def origin_traffic(tmp: Path) -> tuple[Any, Path]:
    """The origin traffic notebook, executed at its defaults; its results file."""
    results = tmp / "fanout.json"
    nb = _execute("origin_traffic.ipynb", _env(tmp, RAYDF_NB_JSON=str(results)))
    return nb, results


def test_origin_traffic_runs_every_cell_and_draws_three_figures(origin_traffic: tuple[Any, Path]) -> None:
    nb, results = origin_traffic
    _assert_every_cell_ran(nb)
    assert _pngs(nb) == 3  # origin bytes vs N, time vs N, per-node CDF
    # This interpreter, named relative to the checkout when inside it (no machine path).
    kernel = Path(sys.executable)
    if kernel.is_relative_to(NOTEBOOKS.parent):
        kernel = kernel.relative_to(NOTEBOOKS.parent)
    assert f"kernel {kernel}\n" in _text(nb)
    runs = json.loads(results.read_text())["runs"]
    assert {(r["mode"], r["nodes"]) for r in runs} == {
        (m, n) for m in ("direct", "broadcast", "raydf") for n in (1, 2)}
    assert all(r["ok"] for r in runs)


def test_origin_traffic_leaves_no_ray_process_behind(origin_traffic: tuple[Any, Path], tmp: Path) -> None:
    assert (tmp / "ray").is_dir(), "the kernel's Ray did not use its TMPDIR: this test would see nothing"
    _, alive = psutil.wait_procs(_ours(tmp), timeout=15)
    for proc in alive:
        proc.kill()
    assert not alive, f"left running: {[' '.join(p.cmdline())[:120] for p in alive]}"


def test_scale_validates_against_the_measured_runs(origin_traffic: tuple[Any, Path], tmp: Path) -> None:
    _, results = origin_traffic
    nb = _execute("scale.ipynb", _env(tmp, RAYDF_NB_MEASURED=str(results), RAYDF_NB_VALIDATE_NODES="2"))
    _assert_every_cell_ran(nb)
    assert _pngs(nb) == 2  # simulated time and ratio vs N, predicted vs measured
    text = _text(nb)
    assert "worst ratio" in text
    assert "N=2: predicted" in text and "predicted / measured" in text
    assert "from DESIGN.md's figure" in text  # the benchmark ran without its single-node part


def test_scale_without_measurements_shows_predictions_only(tmp: Path) -> None:
    nb = _execute("scale.ipynb", _env(tmp, RAYDF_NB_MEASURED=str(tmp / "absent.json")))
    _assert_every_cell_ran(nb)
    assert _pngs(nb) == 2
    text = _text(nb)
    assert "no measured results" in text
    assert "N=4: predicted" in text and "N=8: predicted" in text and "not measured" in text
