"""The weight cache's files, without torch: where entries live, their fingerprints, checks,
listing and removal (``codegen-lsp cache`` uses only this; :mod:`.weight_cache` builds models).

An entry is ``<key>.safetensors`` (the tensors) and ``<key>.json`` (its sidecar, written last:
source, format, layers, the data file's size, a SHA-256 of its header, a CRC-32 of sampled
blocks and one of all its data). See :mod:`.weight_cache` for what the key covers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("codegen_lsp.engine.weight_cache")

LAYOUT_VERSION = 1  # of the entries this module writes (tensor names, sidecar fields)
ENV_DIR = "CODEGEN_WEIGHT_CACHE_DIR"
ENV_SWITCH = "CODEGEN_WEIGHT_CACHE"
SAMPLES, SAMPLE_BYTES = 64, 64 << 10  # blocks checked at every hit
SPARE_BYTES = 1 << 30  # free disk to leave after writing an entry
STALE_TEMP_S = 3600  # a temp file this old is from a writer that died


class CorruptEntry(ValueError):
    """An entry that does not match its sidecar (the message says how)."""


def choices(fmt: Any) -> tuple[Any, ...]:
    """The part of an entry's format a user chooses (an entry differing in the rest is
    outdated: another torch or code version)."""
    fmt = fmt if isinstance(fmt, dict) else {}
    return tuple(fmt.get(k) for k in ("quantize", "dtype", "dense_prefill", "packed"))


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    """False when ``CODEGEN_WEIGHT_CACHE`` is 0/false/off/no."""
    return env.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "off", "no")


def cache_root(env: Mapping[str, str] = os.environ) -> Path:
    """The folder entries live in (see the module docstring)."""
    if env.get(ENV_DIR):
        return Path(env[ENV_DIR]).expanduser()
    base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "codegen-lsp" / "weights"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sampled(handle: Any, start: int, end: int, count: int, size: int) -> list[bytes]:
    """``count`` blocks of ``size`` bytes spread evenly over ``[start, end)``."""
    span = max(0, end - start - size)
    blocks = []
    for i in range(count):
        handle.seek(start + (span * i // max(1, count - 1)))
        blocks.append(handle.read(size))
    return blocks


def header_length(handle: Any, file_size: int) -> int:
    handle.seek(0)
    raw = handle.read(8)
    if len(raw) < 8:
        raise CorruptEntry("shorter than a safetensors header")
    (length,) = struct.unpack("<Q", raw)
    if length > file_size - 8:
        raise CorruptEntry("header longer than the file")
    return int(length)


def _file_print(path: Path) -> list[Any]:
    """One file's part of the checkpoint fingerprint (see the module docstring)."""
    stat = path.stat()
    if path.suffix in (".json", ".py"):
        return [path.name, stat.st_size, sha(path.read_bytes())]
    with path.open("rb") as handle:
        if path.suffix == ".safetensors":
            head_end = 8 + header_length(handle, stat.st_size)
        else:
            head_end = min(stat.st_size, 1 << 20)
        handle.seek(0)
        digest = hashlib.sha256(handle.read(head_end))
        for block in sampled(handle, head_end, stat.st_size, 16, 4096):
            digest.update(block)
    return [path.name, stat.st_size, stat.st_mtime_ns, digest.hexdigest()]


def checkpoint_print(directory: Path) -> list[list[Any]]:
    """The fingerprint of a checkpoint directory's weights, config and modeling files."""
    wanted = (".safetensors", ".bin", ".pt")
    names = sorted(
        p.name
        for p in directory.iterdir()
        if p.suffix in wanted
        or p.name in ("config.json",)
        or p.name.endswith(".index.json")
        or (p.name.startswith("modeling") and p.suffix == ".py")
    )
    return [_file_print(directory / name) for name in names]


def samples_crc(path: Path, size: int, header: int) -> int:
    with path.open("rb") as handle:
        crc = 0
        for block in sampled(handle, 8 + header, size, SAMPLES, SAMPLE_BYTES):
            crc = zlib.crc32(block, crc)
    return crc


