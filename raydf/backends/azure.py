"""Azure Blob Storage (and ADLS Gen2): ``abs://container/key`` (one blob) or
``abs://container/prefix`` (every blob under it, with ``-r``).

Examples::

    abs://models/mistral-7b/                     (with -r: the whole prefix)
    abs://models/mistral-7b/config.json          (one blob)

The storage account is ``AZURE_STORAGE_ACCOUNT_NAME`` (or the Azure CLI's
``AZURE_STORAGE_ACCOUNT``). Auth: ``AZURE_STORAGE_ACCOUNT_KEY`` (or
``AZURE_STORAGE_KEY``), else a SAS token in ``AZURE_STORAGE_SAS_TOKEN``, else
Azure's DefaultAzureCredential (``AZURE_CLIENT_ID``/``AZURE_TENANT_ID``/
``AZURE_CLIENT_SECRET``, workload or managed identity). ``BackendOptions.endpoint``
points at another endpoint, e.g. Azurite's ``http://127.0.0.1:10000``. Needs a
pyarrow with ``pyarrow.fs.AzureFileSystem`` (the PyPI wheels since 16). Only
the seed reads these variables.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar

from raydf.backends.arrowfs import ArrowFsBackend, filesystem_class, split_endpoint
from raydf.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

__all__ = ["AzureBackend"]


class AzureBackend(ArrowFsBackend):
    """Reads blobs from Azure Blob Storage with ranged GETs."""

    SCHEME: ClassVar[str] = "abs"
    AUTH_HINT: ClassVar[str] = (
        "set AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, or give the identity the "
        "'Storage Blob Data Reader' role on the container"
    )

    CALLER_ENV: ClassVar[tuple[str, ...]] = (
        "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN",
    )

    def _connect(self) -> pafs.FileSystem:
        cls = filesystem_class("AzureFileSystem", "install pyarrow>=16 from PyPI")
        env = os.environ
        account = env.get("AZURE_STORAGE_ACCOUNT_NAME") or env.get("AZURE_STORAGE_ACCOUNT")
        if not account:
            raise ConfigError(f"{self.source} needs a storage account: set "
                              "AZURE_STORAGE_ACCOUNT_NAME (e.g. AZURE_STORAGE_ACCOUNT_NAME=mystore)")
        kwargs: dict[str, Any] = {}
        key = env.get("AZURE_STORAGE_ACCOUNT_KEY") or env.get("AZURE_STORAGE_KEY")
        sas = env.get("AZURE_STORAGE_SAS_TOKEN")
        if key:
            kwargs["account_key"] = key
        elif sas:
            kwargs["sas_token"] = sas
        self._secrets = [key or "", sas or ""]
        if self.options.endpoint:
            scheme, authority = split_endpoint(self.options.endpoint, "Azure endpoint")
            # ADLS Gen2 calls go to the dfs endpoint; an emulator serves both on one port.
            kwargs.update(blob_storage_scheme=scheme, blob_storage_authority=authority,
                          dfs_storage_scheme=scheme, dfs_storage_authority=authority)
        filesystem: pafs.FileSystem = cls(account, **kwargs)
        return filesystem
