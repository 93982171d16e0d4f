"""Object-store backends: s3:// against a real local S3 server (moto in server mode),
and the gs://, abs:// and hdfs:// modules without any network.

The S3 server speaks the real wire protocol (SigV4, ranged GETs, ListObjectsV2),
and with its IAM check switched on it refuses keys it did not issue, so the
credential tests can fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import moto.settings
import pyarrow.fs as pafs
import pytest
from moto.server import ThreadedMotoServer

from raydf.backends import BackendOptions, backend_class, open_backend, options_for
from raydf.backends.azure import AzureBackend
from raydf.backends.gcs import GcsBackend
from raydf.backends.hdfs import HdfsBackend
from raydf.backends.s3 import S3Backend
from raydf.cli import main
from raydf.errors import (
    AccessDenied,
    ConfigError,
    EntryNotFound,
    OriginUnavailable,
    RevisionNotFound,
    UnsafeListing,
)
from raydf.uri import parse_url

MiB = 2**20
BUCKET = "models"
PREFIX = "org/model"
# The synthetic model: nested prefixes, an empty file, one file of several 4 MiB pieces.
MODEL = {
    "config.json": json.dumps({"architectures": ["Tiny"], "hidden_size": 64}).encode(),
    "tokenizer/tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}',
    "tokenizer/special/added_tokens.json": b"{}\n",
    "weights/empty.bin": b"",
    "weights/model-00001-of-00001.safetensors": hashlib.shake_256(b"raydf").digest(10 * MiB + 12345),
}
_ENV_CLEARED = ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_NO_SIGN_REQUEST", "AWS_PROFILE",
                "AWS_VIRTUAL_HOSTING", "AWS_REGION", "STORAGE_EMULATOR_HOST", "GS_NO_SIGN_REQUEST",
                "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_ACCOUNT_KEY",
                "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN")


def dead_endpoint() -> str:
    """An http endpoint on loopback where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                      aws_access_key_id="setup", aws_secret_access_key="setup")
    s3.create_bucket(Bucket=BUCKET)
    for name, data in MODEL.items():
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}", Body=data)
    # A sibling whose name starts like the prefix: never part of org/model.
    s3.put_object(Bucket=BUCKET, Key="org/model-v2/config.json", Body=b"{}")
    s3.put_object(Bucket=BUCKET, Key="org/evil/a/../../escape.txt", Body=b"x")
    yield url
    server.stop()


