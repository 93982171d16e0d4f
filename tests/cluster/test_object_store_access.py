"""Object stores on a real 2-node cluster: the caller's credentials decide.

The cluster's own processes (and so every seed) start with a valid key in their
environment, as on a cluster whose nodes have an identity. A caller without a
key, or with a wrong one, must still be refused by the store (exit 3, nothing
placed on any node): its seed uses the caller's credentials, never the node's.
The store is a real S3 server on loopback (moto, IAM checks on).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import moto.settings
import pytest
from moto.server import ThreadedMotoServer

from raydf.testing.cluster import LocalCluster

MiB = 2**20
BUCKET = "access-models"
FILES = {"config.json": b'{"hidden_size": 64}', "weights.bin": bytes(range(256)) * (6 * MiB // 256)}
BIN = Path(sys.executable).parent
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_NO_SIGN_REQUEST", "AWS_REGION",
            "AWS_DEFAULT_REGION")


@pytest.fixture(scope="module")
def store() -> Iterator[tuple[str, dict[str, str]]]:
    """A real S3 endpoint holding s3://access-models/org/model/, and a key it issued."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    setup = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "setup",
             "aws_secret_access_key": "setup"}
    s3 = boto3.client("s3", **setup)
    s3.create_bucket(Bucket=BUCKET)
    for name, data in FILES.items():
        s3.put_object(Bucket=BUCKET, Key=f"org/model/{name}", Body=data)
    iam = boto3.client("iam", **setup)
    iam.create_user(UserName="access-reader")
    iam.put_user_policy(UserName="access-reader", PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }))
    made = iam.create_access_key(UserName="access-reader")["AccessKey"]
    key = {"AWS_ACCESS_KEY_ID": made["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": made["SecretAccessKey"]}
    saved = moto.settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # every request's key is checked from now
    try:
        yield url, key
    finally:
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
        # moto keeps its buckets and users per process: leave none to later modules.
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
        server.stop()


@pytest.fixture(scope="module")
def cluster(store: tuple[str, dict[str, str]],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Two nodes whose processes all hold the valid key (the nodes' identity)."""
    url, key = store
    saved = {name: os.environ.get(name) for name in AWS_VARS}
    os.environ.update(key, AWS_ENDPOINT_URL=url, AWS_DEFAULT_REGION="us-east-1")
    try:
        with LocalCluster(2, root=tmp_path_factory.mktemp("nodes")) as c:
            yield c
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def get(cluster: LocalCluster, dest: str, url: str, **aws: str) -> tuple[int, str]:
    """``raydf get`` as a caller whose AWS variables are exactly ``aws``."""
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARS}
    env.update(aws, AWS_EC2_METADATA_DISABLED="true")
    done = subprocess.run(
        [str(BIN / "raydf"), "get", f"s3://{BUCKET}/org/model/", "-O", dest, "-r", "--address",
         str(cluster.address), "--no-progress"],
        capture_output=True, text=True, timeout=300, env=env)
    return done.returncode, done.stderr


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def nothing_at(cluster: LocalCluster, dest: str) -> bool:
    return all(not any(cluster.path_on(n, dest).rglob("*")) for n in cluster.node_ids
               if cluster.path_on(n, dest).exists())


def test_a_caller_with_the_key_gets_every_object_on_every_node(
    cluster: LocalCluster, store: tuple[str, dict[str, str]],
) -> None:
    url, key = store
    code, err = get(cluster, "/models/s3-ok", url, **key, AWS_ENDPOINT_URL=url,
                    AWS_DEFAULT_REGION="us-east-1")
    assert code == 0, err
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/s3-ok")) == FILES


@pytest.mark.parametrize("who", ["no key", "a wrong secret"])
def test_a_caller_the_store_refuses_gets_nothing_though_the_nodes_hold_a_key(
    cluster: LocalCluster, store: tuple[str, dict[str, str]], who: str,
) -> None:
    url, key = store
    aws = {"AWS_ENDPOINT_URL": url, "AWS_DEFAULT_REGION": "us-east-1"}
    if who == "a wrong secret":
        aws.update(AWS_ACCESS_KEY_ID=key["AWS_ACCESS_KEY_ID"], AWS_SECRET_ACCESS_KEY="wrong-0001")
    dest = f"/models/s3-{who.replace(' ', '-')}"
    code, err = get(cluster, dest, url, **aws)
    assert code == 3, err
    assert "wrong-0001" not in err and key["AWS_SECRET_ACCESS_KEY"] not in err
    assert nothing_at(cluster, dest)
