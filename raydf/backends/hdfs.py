"""HDFS: ``hdfs://namenode[:port]/path`` (one file, or a folder with ``-r``).

Examples::

    hdfs://namenode:8020/models/llama-3-8b       (with -r: the whole folder)
    hdfs://namenode/models/llama-3-8b/config.json (one file; the port defaults to 8020)

Auth: the Hadoop client's own. The user is ``HADOOP_USER_NAME`` (else the
login user); on a Kerberized cluster the ticket cache in ``KRB5CCNAME`` is
used (run ``kinit`` first). Needs libhdfs and a JVM where the seed runs: a
Hadoop client install with ``HADOOP_HOME`` (or ``ARROW_LIBHDFS_DIR``),
``JAVA_HOME``, and ``CLASSPATH=$(hadoop classpath --glob)``. HDFS publishes
no sha256: files are verified per piece only.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from raydf.backends.arrowfs import ArrowFsBackend, filesystem_class
from raydf.errors import ConfigError, OriginUnavailable

if TYPE_CHECKING:
    import pyarrow.fs as pafs

__all__ = ["HdfsBackend"]

DEFAULT_PORT = 8020
# What a missing Hadoop client looks like when pyarrow loads libhdfs and the JVM.
_MISSING_CLIENT = re.compile(r"libjvm|libhdfs|JAVA_HOME|CLASSPATH|NoClassDefFound|ClassNotFound",
                             re.IGNORECASE)
INSTALL_HINT = (
    "install a Java runtime and a Hadoop client on the seed node, then set JAVA_HOME, "
    "HADOOP_HOME (or ARROW_LIBHDFS_DIR, the folder of libhdfs.so) and "
    "CLASSPATH=$(hadoop classpath --glob)"
)


class HdfsBackend(ArrowFsBackend):
    """Reads files from HDFS through libhdfs."""

    SCHEME: ClassVar[str] = "hdfs"
    AUTH_HINT: ClassVar[str] = (
        "set HADOOP_USER_NAME to a user that may read the path, or run kinit on a Kerberized "
        "cluster (the ticket cache is KRB5CCNAME)"
    )

    CALLER_ENV: ClassVar[tuple[str, ...]] = ("HADOOP_USER_NAME", "KRB5CCNAME")

    def _fs_path(self, key: str) -> str:
        return "/" + key

    def _key(self, fs_path: str) -> str:
        # libhdfs may list full URIs (hdfs://namenode:8020/path) or bare paths.
        return (urlsplit(fs_path).path if "://" in fs_path else fs_path).lstrip("/")

    def _connect(self) -> pafs.FileSystem:
        cls = filesystem_class("HadoopFileSystem", INSTALL_HINT)
        host, _, port = self.source.repo_id.partition(":")
        try:
            filesystem: pafs.FileSystem = cls(
                host, int(port or DEFAULT_PORT), user=os.environ.get("HADOOP_USER_NAME"),
                kerb_ticket=os.environ.get("KRB5CCNAME"),
            )
        except OSError as exc:
            detail = self._detail(exc)
            if _MISSING_CLIENT.search(str(exc)):
                raise ConfigError(f"cannot use {self.source}: {detail} ({INSTALL_HINT})") from exc
            raise OriginUnavailable(f"cannot connect to HDFS at {self.source.repo_id}: {detail}; "
                                    "check the namenode address and that it is up") from exc
        return filesystem
