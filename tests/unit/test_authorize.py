"""The seed makes the hub judge the caller's own token before it returns a plan
(the SeedActor class itself, without Ray, against the hub emulator over HTTP)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from raydf.cluster.seed import SeedActor
from raydf.errors import HubError
from raydf.options import make_request
from raydf.plan import RepoPlan
from raydf.testing.hub import HubEmulator, make_model, write_repo_meta

APPROVED, UNAPPROVED = "tok_approved_alice", "tok_unapproved_bob"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubEmulator]:
    root = tmp_path_factory.mktemp("hub")
    make_model(root, "org/gated", shard_sizes=[2**20], seed=1)
    write_repo_meta(root, "org/gated", gated="manual")
    make_model(root, "org/open", shard_sizes=[2**20], seed=2)
    with HubEmulator(root, tokens={APPROVED: "alice", UNAPPROVED: "bob"},
                     approved={"alice"}) as emulator:
        yield emulator


def plan_for(hub: HubEmulator, url: str, token: str | None) -> RepoPlan:
    return seed_for(hub, url, token).plan()


def seed_for(hub: HubEmulator, url: str, token: str | None) -> SeedActor:
    prefix = "hf" if url.startswith("hf://") else "ms"
    endpoint = hub.hf_endpoint if prefix == "hf" else hub.ms_endpoint
    request = make_request(url, "/tmp/unused", hub_options={
        f"{prefix}_endpoint": endpoint, f"{prefix}_token": token or ""})
    seed = SeedActor()
    seed.take(request.without_secrets(), request.backend_options.token)
    return seed


@pytest.mark.parametrize("url", ["hf://org/gated", "modelscope://org/gated"])
@pytest.mark.parametrize("token", [None, UNAPPROVED])
def test_a_gated_repo_gives_no_plan_to_a_caller_the_hub_refuses(
    hub: HubEmulator, url: str, token: str | None,
) -> None:
    hub.reset_stats()
    with pytest.raises(HubError) as caught:
        plan_for(hub, url, token)
    assert token is None or token not in str(caught.value)
    assert hub.stats()["download_bytes"] <= 1  # at most the one byte ModelScope is asked for


@pytest.mark.parametrize("url", ["hf://org/gated", "modelscope://org/gated"])
def test_a_gated_repo_gives_a_plan_to_an_approved_caller(hub: HubEmulator, url: str) -> None:
    assert plan_for(hub, url, APPROVED).files


def test_a_public_repo_costs_no_access_check_on_hugging_face(hub: HubEmulator) -> None:
    seed = seed_for(hub, "hf://org/open", None)
    seed.plan()
    assert seed.stats()["origin_requests"] == 2  # the revision and the listing, no HEAD


@pytest.mark.parametrize("hub_scheme", ["hf", "modelscope"])
def test_a_plan_is_public_only_when_the_hub_says_neither_private_nor_gated(
    hub: HubEmulator, hub_scheme: str,
) -> None:
    # raydf warm --auto warms only public repos without the warming caller's token.
    assert plan_for(hub, f"{hub_scheme}://org/open", None).public
    assert plan_for(hub, f"{hub_scheme}://org/open", APPROVED).public
    assert not plan_for(hub, f"{hub_scheme}://org/gated", APPROVED).public
