"""Progress files: a campaign appends what it finished, so a rerun continues where it stopped.

A progress file is JSON lines. The first line is a header: the campaign's arguments and
fingerprints of the model's parameters and buffers and of the analysis images. Every other line
is one finished chunk of faults: the work unit it belongs to, the range of positions in that
unit's fault list, each fault's outcome counts (masked, SDC, critical, DUE over the images), the
engine work the chunk took and a ``check``: a SHA-256 of the line and of the header, so a line
edited by hand, or copied from another campaign's file, is refused. Each line is written with one
``write`` and ``fsync``-ed, so a ``kill -9`` can at most leave a torn last line without a newline;
it is dropped on reopening.

Reopening a file whose header differs (other arguments, model or images) raises ``ValueError``
naming what differs: progress is never mixed across campaigns. Records are keyed by their work
item (unit and fault range): a repeated identical record is ignored, never counted twice; two
different records for overlapping faults are refused. While a log is open, its file is locked
(:class:`~pytorchfi_deepvigor._lock.FolderLock`, a lock file beside it): a second run of the same
campaign on the same ``progress_dir`` is refused with the process that holds it (other campaigns
may share the folder).

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = Path(d) / "run.jsonl"
    ...     with ProgressLog(path, {"seed": 0}) as log:
    ...         log.append(ChunkRecord("L0", 0, 1, np.array([[3, 0, 1, 0]]), 1, 4))
    ...     [(r.unit, r.start, r.stop, r.counts.tolist()) for r in ProgressLog(path, {"seed": 0}).records]
    [('L0', 0, 1, [[3, 0, 1, 0]])]
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from pytorchfi_deepvigor._lock import LOCK_NAME, FolderLock

__all__ = ["ChunkRecord", "ProgressLog", "tensors_fingerprint"]

_FORMAT = "pytorchfi-deepvigor campaign progress"
_VERSION = 2  # 2: every record carries a check
_CHECK = b',"check":"'
_RESTART = "delete the file (the CLI: inject --restart) to start the campaign afresh"


def tensors_fingerprint(model: nn.Module | None = None, images: torch.Tensor | None = None) -> str:
    """SHA-256 of a model's parameters and buffers (names, dtypes, shapes, bytes) or of images.

    Example:
        >>> a = tensors_fingerprint(images=torch.zeros(2, 3))
        >>> a == tensors_fingerprint(images=torch.zeros(2, 3)), a == tensors_fingerprint(images=torch.ones(2, 3))
        (True, False)
    """
    digest = hashlib.sha256()
    items: list[tuple[str, torch.Tensor]] = []
    if model is not None:
        digest.update(type(model).__qualname__.encode())
        items += [(f"p:{n}", p) for n, p in model.named_parameters()]
        items += [(f"b:{n}", b) for n, b in model.named_buffers()]
    if images is not None:
        items.append(("images", images))
    for name, tensor in items:
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class ChunkRecord:
    """One finished chunk: faults ``start:stop`` of work unit ``unit``.

    Attributes:
        unit: the work unit's key (e.g. ``"L3"``, ``"pilot-L3"``).
        start, stop: positions in the unit's fault list.
        counts: int64 ``[stop - start, 4]``: masked, SDC, critical, DUE images per fault.
        forwards: batched forwards the chunk took.
        evaluations: image-evaluations the chunk took.
        seconds: wall-clock seconds the chunk took (0.0 in files written before it was recorded).
    """

    unit: str
    start: int
    stop: int
    counts: np.ndarray
    forwards: int
    evaluations: int
    seconds: float = 0.0

    def to_line(self, key: bytes = b"") -> bytes:
        """The JSON line of this record, ending with its ``check`` under the log's ``key``."""
        data = {
            "unit": self.unit,
            "start": self.start,
            "stop": self.stop,
            "counts": np.asarray(self.counts, dtype=np.int64).reshape(-1).tolist(),
            "forwards": self.forwards,
            "evaluations": self.evaluations,
            "seconds": self.seconds,
        }
        body = json.dumps(data, separators=(",", ":")).encode()
        return body[:-1] + _CHECK + _check(key, body).encode() + b'"}\n'

    def same_work(self, other: ChunkRecord) -> bool:
        """Whether both records hold the same faults with the same outcomes."""
        return (self.unit, self.start, self.stop) == (other.unit, other.start, other.stop) and (
            np.array_equal(self.counts, other.counts)
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChunkRecord:
        start, stop = int(data["start"]), int(data["stop"])
        counts = np.asarray(data["counts"], dtype=np.int64).reshape(stop - start, 4)
        return cls(
            str(data["unit"]),
            start,
            stop,
            counts,
            int(data["forwards"]),
            int(data["evaluations"]),
            float(data.get("seconds", 0.0)),
        )


def _check(key: bytes, body: bytes) -> str:
    return hashlib.sha256(key + b"|" + body).hexdigest()[:16]


def _verify(key: bytes, line: bytes) -> bool:
    """Whether ``line`` ends with the check of the rest of it under ``key``."""
    at = line.rfind(_CHECK)
    if at < 0 or not line.endswith(b'"}'):
        return False
    body = line[:at] + b"}"
    return line[at + len(_CHECK) : -2].decode(errors="replace") == _check(key, body)


class ProgressLog:
    """An append-only progress file for one campaign (see the module docstring).

    Args:
        path: the JSON-lines file; created with its header when absent or empty.
        header: what identifies the campaign (arguments and fingerprints, JSON values).
        readonly: only read the records (no lock, no writing, a torn last line left alone):
            how a distributed run reads the files of the other ranks.

    Raises:
        ValueError: the file belongs to another campaign, is not a progress file, or holds a
            record that fails its check or contradicts another record.
        FolderInUse: another process has this progress file open.
    """

    def __init__(
        self, path: str | Path, header: Mapping[str, Any], *, readonly: bool = False
    ) -> None:
        self.path = Path(path)
        self.header = {"format": _FORMAT, "version": _VERSION, **header}
        header_line = json.dumps(self.header, sort_keys=True).encode()
        self._key = hashlib.sha256(header_line).hexdigest().encode()
        self.records: list[ChunkRecord] = []
        self.duplicates = 0
        """Repeated identical records found on opening (ignored)."""
        self._lock = FolderLock(
            self.path.parent,
            "progress_dir",
            name=f".{self.path.name}{LOCK_NAME}",
            label=f"progress file {self.path}",
        )
        self._file: BinaryIO | None = None
        if readonly:  # another rank's file (distributed runs): read its complete lines only
            lines = self._read_complete_lines(repair=False)
            if lines:
                self._check_header(lines[0])
                self._load(lines[1:])
            return
        self._lock.acquire()
        try:
            lines = self._read_complete_lines()
            if lines:
                self._check_header(lines[0])
                self._load(lines[1:])
            self._file = self.path.open("ab")
        except BaseException:
            self._lock.release()
            raise
        if not lines:
            self._write(header_line + b"\n")

    def _load(self, lines: list[bytes]) -> None:
        seen: dict[tuple[str, int], tuple[ChunkRecord, int]] = {}
        for number, line in enumerate(lines, start=2):
            where = f"progress file {self.path}, line {number}"
            if not _verify(self._key, line):
                raise ValueError(
                    f"{where} fails its integrity check (edited by hand, damaged, or copied "
                    f"from another campaign); {_RESTART}"
                )
            try:
                rec = ChunkRecord.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{where} is corrupt ({exc}); {_RESTART}") from exc
            first = seen.get((rec.unit, rec.start))
            if first is not None and first[0].same_work(rec):
                self.duplicates += 1  # the same chunk written twice: count it once
                continue
            if first is not None:
                raise ValueError(
                    f"{where} repeats the faults {rec.unit}[{rec.start}:{rec.stop}] of line "
                    f"{first[1]} with other outcomes; {_RESTART}"
                )
            seen[(rec.unit, rec.start)] = (rec, number)
            self.records.append(rec)
        _refuse_overlaps(seen, self.path)

    def _read_complete_lines(self, repair: bool = True) -> list[bytes]:
        if not self.path.exists():
            if repair:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            return []
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if repair and len(complete) != len(data):  # a torn last line from a killed run
            with self.path.open("r+b") as f:
                f.truncate(len(complete))
        return [line for line in complete.split(b"\n") if line]

    def _check_header(self, line: bytes) -> None:
        try:
            found = json.loads(line)
        except ValueError:
            found = None
        if not isinstance(found, dict) or found.get("format") != _FORMAT:
            raise ValueError(
                f"{self.path} is not a campaign progress file; choose another progress_dir"
            )
        if found.get("version") != _VERSION:
            raise ValueError(
                f"progress file {self.path} was written by another version of this package "
                f"(progress format {found.get('version')}, this one reads {_VERSION}); {_RESTART}"
            )
        expected = json.loads(json.dumps(self.header, sort_keys=True))
        if found != expected:
            differ = sorted(
                k for k in set(found) | set(expected) if found.get(k) != expected.get(k)
            )
            raise ValueError(
                f"progress file {self.path} belongs to another campaign (different {differ}); "
                "rerun with the same arguments, model and images, or use another progress_dir"
            )

    def _write(self, data: bytes) -> None:
        if self._file is None:
            raise ValueError(f"progress file {self.path} was opened read-only")
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    def append(self, record: ChunkRecord) -> None:
        """Append one finished chunk durably (written and fsync-ed before returning)."""
        self._write(record.to_line(self._key))
        self.records.append(record)

    def close(self) -> None:
        """Close the file and release the folder's lock."""
        if self._file is not None:
            self._file.close()
        self._lock.release()

    def __enter__(self) -> ProgressLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _refuse_overlaps(seen: Mapping[tuple[str, int], tuple[ChunkRecord, int]], path: Path) -> None:
    """Raise when two records of one unit cover some of the same faults."""
    by_unit: dict[str, list[tuple[ChunkRecord, int]]] = {}
    for rec, number in seen.values():
        by_unit.setdefault(rec.unit, []).append((rec, number))
    for unit, recs in by_unit.items():
        recs.sort(key=lambda item: item[0].start)
        for (a, na), (b, nb) in zip(recs, recs[1:], strict=False):
            if b.start < a.stop:
                raise ValueError(
                    f"progress file {path}, lines {na} and {nb} overlap ({unit}[{a.start}:"
                    f"{a.stop}] and [{b.start}:{b.stop}]); {_RESTART}"
                )
