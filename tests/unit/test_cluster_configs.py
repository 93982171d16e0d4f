"""The shipped cluster configs: cluster.yaml through Ray's own launcher checks,
deploy/kuberay.yaml through the fields raydf relies on.

Ray's launcher config is checked the way ``ray up`` checks it before any cloud
call: ``prepare_config`` (defaults from Ray's aws/defaults.yaml, merged setup
commands, per-type worker limits), then ``validate_config`` (Ray's JSON schema
and its cross-field rules). No KubeRay CRD schema ships in any installed
package, so the KubeRay manifests are checked field by field here.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
SEED_RESOURCE = "raydf_seed"


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    return config


@pytest.fixture(scope="module")
def kuberay() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "kuberay.yaml").read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one document per kind"
    return by_kind


# -- cluster.yaml -----------------------------------------------------------


def test_cluster_yaml_passes_rays_own_launcher_validation(cluster: dict[str, Any]) -> None:
    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"


def test_rays_validation_would_catch_a_broken_cluster_yaml(cluster: dict[str, Any]) -> None:
    broken = copy.deepcopy(cluster)
    broken["available_node_types"][broken["head_node_type"]]["resources"][SEED_RESOURCE] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_head_is_the_cpu_seed_node_and_workers_have_gpus(cluster: dict[str, Any]) -> None:
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"] == {SEED_RESOURCE: 1}
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))
    workers = {name: t for name, t in types.items() if name != cluster["head_node_type"]}
    instance_types = {t["node_config"]["InstanceType"] for t in workers.values()}
    assert instance_types and all(re.match(r"(g5|g6|p4d|p5)\.", i) for i in instance_types)
    assert sum(t["min_workers"] for t in workers.values()) >= 1


def test_every_node_installs_raydf_and_gpu_nodes_cache_on_local_nvme(
    cluster: dict[str, Any]
) -> None:
    prepared = prepare_config(copy.deepcopy(cluster))
    for commands in (prepared["head_setup_commands"], prepared["worker_setup_commands"]):
        assert any("pip install" in c and "raydf" in c for c in commands)
    assert any("/mnt/nvme/raydf-cache" in c for c in prepared["worker_setup_commands"])
    start = " ".join(prepared["worker_start_ray_commands"])
    assert "RAYDF_CACHE=/mnt/nvme/raydf-cache" in start and "ray start" in start


def test_cluster_yaml_carries_no_token_and_documents_the_job() -> None:
    text = (ROOT / "cluster.yaml").read_text()
    assert not re.search(r"\bhf_[A-Za-z0-9]{20,}", text)
    assert not re.search(r"HF_TOKEN\s*[:=]\s*['\"]?[A-Za-z0-9]", text)
    assert "ray job submit -- raydf get hf://" in text


# -- deploy/kuberay.yaml -------------------------------------------------------


def _containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = pod_template["spec"]["containers"]
    return containers


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_kuberay_has_a_raycluster_and_a_rayjob_of_ray_io_v1(
    kuberay: dict[str, dict[str, Any]]
) -> None:
    assert set(kuberay) == {"RayCluster", "RayJob"}
    assert {d["apiVersion"] for d in kuberay.values()} == {"ray.io/v1"}


def test_kuberay_head_offers_the_seed_resource_and_gets_the_token_from_a_secret(
    kuberay: dict[str, dict[str, Any]]
) -> None:
    head = kuberay["RayCluster"]["spec"]["headGroupSpec"]
    resources = yaml.safe_load(yaml.safe_load(head["rayStartParams"]["resources"]))
    assert resources == {SEED_RESOURCE: 1}
    (container,) = _containers(head["template"])
    token = _env(container)["HF_TOKEN"]
    assert "value" not in token
    assert set(token["valueFrom"]["secretKeyRef"]) >= {"name", "key"}


def test_kuberay_gpu_workers_mount_the_node_local_cache_and_never_see_the_token(
    kuberay: dict[str, dict[str, Any]]
) -> None:
    (group,) = kuberay["RayCluster"]["spec"]["workerGroupSpecs"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    pod = group["template"]
    (container,) = _containers(pod)
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    env = _env(container)
    assert "HF_TOKEN" not in env and "MODELSCOPE_API_TOKEN" not in env
    cache = env["RAYDF_CACHE"]["value"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounted = [m for m in container["volumeMounts"] if cache.startswith(m["mountPath"])]
    assert mounted, f"RAYDF_CACHE={cache} is on no mounted volume"
    assert "hostPath" in volumes[mounted[0]["name"]] or "ephemeral" in volumes[mounted[0]["name"]]


def test_kuberay_job_runs_raydf_get_on_that_cluster_into_the_cache_volume(
    kuberay: dict[str, dict[str, Any]]
) -> None:
    job = kuberay["RayJob"]["spec"]
    assert job["clusterSelector"] == {"ray.io/cluster": kuberay["RayCluster"]["metadata"]["name"]}
    argv = job["entrypoint"].split()
    assert argv[:2] == ["raydf", "get"] and argv[2].startswith("hf://") and "-r" in argv
    dest = argv[argv.index("-O") + 1]
    (group,) = kuberay["RayCluster"]["spec"]["workerGroupSpecs"]
    (container,) = _containers(group["template"])
    assert any(dest.startswith(m["mountPath"] + "/") for m in container["volumeMounts"])
    text = (ROOT / "deploy" / "kuberay.yaml").read_text()
    assert not re.search(r"\bhf_[A-Za-z0-9]{20,}", text)
