"""Progress files: a campaign appends what it finished, so a rerun continues where it stopped.

A progress file is JSON lines. The first line is a header: the campaign's arguments and
fingerprints of the model's parameters and buffers and of the analysis images. Every other line
is one finished chunk of faults: the work unit it belongs to, the range of positions in that
unit's fault list, each fault's outcome counts (masked, SDC, critical, DUE over the images) and
the engine work the chunk took. Each line is written with one ``write`` and ``fsync``-ed, so a
``kill -9`` can at most leave a torn last line without a newline; it is dropped on reopening.

Reopening a file whose header differs (other arguments, model or images) raises ``ValueError``
naming what differs: progress is never mixed across campaigns.

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
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["ChunkRecord", "ProgressLog", "tensors_fingerprint"]

_FORMAT = "pytorchfi-deepvigor campaign progress"
_VERSION = 1


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

    def to_line(self) -> bytes:
        data = {
            "unit": self.unit,
            "start": self.start,
            "stop": self.stop,
            "counts": np.asarray(self.counts, dtype=np.int64).reshape(-1).tolist(),
            "forwards": self.forwards,
            "evaluations": self.evaluations,
            "seconds": self.seconds,
        }
        return (json.dumps(data, separators=(",", ":")) + "\n").encode()

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


class ProgressLog:
    """An append-only progress file for one campaign (see the module docstring).

    Args:
        path: the JSON-lines file; created with its header when absent or empty.
        header: what identifies the campaign (arguments and fingerprints, JSON values).

    Raises:
        ValueError: the file belongs to another campaign, or is not a progress file.
    """

    def __init__(self, path: str | Path, header: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.header = {"format": _FORMAT, "version": _VERSION, **header}
        self.records: list[ChunkRecord] = []
        lines = self._read_complete_lines()
        if lines:
            self._check_header(lines[0])
            for number, line in enumerate(lines[1:], start=2):
                try:
                    self.records.append(ChunkRecord.from_json(json.loads(line)))
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(
                        f"progress file {self.path} is corrupt at line {number} ({exc}); "
                        "delete it to start the campaign afresh"
                    ) from exc
        self._file = self.path.open("ab")
        if not lines:
            self._write(json.dumps(self.header, sort_keys=True).encode() + b"\n")

    def _read_complete_lines(self) -> list[bytes]:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return []
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):  # a torn last line from a killed run
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
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    def append(self, record: ChunkRecord) -> None:
        """Append one finished chunk durably (written and fsync-ed before returning)."""
        self.records.append(record)
        self._write(record.to_line())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ProgressLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
