"""Origin faults the backends ride out, and the ones they report, without hammering."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raydf.backends import BackendOptions
from raydf.backends.huggingface import HuggingFaceBackend
from raydf.backends.modelscope import ModelScopeBackend
from raydf.backends.ratelimit import RetryPolicy
from raydf.errors import OriginUnavailable, RateLimited
from raydf.testing.hub import HubEmulator, make_model
from raydf.uri import parse_url

MiB = 2**20
FAST = RetryPolicy(retries=3, base=0.05, cap=0.2)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubEmulator]:
    root = tmp_path_factory.mktemp("hub")
    make_model(root, "org/model", shard_sizes=[2 * MiB], seed=1)
    with HubEmulator(root) as emulator:
        yield emulator


@pytest.fixture
def hf(hub: HubEmulator) -> Iterator[HuggingFaceBackend]:
    hub.clear_knobs()
    hub.reset_stats()
    backend = HuggingFaceBackend(parse_url("hf://org/model"),
                                 BackendOptions(endpoint=hub.hf_endpoint), retry=FAST)
    yield backend
    backend.close()
    hub.clear_knobs()


def shard(hf: HuggingFaceBackend) -> tuple[str, int]:
    commit = hf.resolve()
    f = next(f for f in hf.list_files(commit) if f.path.endswith(".safetensors"))
    return commit, f.size


def read(hf: HuggingFaceBackend, commit: str, start: int, n: int,
         path: str = "model-00001-of-00001.safetensors") -> bytes:
    buf = bytearray(n)
    hf.read_into(commit, path, start, memoryview(buf))
    return bytes(buf)


def test_5xx_are_retried_and_the_bytes_are_right(hf: HuggingFaceBackend, hub: HubEmulator) -> None:
    commit, _ = shard(hf)
    clean = read(hf, commit, 1000, 5000)
    hub.set_knobs(fail_next=2, fail_status=503)
    assert read(hf, commit, 1000, 5000) == clean
    assert hub.stats()["status_counts"]["503"] == 2


@pytest.mark.parametrize("knob", ["truncate_next", "corrupt_next"])
def test_truncated_bodies_are_retried_and_corrupt_ones_pass_through_to_the_digest(
    knob: str, hf: HuggingFaceBackend, hub: HubEmulator
) -> None:
    commit, _ = shard(hf)
    clean = read(hf, commit, 0, 100_000)
    hub.set_knobs(**{knob: 1})
    got = read(hf, commit, 0, 100_000)
    if knob == "truncate_next":
        assert got == clean  # a short body is never returned as a piece
    else:
        # A flipped byte arrives as a well-formed response: the per-piece CRC and
        # the whole-file sha256 catch it (tests/unit/test_get.py).
        assert got != clean and len(got) == len(clean)


def test_429_waits_as_long_as_the_hub_says_and_no_more_requests(
    hf: HuggingFaceBackend, hub: HubEmulator
) -> None:
    commit, _ = shard(hf)
    hub.reset_stats()
    hub.set_knobs(rate_limit=(1, 1.0), match="any")
    started = time.monotonic()
    # config.json is served by the hub itself (the CDN has no rate limit).
    read(hf, commit, 0, 10, "config.json")
    read(hf, commit, 10, 10, "config.json")
    waited = time.monotonic() - started
    counts = hub.stats()["status_counts"]
    # The second read was refused once with Retry-After, and sent again only after it.
    assert counts.get("429", 0) >= 1
    assert waited >= 0.9
    assert counts["429"] <= 2


def test_persistent_429_becomes_rate_limited_after_bounded_retries(
    hf: HuggingFaceBackend, hub: HubEmulator
) -> None:
    commit, _ = shard(hf)
    hub.set_knobs(fail_next=100, fail_status=429)
    with pytest.raises(RateLimited, match="429"):
        read(hf, commit, 0, 10)
    assert hub.stats()["status_counts"]["429"] == FAST.retries + 1


def test_origin_down_is_a_clear_error_after_bounded_retries(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = HuggingFaceBackend(parse_url("hf://org/model"),
                                 BackendOptions(endpoint=f"http://127.0.0.1:{port}"), retry=FAST)
    with pytest.raises(OriginUnavailable, match="did not answer"):
        backend.resolve()


def test_a_slow_origin_times_out_and_is_retried(hub: HubEmulator) -> None:
    hub.clear_knobs()
    backend = HuggingFaceBackend(parse_url("hf://org/model"),
                                 BackendOptions(endpoint=hub.hf_endpoint), retry=FAST)
    backend._http._client.timeout = __import__("httpx").Timeout(0.3)
    try:
        commit, _ = shard(backend)
        hub.set_knobs(delay=1.0, match="download")
        with pytest.raises(OriginUnavailable):
            read(backend, commit, 0, 10)
        hub.clear_knobs()
        assert len(read(backend, commit, 0, 10)) == 10
    finally:
        backend.close()
        hub.clear_knobs()


def test_modelscope_sends_bearer_and_cookie_only_to_its_hub(hub: HubEmulator) -> None:
    from raydf.backends.base import Secret

    hub.tokens["ms_tok_1"] = "carol"
    backend = ModelScopeBackend(parse_url("modelscope://org/model"),
                                BackendOptions(Secret("ms_tok_1"), hub.ms_endpoint), retry=FAST)
    try:
        files = backend.list_files(backend.resolve())
        assert files and all(f.sha256 for f in files)
        assert "ms_tok_1" not in repr(backend)
    finally:
        backend.close()