@pytest.fixture(scope="module")
def reader_key(endpoint: str) -> dict[str, str]:
    """An access key the server issued (to a user allowed s3:*), made before auth is on."""
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="setup", aws_secret_access_key="setup")
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    return {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


@pytest.fixture(autouse=True)
def aws_env(endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKE0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-do-not-print-0001")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("RAYDF_CACHE", str(tmp_path / "cache"))


def s3(url: str, **options: Any) -> S3Backend:
    backend = open_backend(parse_url(url), BackendOptions(**options))
    assert isinstance(backend, S3Backend)
    return backend


def read(backend: S3Backend, commit: str, repo_path: str, start: int, length: int) -> bytes:
    buffer = bytearray(length)
    backend.read_into(commit, repo_path, start, memoryview(buffer))
    return bytes(buffer)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- listing ------------------------------------------------------------------


@pytest.mark.parametrize("url", [f"s3://{BUCKET}/{PREFIX}", f"s3://{BUCKET}/{PREFIX}/"])
def test_prefix_lists_every_object_under_it_recursively_with_exact_paths_and_sizes(url: str) -> None:
    backend = s3(url)
    files = backend.list_files(backend.resolve())
    assert [(f.path, f.size) for f in files] == sorted((k, len(v)) for k, v in MODEL.items())
    assert all(f.repo_path == f"{PREFIX}/{f.path}" for f in files)
    assert all(f.digest is None for f in files)  # S3 publishes no sha256


def test_one_object_url_lists_that_object_alone() -> None:
    backend = s3(f"s3://{BUCKET}/{PREFIX}/weights/model-00001-of-00001.safetensors")
    (f,) = backend.list_files(backend.resolve())
    assert (f.path, f.repo_path, f.size) == (
        "model-00001-of-00001.safetensors", f"{PREFIX}/weights/model-00001-of-00001.safetensors",
        len(MODEL["weights/model-00001-of-00001.safetensors"]))


def test_version_is_stable_and_changes_when_an_object_is_rewritten(endpoint: str) -> None:
    url = f"s3://{BUCKET}/scratch/"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.put_object(Bucket=BUCKET, Key="scratch/a.bin", Body=b"one")
    backend = s3(url)
    commit = backend.resolve()
    assert s3(url).resolve() == commit
    client.put_object(Bucket=BUCKET, Key="scratch/a.bin", Body=b"three")
    assert s3(url).resolve() != commit
    with pytest.raises(RevisionNotFound, match="changed since it was listed"):
        s3(url).list_files(commit)  # a new backend asked for the old version
    with pytest.raises(RevisionNotFound, match="rewritten"):
        read(backend, commit, "scratch/a.bin", 0, 3)  # the first backend, mid-download


def test_unsafe_key_in_a_listing_is_refused() -> None:
    backend = s3(f"s3://{BUCKET}/org/evil/")
    with pytest.raises(UnsafeListing, match="unsafe path"):
        backend.resolve()


# -- ranged reads -------------------------------------------------------------


def test_ranged_reads_return_the_uploaded_bytes_and_open_each_object_once() -> None:
    name = "weights/model-00001-of-00001.safetensors"
    data = MODEL[name]
    backend = s3(f"s3://{BUCKET}/{PREFIX}/")
    commit = backend.resolve()
    after_listing = backend.requests
    for start, length in [(0, 4 * MiB), (4 * MiB, 4 * MiB), (1, 17), (5 * MiB + 3, 1000),
                          (len(data) - 12345, 12345), (len(data) - 1, 1)]:
        assert read(backend, commit, f"{PREFIX}/{name}", start, length) == data[start:start + length]
    assert backend.requests == after_listing + 1 + 6  # one open (HEAD), then one GET a read
    assert read(backend, commit, f"{PREFIX}/config.json", 0, 5) == MODEL["config.json"][:5]
    backend.close()


def test_read_past_the_end_of_an_object_is_an_error() -> None:
    backend = s3(f"s3://{BUCKET}/{PREFIX}/")
    commit = backend.resolve()
    with pytest.raises(OriginUnavailable, match="asked for 10 bytes"):
        read(backend, commit, f"{PREFIX}/config.json", len(MODEL["config.json"]) - 5, 10)


# -- credentials and endpoints -----------------------------------------------


def test_credentials_come_from_the_aws_environment(
    reader_key: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # check every key now
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", reader_key["id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", reader_key["secret"])
    backend = s3(f"s3://{BUCKET}/{PREFIX}/")
    assert len(backend.list_files(backend.resolve())) == len(MODEL)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-0002")
    with pytest.raises(AccessDenied, match="AWS_ACCESS_KEY_ID") as denied:
        s3(f"s3://{BUCKET}/{PREFIX}/").resolve()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTISSUED0003")
    with pytest.raises(AccessDenied):
        s3(f"s3://{BUCKET}/{PREFIX}/config.json").resolve()
    for secret in ("wrong-secret-0002", reader_key["secret"]):
        assert secret not in str(denied.value)
        assert secret not in repr(backend)


def test_endpoint_comes_from_aws_endpoint_url_and_more_specific_settings_win(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{BUCKET}/{PREFIX}/config.json"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead_endpoint())
    with pytest.raises(OriginUnavailable, match="did not answer"):
        s3(url).resolve()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    assert s3(url).exists()
    # An explicit option wins over both variables.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", dead_endpoint())
    assert s3(url, endpoint=endpoint).exists()


def test_endpoint_without_a_scheme_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "minio:9000")
    with pytest.raises(ConfigError, match=r"http\(s\)://host"):
        s3(f"s3://{BUCKET}/{PREFIX}/").resolve()


# -- not found ----------------------------------------------------------------


@pytest.mark.parametrize("url", [f"s3://{BUCKET}/{PREFIX}/no-such-file.json",
                                 f"s3://{BUCKET}/no/such/prefix/",
                                 "s3://no-such-bucket/org/model",
                                 "s3://no-such-bucket/org/model/"])
def test_missing_bucket_key_or_prefix_is_entry_not_found(url: str) -> None:
    backend = s3(url)
    with pytest.raises(EntryNotFound, match="check the bucket and the path") as err:
        backend.resolve()
    assert parse_url(url).repo_id in str(err.value)
    assert not backend.exists()


# -- end to end through the CLI ---------------------------------------------


def test_cli_get_prefix_recursive_gives_byte_identical_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["get", f"s3://{BUCKET}/{PREFIX}/", "-O", str(out), "-r", "--local",
                 "--no-progress"]) == 0
    assert files_of(out) == MODEL


def test_cli_get_one_object_without_r_names_the_file(tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    name = "weights/model-00001-of-00001.safetensors"
    assert main(["get", f"s3://{BUCKET}/{PREFIX}/{name}", "-O", str(out), "--local",
                 "--no-progress"]) == 0
    assert out.read_bytes() == MODEL[name]


def test_cli_get_prefix_without_r_asks_for_r(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", f"s3://{BUCKET}/{PREFIX}", "-O", str(tmp_path / "m"), "--local",
                 "--no-progress"]) == 2
    assert "-r" in capsys.readouterr().err


def test_cli_get_missing_object_exits_3_without_printing_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["get", "s3://no-such-bucket/m/", "-O", str(tmp_path / "m"), "-r", "--local",
                 "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "no-such-bucket" in err
    assert "fake-secret-do-not-print" not in err


# -- gs://, abs://, hdfs:// without network ----------------------------------


def test_every_object_store_scheme_is_registered() -> None:
    assert [backend_class(s) for s in ("s3", "gs", "abs", "hdfs")] == [
        S3Backend, GcsBackend, AzureBackend, HdfsBackend]


def test_gcs_builds_its_filesystem_lazily_from_the_emulator_variable(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")
    backend = open_backend(parse_url("gs://bucket/models/m/"), BackendOptions())
    assert backend._fs is None  # type: ignore[attr-defined]  # nothing built, nothing sent
    fs = backend.filesystem  # type: ignore[attr-defined]
    assert isinstance(fs, pafs.GcsFileSystem)
    options = fs.__reduce__()[1][0]
    assert (options["anonymous"], options["scheme"], options["endpoint_override"]) == (
        True, "http", "127.0.0.1:4443")


def test_azure_needs_an_account_and_keeps_its_key_out_of_messages(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = open_backend(parse_url("abs://container/models/m"), BackendOptions())
    with pytest.raises(ConfigError, match="AZURE_STORAGE_ACCOUNT_NAME"):
        backend.resolve()
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "c2VjcmV0LWF6dXJlLWtleQ==")
    backend = open_backend(parse_url("abs://container/models/m"),
                           BackendOptions(endpoint="http://127.0.0.1:10000"))
    fs = backend.filesystem  # type: ignore[attr-defined]
    assert isinstance(fs, pafs.AzureFileSystem)
    options = fs.__reduce__()[1][0]
    assert (options["blob_storage_scheme"], options["blob_storage_authority"]) == (
        "http", "127.0.0.1:10000")
    assert "c2VjcmV0" not in repr(backend)


def test_hdfs_without_a_hadoop_client_is_a_config_error_naming_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An empty JAVA_HOME and libhdfs folder: pyarrow looks nowhere else, whatever is installed.
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    monkeypatch.setenv("ARROW_LIBHDFS_DIR", str(tmp_path))
    monkeypatch.delenv("HADOOP_HOME", raising=False)
    backend = open_backend(parse_url("hdfs://namenode:8020/models/m"), BackendOptions())
    assert isinstance(backend, HdfsBackend)  # constructing it loads nothing
    with pytest.raises(ConfigError, match="JAVA_HOME") as err:
        backend.resolve()
    assert "HADOOP_HOME" in str(err.value)
    assert len(str(err.value)) < 600  # the loader's long list of tried paths is cut


def test_object_store_credentials_are_the_callers_sealed_for_its_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text('{"type": "service_account", "private_key": "pk-0003"}')
    caller = {"AWS_ACCESS_KEY_ID": "AKIACALLER0003", "AWS_SECRET_ACCESS_KEY": "caller-secret-0003",
              "GOOGLE_APPLICATION_CREDENTIALS": str(key_file), "HOME": "/home/caller"}
    s3_options = options_for(parse_url("s3://models/org/model/"), environ=caller)
    gs_options = options_for(parse_url("gs://models/org/model/"), environ=caller)
    assert s3_options.token is not None and gs_options.token is not None
    assert "caller-secret-0003" not in repr(s3_options) and "pk-0003" not in repr(gs_options)
    # The seed process: the node's own key is dropped, the caller's put in its place.
    node_env = {"AWS_ACCESS_KEY_ID": "AKIANODE0004", "AWS_SECRET_ACCESS_KEY": "node-secret-0004",
                "AWS_SESSION_TOKEN": "node-session-0004", "PATH": "/usr/bin"}
    monkeypatch.setattr(os, "environ", dict(node_env))
    S3Backend.adopt_caller_credentials(s3_options.token)
    assert os.environ == {"AWS_ACCESS_KEY_ID": "AKIACALLER0003",
                          "AWS_SECRET_ACCESS_KEY": "caller-secret-0003", "PATH": "/usr/bin"}
    S3Backend.adopt_caller_credentials(options_for(parse_url("s3://m/p/"), environ={}).token)
    assert os.environ == {"PATH": "/usr/bin"}  # a caller without keys has none of the node's
    GcsBackend.adopt_caller_credentials(gs_options.token)
    written = Path(os.environ["GOOGLE_APPLICATION_CREDENTIALS"])
    assert written != key_file and written.read_text() == key_file.read_text()
    assert written.stat().st_mode & 0o077 == 0
    written.unlink()
