"""Files at a URI, read through the Hadoop file system of a Spark session.

A national platform keeps its extracts in an object store (``s3a://``, ``abfss://``,
``gs://``) or HDFS, and its Spark is already configured to read them: connectors installed,
credentials set. ``HadoopFiles`` reads the same URIs through that same configuration (the
session's ``FileSystem`` over Py4J), so riskstrat needs no second set of credentials and
reads whatever Spark reads. It is an fsspec file system, so that the engine-neutral checks
of an extract's structure (``riskstrat.data.extract.read_structure``: the manifest, the
files, each Parquet file's schema, the CSV scan) run on it unchanged, and DuckDB reads a
Parquet file's schema through it (``DuckDBPyConnection.register_filesystem``).

What it reads is small next to what Spark reads: the manifest, Parquet footers and, for a CSV
extract, each file once for the scan (at the speed Py4J moves bytes, some tens of MB/s:
prefer Parquet at a URI). It never writes. ``file://`` URIs go through Hadoop's local file
system, which is how the tests exercise this path without an object store.

PySpark and fsspec (the ``spark`` extra) are imported lazily by ``hadoop_files``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from riskstrat.errors import UsageError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["hadoop_files", "is_uri", "uri_name", "uri_scheme"]

_URI = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
#: Bytes fetched per read: Py4J moves each as one message.
BLOCK_BYTES = 8 << 20


def is_uri(location: object) -> bool:
    """Whether ``location`` is a URI (``scheme://...``) rather than a local path."""
    return isinstance(location, str) and _URI.match(location) is not None


def uri_scheme(uri: str) -> str:
    match = _URI.match(uri)
    if match is None:
        raise UsageError(f"not a URI: {uri}")
    return match.group(1).lower()


def uri_name(uri: str) -> str:
    """The last part of a URI's path (``s3a://b/extracts/2026-11/`` -> ``2026-11``)."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


def hadoop_files(spark: SparkSession, uri: str) -> Any:
    """An fsspec file system for ``uri``'s scheme, reading through ``spark``'s Hadoop
    configuration (see the module docstring)."""
    from fsspec import AbstractFileSystem
    from fsspec.spec import AbstractBufferedFile

    class HadoopFile(AbstractBufferedFile):  # type: ignore[misc]
        """A file read in ranges: seek, then read the range's bytes in one Py4J call."""

        _stream: Any = None

        def _fetch_range(self, start: int, end: int) -> bytes:
            if self._stream is None:
                self._stream = self.fs.jvm_open(self.path)
            self._stream.seek(start)
            return bytes(self._stream.readNBytes(end - start))

        def close(self) -> None:
            if self._stream is not None:
                self._stream.close()
                self._stream = None
            super().close()

    class HadoopFiles(AbstractFileSystem):  # type: ignore[misc]
        """Read-only fsspec file system over a Spark session's Hadoop ``FileSystem``; paths
        are whole URIs."""

        cachable = False

        def __init__(self, session: SparkSession, scheme: str) -> None:
            super().__init__()
            self.protocol = (scheme,)
            self._spark = session
            jvm = session.sparkContext._jvm
            assert jvm is not None
            self._jvm = jvm
            self._conf = session.sparkContext._jsc.hadoopConfiguration()

        @classmethod
        def _strip_protocol(cls, path: Any) -> Any:
            return path.rstrip("/") if isinstance(path, str) else path

        def unstrip_protocol(self, name: str) -> str:
            return name

        def _fs_path(self, uri: str) -> tuple[Any, Any]:
            path = self._jvm.org.apache.hadoop.fs.Path(uri)
            return path.getFileSystem(self._conf), path

        def _detail(self, name: str, status: Any) -> dict[str, Any]:
            return {
                "name": name.rstrip("/"),
                "size": int(status.getLen()),
                "type": "directory" if status.isDirectory() else "file",
                "mtime": int(status.getModificationTime()) / 1000,
            }

        def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
            fs, p = self._fs_path(path)
            if not fs.exists(p):
                raise FileNotFoundError(path)
            return self._detail(path, fs.getFileStatus(p))

        def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
            """The entries of a folder, named as ``path`` + ``/`` + their name."""
            fs, p = self._fs_path(path)
            if not fs.exists(p):
                raise FileNotFoundError(path)
            base = path.rstrip("/")
            entries = [self._detail(f"{base}/{s.getPath().getName()}", s) for s in fs.listStatus(p)]
            return entries if detail else [e["name"] for e in entries]

        def modified(self, path: str) -> datetime:
            return datetime.fromtimestamp(self.info(path)["mtime"], tz=UTC)

        def get_file(self, rpath: str, lpath: str, **kwargs: Any) -> None:
            """Copy a file to a local path, by the JVM (no bytes through Py4J)."""
            fs, p = self._fs_path(rpath)
            if not fs.exists(p):
                raise FileNotFoundError(rpath)
            local = self._jvm.org.apache.hadoop.fs.Path(Path(lpath).resolve().as_uri())
            fs.copyToLocalFile(False, p, local, True)

        def jvm_open(self, path: str) -> Any:
            fs, p = self._fs_path(path)
            return fs.open(p)

        def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
            if mode != "rb":
                raise UsageError("files at a URI are read, never written, by riskstrat")
            return HadoopFile(self, path, mode, block_size=BLOCK_BYTES, cache_type="readahead")

    return HadoopFiles(spark, uri_scheme(uri))
