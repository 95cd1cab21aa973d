"""Versioned probe prompt sets: risk requests per axis plus neutral controls.

Layout (relative to the probes base directory, by default this package's directory)::

    v1/MANIFEST.json      version, axes, per file {axis, count, sha256}, licence, description
    v1/weapons.jsonl      one canonical JSON object per line:
    v1/cyber.jsonl          {"id": "cyber-001", "axis": "cyber", "prompt": "...", "style": "..."}
    v1/fraud.jsonl
    v1/self_harm.jsonl
    v1/neutral.jsonl        neutral lines add a fifth key: ..., "style": "...", "topic": "..."}

A published version directory is immutable: every file's sha256 is pinned in its manifest and
checked on every load, so an edited file cannot silently be used. Changing prompts means adding
a new version directory (``v2``) with its own manifest.

Pure Python (standard library only): no Django, no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ALL_AXES",
    "DEFAULT_VERSION",
    "MANIFEST_NAME",
    "NEUTRAL_AXIS",
    "PROBES_DIR",
    "RISK_AXES",
    "STYLES",
    "Probe",
    "ProbeSet",
    "ProbeSetError",
    "available_versions",
    "compute_digest",
    "load_probe_set",
]

RISK_AXES: tuple[str, ...] = ("weapons", "cyber", "fraud", "self_harm")
NEUTRAL_AXIS = "neutral"
ALL_AXES: tuple[str, ...] = (*RISK_AXES, NEUTRAL_AXIS)
STYLES: tuple[str, ...] = ("direct", "indirect", "roleplay", "fiction", "stepwise", "other")
DEFAULT_VERSION = "v1"
MANIFEST_NAME = "MANIFEST.json"
PROBES_DIR = Path(__file__).resolve().parent

_VERSION_RE = re.compile(r"v[1-9][0-9]*")
_AXIS_RE = re.compile(r"[a-z][a-z0-9_]*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_RISK_KEYS = ("id", "axis", "prompt", "style")
_NEUTRAL_KEYS = (*_RISK_KEYS, "topic")


class ProbeSetError(ValueError):
    """A probe set is unknown, malformed, or does not match its manifest."""


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe prompt. ``topic`` is set for neutral controls only."""

    id: str
    axis: str
    prompt: str
    style: str
    topic: str | None = None


@dataclass(frozen=True)
class ProbeSet:
    """The prompts of one version, restricted to some axes.

    ``prompts`` are ordered by axis (in the manifest's axis order, whatever order the caller
    asked for) and then by line. ``files`` holds ``(file name, sha256)`` of each included file,
    sorted by name; ``digest`` is :func:`compute_digest` over them and is what provenance
    records should store.
    """

    version: str
    prompts: tuple[Probe, ...]
    digest: str
    axes: tuple[str, ...]
    files: tuple[tuple[str, str], ...]

    def for_axis(self, axis: str) -> tuple[Probe, ...]:
        """The prompts of one included axis; ``ProbeSetError`` if it is not included."""
        if axis not in self.axes:
            raise ProbeSetError(
                f"axis {axis!r} is not in this probe set (included: {', '.join(self.axes)})"
            )
        return tuple(p for p in self.prompts if p.axis == axis)

    @property
    def risk_prompts(self) -> tuple[Probe, ...]:
        return tuple(p for p in self.prompts if p.axis != NEUTRAL_AXIS)

    @property
    def neutral_prompts(self) -> tuple[Probe, ...]:
        return tuple(p for p in self.prompts if p.axis == NEUTRAL_AXIS)


