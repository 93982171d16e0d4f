"""Amazon S3 and S3-compatible stores: ``s3://bucket/key`` (one object) or
``s3://bucket/prefix`` (every object under it, with ``-r``).

Examples::

    s3://models/llama-3-8b/                      (with -r: the whole prefix)
    s3://models/llama-3-8b/config.json           (one object)

Auth, as the AWS clients read it: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``; without them the AWS
SDK's default chain (``AWS_PROFILE``/``~/.aws``, web identity as on EKS, the
instance profile). ``AWS_NO_SIGN_REQUEST=YES`` reads a public bucket
anonymously. Region from ``AWS_REGION`` or ``AWS_DEFAULT_REGION``.

S3-compatible stores (MinIO, Ceph, Alibaba OSS, Huawei OBS, Tencent COS):
set the endpoint with ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (or
``BackendOptions.endpoint``, which wins), e.g. ``http://minio:9000``; an
``http://`` endpoint is spoken in plain HTTP. Requests are path-style;
``AWS_VIRTUAL_HOSTING=TRUE`` switches to virtual-hosted style (OSS needs it).
These are read from the caller's environment (where ``raydf get`` or
``raydf.get`` runs) and go to the job's seed with the request, like a hub token:
the cluster's own variables are not used for a caller. Without keys, the seed's
node decides (its ``~/.aws`` profile, web identity or instance profile).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar

from raydf.backends.arrowfs import ArrowFsBackend, env_flag, filesystem_class, split_endpoint

if TYPE_CHECKING:
    import pyarrow.fs as pafs

__all__ = ["S3Backend"]


class S3Backend(ArrowFsBackend):
    """Reads objects from S3 or an S3-compatible store with ranged GETs."""

    SCHEME: ClassVar[str] = "s3"
    AUTH_HINT: ClassVar[str] = (
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary "
        "credentials) for an identity allowed s3:ListBucket and s3:GetObject, or "
        "AWS_NO_SIGN_REQUEST=YES for a public bucket"
    )

    CALLER_ENV: ClassVar[tuple[str, ...]] = (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_NO_SIGN_REQUEST",
        "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
        "AWS_VIRTUAL_HOSTING", "AWS_PROFILE",
    )

    def _connect(self) -> pafs.FileSystem:
        cls = filesystem_class("S3FileSystem", "install a pyarrow wheel from PyPI (it has S3)")
        env = os.environ
        kwargs: dict[str, Any] = {}
        endpoint = (self.options.endpoint or env.get("AWS_ENDPOINT_URL_S3")
                    or env.get("AWS_ENDPOINT_URL"))
        if endpoint:
            kwargs["scheme"], kwargs["endpoint_override"] = split_endpoint(endpoint, "S3 endpoint")
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        if env_flag("AWS_VIRTUAL_HOSTING"):
            kwargs["force_virtual_addressing"] = True
        if env_flag("AWS_NO_SIGN_REQUEST"):
            kwargs["anonymous"] = True
        elif env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            kwargs["access_key"] = env["AWS_ACCESS_KEY_ID"]
            kwargs["secret_key"] = env["AWS_SECRET_ACCESS_KEY"]
            kwargs["session_token"] = env.get("AWS_SESSION_TOKEN")
            self._secrets = [kwargs["access_key"], kwargs["secret_key"], kwargs["session_token"] or ""]
        filesystem: pafs.FileSystem = cls(**kwargs)
        return filesystem
