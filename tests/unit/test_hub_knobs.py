"""Accounting is exact and every knob of the hub emulator does what it says."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from raydf.testing import HubEmulator, make_model

MB = 10**6
SHARD = 24 * MB  # big enough for the caps to be measured over ~1-2 s


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    make_model(root, "org/m", shard_sizes=[SHARD, SHARD, 2**20], seed=7)
    return root


@pytest.fixture(scope="module")
def hub(root: Path) -> Iterator[HubEmulator]:
    with HubEmulator(root, tokens={"hf_alice": "alice"}) as hub:
        yield hub


@pytest.fixture
def client(hub: HubEmulator) -> Iterator[httpx.Client]:
    hub.clear_knobs()
    hub.reset_stats()
    with httpx.Client(base_url=hub.hf_endpoint, timeout=30) as c:
        yield c
    hub.clear_knobs()


def ms_url(hub: HubEmulator, path: str) -> str:
    return f"{hub.ms_endpoint}/api/v1/models/org/m/repo?Revision=master&FilePath={path}"


def shard(n: int) -> str:
    return f"model-0000{n}-of-00003.safetensors"


def fetch_all(urls: list[str]) -> tuple[list[int], list[float]]:
    """Stream each url on its own thread; bytes received and seconds taken by each."""
    got, took = [0] * len(urls), [0.0] * len(urls)

    def run(i: int) -> None:
        start = time.perf_counter()
        with httpx.stream("GET", urls[i], timeout=30) as r:
            for chunk in r.iter_raw():
                got[i] += len(chunk)
        took[i] = time.perf_counter() - start

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(urls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got, took


def test_stats_count_exactly_the_body_bytes_clients_received(
    hub: HubEmulator, client: httpx.Client, root: Path
) -> None:
    received = 0
    for method, url, headers in [
        ("GET", "/api/models/org/m/revision/main?blobs=true", {}),
        ("GET", "/api/models/org/m/tree/main?recursive=true", {}),
        ("HEAD", f"/org/m/resolve/main/{shard(3)}", {}),
        ("GET", "/org/m/resolve/main/config.json", {}),
        ("GET", "/org/m/resolve/main/config.json", {"Range": "bytes=3-10"}),
        ("GET", "/org/m/resolve/main/nope", {}),
        ("GET", ms_url(hub, shard(3)), {"Range": "bytes=-1000"}),
        ("GET", f"{hub.ms_endpoint}/api/v1/models/org/m/revisions", {}),
    ]:
        received += len(client.request(method, url, headers=headers).content)
    cdn = client.head(f"/org/m/resolve/main/{shard(3)}").headers["Location"]
    received += len(client.get(cdn).content)
    stats = hub.stats()
    assert stats["bytes"] == received
    assert stats["requests"] == 10
    assert stats["by_client"]["127.0.0.1"] == {"bytes": received, "requests": 10}
    assert sum(v["bytes"] for v in stats["by_listener"].values()) == received
    assert stats["download_requests"] == 4  # config.json twice, the MS range, the CDN GET
    config = (root / "models/org/m/config.json").stat().st_size
    assert stats["download_bytes"] == config + 8 + 1000 + 2**20
    key = f"hf:models/org/m:{shard(3)}"
    assert stats["by_file"][key] == {"bytes": 2**20, "requests": 3}  # 2 HEADs, the CDN GET
    assert stats["by_file"][f"ms:models/org/m:{shard(3)}"] == {"bytes": 1000, "requests": 1}
    assert stats["status_counts"] == {"200": 5, "206": 2, "302": 2, "404": 1}
    assert stats["cdn_authorization_headers"] == 0


def test_a_token_sent_to_the_cdn_is_counted_as_a_leak(hub: HubEmulator, client: httpx.Client) -> None:
    cdn = client.head(f"/org/m/resolve/main/{shard(3)}").headers["Location"]
    assert client.get(cdn, headers={"Authorization": "Bearer hf_alice"}).status_code == 200
    assert hub.stats()["cdn_authorization_headers"] == 1


def test_stats_reset_and_knobs_work_over_http(hub: HubEmulator, client: httpx.Client) -> None:
    client.get("/org/m/resolve/main/config.json")
    stats = client.get("/_emulator/stats").json()
    assert stats["requests"] == 1 and stats == hub.stats()  # control calls are not counted
    knobs = client.post("/_emulator/knobs", json={"fail_next": 1, "match": "api", "rate_limit": [50, 10]})
    assert knobs.json()["fail_next"] == 1 and hub.knobs()["rate_limit"] == [50, 10]
    assert client.get("/api/models/org/m").status_code == 503
    assert client.post("/_emulator/knobs", json={"no_such_knob": 1}).status_code == 400
    assert client.post("/_emulator/knobs", json={"clear": True}).json().get("rate_limit") is None
    assert client.post("/_emulator/reset").json() == {"ok": True}
    assert hub.stats()["requests"] == 0


def test_aggregate_bandwidth_cap_holds_across_connections(hub: HubEmulator, client: httpx.Client) -> None:
    cap = 20 * MB
    hub.set_knobs(bandwidth=cap)
    start = time.perf_counter()
    got, _ = fetch_all([ms_url(hub, shard(1)), ms_url(hub, shard(2))])
    rate = sum(got) / (time.perf_counter() - start)
    assert sum(got) == 2 * SHARD
    assert 0.5 * cap < rate < 1.5 * cap, f"{rate / MB:.1f} MB/s under a {cap / MB:.0f} MB/s cap"


def test_per_connection_cap_limits_each_stream_not_the_total(hub: HubEmulator, client: httpx.Client) -> None:
    cap = 24 * MB
    hub.set_knobs(per_connection=cap)
    start = time.perf_counter()
    got, took = fetch_all([ms_url(hub, shard(1)), ms_url(hub, shard(2))])
    total = sum(got) / (time.perf_counter() - start)
    for n, seconds in zip(got, took, strict=True):
        assert 0.5 * cap < n / seconds < 1.5 * cap
    assert total > 1.3 * cap  # two streams together beat one stream's cap


def test_per_connection_cap_gives_a_new_response_no_head_start(
    hub: HubEmulator, client: httpx.Client,
) -> None:
    # Short ranged GETs one after another on one stream: with a burst per
    # response (50 ms worth, 400 kB here) each would arrive at once.
    cap, piece, count = 8 * MB, 400_000, 10
    hub.set_knobs(per_connection=cap)
    start = time.perf_counter()
    for k in range(count):
        headers = {"Range": f"bytes={k * piece}-{(k + 1) * piece - 1}"}
        reply = client.get(f"/org/m/resolve/main/{shard(1)}", headers=headers,
                           follow_redirects=True)
        assert len(reply.content) == piece
    rate = count * piece / (time.perf_counter() - start)
    assert rate <= 1.05 * cap, f"{rate / MB:.1f} MB/s under a {cap / MB:.0f} MB/s cap per stream"


def test_rate_limit_answers_429_with_headers_then_recovers(hub: HubEmulator, client: httpx.Client) -> None:
    hub.set_knobs(rate_limit=(3, 2))
    codes = [client.get("/api/models/org/m").status_code for _ in range(3)]
    limited = client.get("/api/models/org/m")
    assert codes == [200] * 3 and limited.status_code == 429
    wait = int(limited.headers["Retry-After"])
    assert limited.headers["RateLimit"] == f'"api";r=0;t={wait}'
    assert limited.headers["RateLimit-Policy"] == '"fixed window";"api";q=3;w=2'
    resolver = client.head("/org/m/resolve/main/config.json")
    assert resolver.status_code == 429 and resolver.headers["RateLimit"].startswith('"resolvers";r=0;')
    time.sleep(wait)  # what a client told "Retry-After" does: the window has to pass
    assert client.get("/api/models/org/m").status_code == 200


def test_fail_next_fails_that_many_matching_requests(hub: HubEmulator, client: httpx.Client) -> None:
    hub.set_knobs(fail_next=2)
    assert client.get("/api/models/org/m").status_code == 200  # api: not a download
    assert [client.get("/org/m/resolve/main/config.json").status_code for _ in range(3)] == [503, 503, 200]
    hub.set_knobs(fail_next=1, fail_status=502, match="any")
    assert client.get("/api/models/org/m").status_code == 502
    assert client.get("/api/models/org/m").status_code == 200


def test_truncate_next_sends_full_length_then_closes_after_half(
    hub: HubEmulator, client: httpx.Client, root: Path
) -> None:
    hub.set_knobs(truncate_next=1)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(ms_url(hub, shard(3)))
    assert hub.stats()["download_bytes"] == 2**20 // 2
    whole = client.get(ms_url(hub, shard(3)))
    assert whole.content == (root / "models/org/m" / shard(3)).read_bytes()


def test_corrupt_next_flips_exactly_one_byte(hub: HubEmulator, client: httpx.Client, root: Path) -> None:
    good = (root / "models/org/m" / shard(3)).read_bytes()
    hub.set_knobs(corrupt_next=1)
    cdn = client.head(f"/org/m/resolve/main/{shard(3)}").headers["Location"]
    bad = client.get(cdn).content
    assert len(bad) == len(good) == hub.stats()["by_listener"]["cdn"]["bytes"]
    assert [i for i in range(len(good)) if bad[i] != good[i]] == [len(good) // 2]
    assert client.get(cdn).content == good


def test_delay_holds_each_matching_response(hub: HubEmulator, client: httpx.Client) -> None:
    hub.set_knobs(delay=0.5, match="api")
    start = time.perf_counter()
    client.get("/api/models/org/m")
    assert time.perf_counter() - start >= 0.5
    start = time.perf_counter()
    client.get("/org/m/resolve/main/config.json")  # a download: not delayed
    assert time.perf_counter() - start < 0.5