def compute_digest(file_hashes: Mapping[str, str]) -> str:
    """Digest of a probe set from its files' sha256s.

    Exact rule: sort the included files by file name (plain string order, e.g.
    ``cyber.jsonl`` < ``fraud.jsonl`` < ``neutral.jsonl`` < ``self_harm.jsonl`` <
    ``weapons.jsonl``); for each write the line ``<file name>:<sha256 lowercase hex>\\n``;
    the digest is the lowercase hex sha256 of the ASCII bytes of those lines concatenated.
    The sha256 of a file is taken over its exact bytes on disk.

    For example, a set holding only ``weapons.jsonl`` whose bytes hash to ``H`` has digest
    ``sha256(b"weapons.jsonl:" + H.encode() + b"\\n").hexdigest()``.

    The digest therefore depends only on which files are included and their bytes: not on
    the version label, the manifest's prose, or the order in which axes were requested.
    """
    if not file_hashes:
        raise ProbeSetError("cannot compute the digest of an empty probe set")
    h = hashlib.sha256()
    for name in sorted(file_hashes):
        sha = file_hashes[name]
        if not _SHA256_RE.fullmatch(sha) or ":" in name or "\n" in name:
            raise ProbeSetError(f"bad file entry for digest: {name!r}: {sha!r}")
        h.update(f"{name}:{sha}\n".encode("ascii"))
    return h.hexdigest()


def _base(base_dir: str | os.PathLike[str] | None) -> Path:
    return PROBES_DIR if base_dir is None else Path(base_dir)


def available_versions(base_dir: str | os.PathLike[str] | None = None) -> tuple[str, ...]:
    """Versions present under the base directory (``vN`` directories with a manifest),
    oldest first."""
    base = _base(base_dir)
    if not base.is_dir():
        return ()
    found = [
        p.name
        for p in base.iterdir()
        if p.is_dir() and _VERSION_RE.fullmatch(p.name) and (p / MANIFEST_NAME).is_file()
    ]
    return tuple(sorted(found, key=lambda v: int(v[1:])))


