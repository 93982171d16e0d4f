"""A 4-node LocalCluster and a hub emulator, shared by the tests of one module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raydf.testing.cluster import LocalCluster
from raydf.testing.hub import HubEmulator

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # Metrics reach each node's Prometheus endpoint within a second (test_ecosystem).
    with LocalCluster(4, root=tmp_path_factory.mktemp("nodes"), metrics_interval_ms=1000) as c:
        yield c


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hub")


@pytest.fixture(scope="module")
def hub(hub_root: Path) -> Iterator[HubEmulator]:
    with HubEmulator(hub_root, tokens={"hf_secret_token_1234": "alice"}) as emulator:
        yield emulator
