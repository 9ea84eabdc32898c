"""Bulk Data NDJSON folders: find the files, fingerprint them, read them line by line, write them.

A *bulk folder* is what a FHIR Bulk Data export leaves behind: one or more NDJSON files
per resource type (``application/fhir+ndjson``: one resource per line), plain or gzip.
Each file's resource type is taken from its first resource, so any naming works (servers
name files ``Patient.ndjson``, ``1.ndjson`` or a UUID); a later line of another type is a
problem of that line, not of the file.

Everything streams: :func:`read_resources` holds one line at a time, and a bad line
(not JSON, not an object, not UTF-8, the wrong type) is counted and described by position
and kind — never by content, which is patient data — while the lines around it are read.
A gzip file that ends early gives its complete lines and one ``truncated`` problem.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

PLAIN_SUFFIX = ".ndjson"
GZIP_SUFFIX = ".ndjson.gz"
#: Lines looked at for a file's resource type before it is declared unreadable.
TYPE_PROBE_LINES = 100
#: Problems kept in full per read (all are counted).
MAX_KEPT_PROBLEMS = 200
_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_CHUNK = 1 << 20


class BulkInputError(ValueError):
    """The folder cannot be read as bulk data at all (missing, empty, a file unreadable)."""


@dataclass(frozen=True)
class BulkFile:
    path: Path
    #: Path relative to the folder, POSIX style (what manifests and the audit log record).
    name: str
    #: From the file's first resource; None for a file with no resource in it.
    resource_type: str | None
    size: int

    @property
    def compressed(self) -> bool:
        return self.path.name.endswith(GZIP_SUFFIX)


@dataclass(frozen=True)
class BulkFolder:
    root: Path
    files: tuple[BulkFile, ...]

    @property
    def resource_types(self) -> tuple[str, ...]:
        return tuple(sorted({f.resource_type for f in self.files if f.resource_type}))

    def files_of(self, resource_type: str) -> tuple[BulkFile, ...]:
        return tuple(f for f in self.files if f.resource_type == resource_type)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def is_ndjson(path: Path) -> bool:
    return path.is_file() and path.name.endswith((PLAIN_SUFFIX, GZIP_SUFFIX))


def open_text_lines(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed when it is gzip (by suffix)."""
    if path.name.endswith(GZIP_SUFFIX):
        return gzip.open(path, "rb")
    return path.open("rb")


def _probe_type(path: Path) -> str | None:
    """The resourceType of the first line that has one (None: the file has only blank lines)."""
    content = False
    try:
        with open_text_lines(path) as handle:
            for index, raw in enumerate(handle):
                if index >= TYPE_PROBE_LINES:
                    break
                if not raw.strip():
                    continue
                content = True
                try:
                    data = json.loads(raw)
                except ValueError:
                    continue
                kind = data.get("resourceType") if isinstance(data, dict) else None
                if isinstance(kind, str) and _RESOURCE_TYPE.match(kind):
                    return kind
    except (OSError, EOFError, zlib.error) as exc:
        raise BulkInputError(f"{path.name}: unreadable ({type(exc).__name__})") from None
    if not content:
        return None
    raise BulkInputError(
        f"{path.name}: no FHIR resource in its first {TYPE_PROBE_LINES} lines; is it FHIR NDJSON?"
    )


def scan_folder(folder: Path) -> BulkFolder:
    """Every ``*.ndjson`` / ``*.ndjson.gz`` file directly in ``folder`` (sorted by name).

    Sub-folders are not read (an export keeps its error files in one); nor are partly
    written files (``*.part``).
    """
    if not folder.is_dir():
        raise BulkInputError(f"{folder}: not a folder")
    paths = sorted(p for p in folder.iterdir() if is_ndjson(p))
    if not paths:
        raise BulkInputError(f"{folder}: no .ndjson or .ndjson.gz files")
    files = tuple(
        BulkFile(path, path.name, _probe_type(path), path.stat().st_size) for path in paths
    )
    return BulkFolder(folder, files)


# --------------------------------------------------------------------------- fingerprints
@dataclass(frozen=True)
class FileDigest:
    name: str
    resource_type: str | None
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.resource_type,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digest_files(files: Iterable[BulkFile]) -> tuple[FileDigest, ...]:
    """SHA-256 of each file as stored (compressed bytes for gzip), streamed."""
    return tuple(FileDigest(f.name, f.resource_type, f.size, sha256_file(f.path)) for f in files)


# --------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class LineProblem:
    """One line that was not read as a resource: where and what kind, never its content."""

    file: str
    line: int
    #: invalid-json, not-an-object, no-resource-type, wrong-type, not-utf8, truncated,
    #: unreadable
    kind: str
    detail: str

    def describe(self) -> str:
        return f"{self.file}:{self.line}: {self.kind} ({self.detail})"


@dataclass
class ReadStats:
    """Counts of one or more reads; problems are counted by kind and the first few kept."""

    lines: int = 0
    resources: int = 0
    blank: int = 0
    problem_counts: dict[str, int] = field(default_factory=dict)
    problems: list[LineProblem] = field(default_factory=list)

    @property
    def problem_total(self) -> int:
        return sum(self.problem_counts.values())

    def add_problem(self, problem: LineProblem) -> None:
        self.problem_counts[problem.kind] = self.problem_counts.get(problem.kind, 0) + 1
        if len(self.problems) < MAX_KEPT_PROBLEMS:
            self.problems.append(problem)

    def to_json(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "resources": self.resources,
            "blank": self.blank,
            "problems": dict(sorted(self.problem_counts.items())),
        }