def _read_manifest(version_dir: Path, version: str) -> tuple[tuple[str, ...], dict]:
    path = version_dir / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProbeSetError(f"{path}: cannot read manifest: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ProbeSetError(f"{path}: manifest must be a JSON object")
    if manifest.get("version") != version:
        raise ProbeSetError(
            f"{path}: manifest version {manifest.get('version')!r} does not match "
            f"directory {version!r}"
        )
    axes = manifest.get("axes")
    if (
        not isinstance(axes, list)
        or not axes
        or not all(isinstance(a, str) and _AXIS_RE.fullmatch(a) for a in axes)
        or len(set(axes)) != len(axes)
    ):
        raise ProbeSetError(f"{path}: 'axes' must be a non-empty list of distinct axis names")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ProbeSetError(f"{path}: 'files' must be an object keyed by file name")
    for axis in axes:
        name = f"{axis}.jsonl"
        entry = files.get(name)
        if (
            not isinstance(entry, dict)
            or entry.get("axis") != axis
            or not isinstance(entry.get("count"), int)
            or isinstance(entry.get("count"), bool)
            or not isinstance(entry.get("sha256"), str)
            or not _SHA256_RE.fullmatch(entry["sha256"])
        ):
            raise ProbeSetError(
                f"{path}: files[{name!r}] must be an object with axis {axis!r}, "
                "an integer count and a lowercase hex sha256"
            )
    return tuple(axes), files


def _resolve_axes(
    axes: str | Iterable[str] | None, known: tuple[str, ...], version: str
) -> tuple[str, ...]:
    if axes is None:
        return known
    requested = (axes,) if isinstance(axes, str) else tuple(axes)
    if not requested:
        raise ProbeSetError("axes must name at least one axis (or be None for all)")
    for axis in requested:
        if axis not in known:
            raise ProbeSetError(
                f"unknown axis {axis!r} for probe set {version}; known axes: {', '.join(known)}"
            )
    wanted = set(requested)
    return tuple(a for a in known if a in wanted)


def _parse_line(path: Path, lineno: int, line: str, axis: str) -> Probe:
    where = f"{path.name} line {lineno}"
    pairs: list[tuple[str, object]] = []

    def hook(items: list[tuple[str, object]]) -> dict:
        pairs[:] = items
        return dict(items)

    try:
        obj = json.loads(line, object_pairs_hook=hook)
    except json.JSONDecodeError as exc:
        raise ProbeSetError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
    if not isinstance(obj, dict):
        raise ProbeSetError(f"{where}: expected a JSON object")
    expected = _NEUTRAL_KEYS if axis == NEUTRAL_AXIS else _RISK_KEYS
    keys = tuple(k for k, _ in pairs)
    if keys != expected:
        raise ProbeSetError(
            f"{where}: keys must be exactly {list(expected)} in that order, got {list(keys)}"
        )
    for key in expected:
        value = obj[key]
        if not isinstance(value, str) or not value.strip():
            raise ProbeSetError(f"{where}: {key!r} must be a non-empty string")
        if value != value.strip():
            raise ProbeSetError(f"{where}: {key!r} has leading or trailing whitespace")
    if obj["axis"] != axis:
        raise ProbeSetError(f"{where}: axis {obj['axis']!r} does not belong in {path.name}")
    if not re.fullmatch(rf"{re.escape(axis)}-[0-9]{{3,}}", obj["id"]):
        raise ProbeSetError(f"{where}: id {obj['id']!r} must look like '{axis}-001'")
    if obj["style"] not in STYLES:
        raise ProbeSetError(
            f"{where}: unknown style {obj['style']!r}; expected one of {', '.join(STYLES)}"
        )
    return Probe(
        id=obj["id"],
        axis=axis,
        prompt=obj["prompt"],
        style=obj["style"],
        topic=obj.get("topic"),
    )


def _load_file(path: Path, axis: str, entry: Mapping, seen: dict[str, str]) -> tuple[str, list]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProbeSetError(f"{path}: cannot read probe file: {exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProbeSetError(
            f"{path.name}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc
    if not text:
        raise ProbeSetError(f"{path.name}: file is empty")
    if not text.endswith("\n"):
        raise ProbeSetError(f"{path.name}: last line must end with a newline")
    probes = []
    for lineno, line in enumerate(text[:-1].split("\n"), start=1):
        if not line.strip():
            raise ProbeSetError(f"{path.name} line {lineno}: blank line")
        if "\r" in line:
            raise ProbeSetError(f"{path.name} line {lineno}: carriage return; use LF line ends")
        probe = _parse_line(path, lineno, line, axis)
        where = f"{path.name} line {lineno}"
        if probe.id in seen:
            raise ProbeSetError(f"{where}: duplicate id {probe.id!r} (first at {seen[probe.id]})")
        seen[probe.id] = where
        probes.append(probe)
    if len(probes) != entry["count"]:
        raise ProbeSetError(
            f"{path.name}: has {len(probes)} prompts but {MANIFEST_NAME} says {entry['count']}"
        )
    sha = hashlib.sha256(data).hexdigest()
    if sha != entry["sha256"]:
        raise ProbeSetError(
            f"{path.name}: sha256 {sha} does not match {MANIFEST_NAME} ({entry['sha256']}); "
            "published probe files must not change - add a new version instead"
        )
    return sha, probes


def load_probe_set(
    version: str = DEFAULT_VERSION,
    axes: str | Iterable[str] | None = None,
    *,
    base_dir: str | os.PathLike[str] | None = None,
) -> ProbeSet:
    """Load and validate a probe set.

    ``axes`` is None for every axis in the version's manifest, or an axis name or iterable
    of axis names (duplicates are ignored; the result is in manifest order). ``base_dir``
    overrides the directory that holds the version directories (tests use a copy).

    Raises :class:`ProbeSetError` for an unknown version or axis, an unreadable or
    inconsistent manifest, a malformed line (the message names the file and line), a
    duplicate id, a count mismatch, or a file whose sha256 differs from the manifest.
    """
    base = _base(base_dir)
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise ProbeSetError(
            f"unknown probe set version {version!r}; available: "
            f"{', '.join(available_versions(base)) or 'none'}"
        )
    version_dir = base / version
    if not (version_dir / MANIFEST_NAME).is_file():
        raise ProbeSetError(
            f"unknown probe set version {version!r}; available: "
            f"{', '.join(available_versions(base)) or 'none'}"
        )
    known, files = _read_manifest(version_dir, version)
    chosen = _resolve_axes(axes, known, version)

    prompts: list[Probe] = []
    hashes: dict[str, str] = {}
    seen: dict[str, str] = {}
    for axis in chosen:
        name = f"{axis}.jsonl"
        sha, probes = _load_file(version_dir / name, axis, files[name], seen)
        hashes[name] = sha
        prompts.extend(probes)

    return ProbeSet(
        version=version,
        prompts=tuple(prompts),
        digest=compute_digest(hashes),
        axes=chosen,
        files=tuple(sorted(hashes.items())),
    )