def check(data: Path, info: Mapping[str, Any], full: bool = False) -> None:
    """Raise :class:`CorruptEntry` unless ``data`` matches its sidecar ``info``: size, header
    hash, sampled blocks (and, with ``full``, the CRC-32 of every byte)."""
    if info.get("layout_version") != LAYOUT_VERSION:
        raise CorruptEntry(f"layout version {info.get('layout_version')}")
    size = data.stat().st_size
    if size != info["size"]:
        raise CorruptEntry(f"size {size} bytes, {info['size']} written (truncated?)")
    with data.open("rb") as handle:
        length = header_length(handle, size)
        if sha(handle.read(length)) != info["header_sha256"]:
            raise CorruptEntry("header changed since it was written")
        if samples_crc(data, size, length) != info["samples_crc"]:
            raise CorruptEntry("sampled data blocks changed since they were written")
        if full:
            crc = 0
            while block := handle.read(16 << 20):
                crc = zlib.crc32(block, crc)
            if crc != info["data_crc32"]:
                raise CorruptEntry("data changed since it was written (CRC-32)")


@dataclass(frozen=True)
class Entry:
    """One entry as ``cache list`` shows it."""

    key: str
    meta: Path
    data: Path
    info: dict[str, Any]
    size: int
    last_use: float

    @property
    def source(self) -> str:
        return str(self.info.get("source", "?"))


def list_entries(root: Path) -> list[Entry]:
    """The entries under ``root`` (an unreadable sidecar lists with empty info), newest use
    first."""
    found = []
    try:
        metas = sorted(root.glob("*.json"))
    except OSError:
        return []
    for meta in metas:
        data = meta.with_suffix(".safetensors")
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            info = info if isinstance(info, dict) else {}
        except (OSError, ValueError):
            info = {}
        try:
            size = meta.stat().st_size + (data.stat().st_size if data.exists() else 0)
            last = meta.stat().st_mtime
        except OSError:
            continue
        found.append(Entry(meta.stem, meta, data, info, size, last))
    return sorted(found, key=lambda e: -e.last_use)


def remove_entry(root: Path, key: str) -> bool:
    """Remove one entry's files (sidecar first, so a half-removed entry is a miss)."""
    removed = False
    for path in (root / f"{key}.json", root / f"{key}.safetensors", root / f"{key}.rows"):
        try:
            path.unlink()
            removed = True
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("weight cache: cannot remove %s (%s)", path, exc)
    return removed


def machine_id() -> str:
    """This machine as far as arithmetic goes: architecture and CPU model (what makes a
    kernel's rounding differ between machines that share a home folder)."""
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")),
                model,
            )
    except OSError:
        pass
    return f"{platform.machine()} {model}"


def read_rows_verdict(root: Path, key: str, machine: str) -> bool | None:
    """The speculation row check's verdict stored beside entry ``key`` for ``machine``."""
    try:
        verdicts = json.loads((root / f"{key}.rows").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    verdict = verdicts.get(machine) if isinstance(verdicts, dict) else None
    return verdict if isinstance(verdict, bool) else None


def write_rows_verdict(root: Path, key: str, machine: str, agree: bool) -> None:
    """Keep the row check's verdict beside entry ``key`` (a small JSON map by machine; the
    check costs seconds at every start, 20 s for a 2B model, and its result depends only on
    the weights, the code and the machine, which the key and ``machine`` name)."""
    path = root / f"{key}.rows"
    try:
        verdicts = json.loads(path.read_text(encoding="utf-8"))
        verdicts = verdicts if isinstance(verdicts, dict) else {}
    except (OSError, ValueError):
        verdicts = {}
    verdicts[machine] = agree
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(verdicts), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("weight cache: cannot keep the row check's verdict (%s)", exc)


def sweep_temps(root: Path) -> None:
    """Remove temp files of writers that died, and data files without a sidecar."""
    now = time.time()
    for path in root.iterdir():
        orphan = path.suffix == ".safetensors" and not path.with_suffix(".json").exists()
        try:
            if (".tmp-" in path.name or orphan) and now - path.stat().st_mtime > STALE_TEMP_S:
                path.unlink()
        except OSError:
            pass