def _json_error(exc: json.JSONDecodeError) -> str:
    # The message and position only: ``exc.doc`` is the line itself.
    return f"{exc.msg} at column {exc.colno}"


def read_resources(file: BulkFile, stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """The resources of one file, one line at a time; bad lines go to ``stats``."""
    stats = stats if stats is not None else ReadStats()
    expected = file.resource_type
    line_no = 0
    try:
        with open_text_lines(file.path) as handle:
            for raw in handle:
                line_no += 1
                stats.lines += 1
                if not raw.strip():
                    stats.blank += 1
                    continue
                resource = _parse_line(file, line_no, raw, expected, stats)
                if resource is not None:
                    stats.resources += 1
                    yield resource
    except EOFError:
        stats.add_problem(
            LineProblem(file.name, line_no + 1, "truncated", "compressed file ends early")
        )
    except (OSError, zlib.error) as exc:
        stats.add_problem(LineProblem(file.name, line_no + 1, "unreadable", type(exc).__name__))


def _parse_line(
    file: BulkFile, line_no: int, raw: bytes, expected: str | None, stats: ReadStats
) -> dict[str, Any] | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        stats.add_problem(LineProblem(file.name, line_no, "not-utf8", f"byte {exc.start}"))
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        stats.add_problem(LineProblem(file.name, line_no, "invalid-json", _json_error(exc)))
        return None
    if not isinstance(data, dict):
        stats.add_problem(LineProblem(file.name, line_no, "not-an-object", type(data).__name__))
        return None
    kind = data.get("resourceType")
    if not isinstance(kind, str) or not _RESOURCE_TYPE.match(kind):
        stats.add_problem(LineProblem(file.name, line_no, "no-resource-type", "resourceType"))
        return None
    if expected is not None and kind != expected:
        stats.add_problem(
            LineProblem(file.name, line_no, "wrong-type", f"{kind} in a {expected} file")
        )
        return None
    return data


def read_folder(
    folder: BulkFolder, types: tuple[str, ...] | None = None, stats: ReadStats | None = None
) -> Iterator[dict[str, Any]]:
    """Every resource of ``types`` (default: all), file after file."""
    for file in folder.files:
        if file.resource_type and (types is None or file.resource_type in types):
            yield from read_resources(file, stats)


# --------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class WrittenFile:
    name: str
    resource_type: str
    resources: int


@dataclass
class _OpenFile:
    handle: IO[bytes]
    raw: IO[bytes]
    part: Path
    final: Path
    count: int = 0


class NdjsonWriter:
    """Writes resources into per-type NDJSON files in ``folder``, as an export would.

    Files are ``<Type>.ndjson`` (or ``<Type>.<n>.ndjson`` with ``max_lines``, a new file
    every ``max_lines`` resources, so that a reader can split the work), gzip-compressed
    with ``compress``. Each is written as ``*.part`` and renamed when closed, so a crash
    never leaves a file that looks complete.
    """

    def __init__(
        self,
        folder: Path,
        *,
        compress: bool = False,
        max_lines: int | None = None,
        compresslevel: int = 6,
    ) -> None:
        if max_lines is not None and max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        self.folder = folder
        self.compress = compress
        self.max_lines = max_lines
        self.compresslevel = compresslevel
        self._open: dict[str, _OpenFile] = {}
        self._parts: dict[str, int] = {}
        self.written: list[WrittenFile] = []
        folder.mkdir(parents=True, exist_ok=True)

    def _name(self, resource_type: str) -> str:
        suffix = GZIP_SUFFIX if self.compress else PLAIN_SUFFIX
        if self.max_lines is None:
            return f"{resource_type}{suffix}"
        return f"{resource_type}.{self._parts.get(resource_type, 0):03d}{suffix}"

    def write(self, resource: dict[str, Any]) -> None:
        kind = resource["resourceType"]
        current = self._open.get(kind) or self._start(kind)
        line = json.dumps(resource, separators=(",", ":"), ensure_ascii=False)
        current.handle.write(line.encode() + b"\n")
        current.count += 1
        if self.max_lines is not None and current.count >= self.max_lines:
            self._finish(kind)

    def _start(self, kind: str) -> _OpenFile:
        final = self.folder / self._name(kind)
        if final.exists():
            raise FileExistsError(f"{final} exists: write into an empty folder")
        part = final.with_name(final.name + ".part")
        raw = part.open("wb")
        handle: IO[bytes] = raw
        if self.compress:
            handle = gzip.GzipFile(
                fileobj=raw, mode="wb", compresslevel=self.compresslevel, mtime=0
            )
        self._open[kind] = _OpenFile(handle, raw, part, final)
        return self._open[kind]

    def _finish(self, kind: str) -> None:
        current = self._open.pop(kind)
        current.handle.close()
        current.raw.close()  # GzipFile leaves a file object it was given open
        os.replace(current.part, current.final)
        self._parts[kind] = self._parts.get(kind, 0) + 1
        self.written.append(WrittenFile(current.final.name, kind, current.count))

    def close(self) -> list[WrittenFile]:
        for kind in list(self._open):
            self._finish(kind)
        return self.written

    def abort(self) -> None:
        """Close and remove every unfinished file (after an error)."""
        for current in self._open.values():
            current.handle.close()
            current.raw.close()
            current.part.unlink(missing_ok=True)
        self._open.clear()

    def __enter__(self) -> NdjsonWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
