"""Google Cloud Storage: ``gs://bucket/key`` (one object) or ``gs://bucket/prefix``
(every object under it, with ``-r``).

Examples::

    gs://my-models/qwen2.5-7b/                   (with -r: the whole prefix)
    gs://my-models/qwen2.5-7b/model.safetensors  (one object)

Auth, as Google's clients read it (Application Default Credentials):
``GOOGLE_APPLICATION_CREDENTIALS`` pointing at a service-account JSON file,
else ``gcloud auth application-default login``, else the metadata server on
GCE/GKE (workload identity). ``GS_NO_SIGN_REQUEST=YES`` reads a public bucket
anonymously. ``STORAGE_EMULATOR_HOST`` (e.g. ``http://127.0.0.1:4443``, a
fake-gcs-server, read anonymously) or ``BackendOptions.endpoint`` points at
another endpoint. These come from the caller's environment (the key file's
contents too) and go to the job's seed with the request, like a hub token.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from raydf.backends.arrowfs import ArrowFsBackend, env_flag, filesystem_class, split_endpoint

if TYPE_CHECKING:
    import pyarrow.fs as pafs

__all__ = ["GcsBackend"]

# The Google client retries transient errors for 15 minutes by default; a dead
# endpoint should fail a fan-out well before that.
RETRY_LIMIT = timedelta(seconds=60)


class GcsBackend(ArrowFsBackend):
    """Reads objects from Google Cloud Storage with ranged GETs."""

    SCHEME: ClassVar[str] = "gs"
    AUTH_HINT: ClassVar[str] = (
        "point GOOGLE_APPLICATION_CREDENTIALS at a service-account key allowed "
        "storage.objects.list and storage.objects.get (or run `gcloud auth application-default "
        "login`), or set GS_NO_SIGN_REQUEST=YES for a public bucket"
    )

    CALLER_ENV: ClassVar[tuple[str, ...]] = ("GS_NO_SIGN_REQUEST", "STORAGE_EMULATOR_HOST")
    CALLER_FILES: ClassVar[tuple[str, ...]] = ("GOOGLE_APPLICATION_CREDENTIALS",)

    def _connect(self) -> pafs.FileSystem:
        cls = filesystem_class("GcsFileSystem", "install a pyarrow wheel from PyPI (it has GCS)")
        kwargs: dict[str, Any] = {"retry_time_limit": RETRY_LIMIT}
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        endpoint = self.options.endpoint or emulator
        if endpoint:
            if "://" not in endpoint:  # the emulator variable is often a bare host:port
                endpoint = "http://" + endpoint
            kwargs["scheme"], kwargs["endpoint_override"] = split_endpoint(endpoint, "GCS endpoint")
        if env_flag("GS_NO_SIGN_REQUEST") or emulator:
            kwargs["anonymous"] = True
        filesystem: pafs.FileSystem = cls(**kwargs)
        return filesystem
