"""Versioned probe prompt sets: risk requests per axis plus controls.

Layout (relative to the probes base directory, by default this package's directory)::

    v1/MANIFEST.json      version, axes, per file {axis, count, sha256}, licence, description
    v1/weapons.jsonl      one canonical JSON object per line:
    v1/cyber.jsonl          {"id": "cyber-001", "axis": "cyber", "prompt": "...", "style": "..."}
    v1/fraud.jsonl
    v1/self_harm.jsonl
    v1/neutral.jsonl        neutral lines add a fifth key: ..., "style": "...", "topic": "..."}

    v2/MANIFEST.json      as v1, plus "control_axes", "splits" and per-file split counts
    v2/<axis>.jsonl       as v1, plus a last key "split" on every line:
                            {"id": ..., "axis": ..., "prompt": ..., "style": ..., "split": ...}
    v2/neutral.jsonl        control lines (every axis in "control_axes") carry "topic":
    v2/over_refusal.jsonl   {..., "style": "...", "topic": "...", "split": "..."}

Manifest rules (all optional keys default to v1's behaviour):

* ``control_axes`` lists the axes that are controls rather than risk requests; their lines
  carry ``topic``. Without it the control axes are just ``neutral`` (if present), as in v1.
  ``neutral`` is always a control axis when a version has it.
* ``styles`` restricts the styles a version's lines may use (a subset of :data:`STYLES`).
* ``splits`` (a subset of :data:`SPLITS`) declares that every line ends with a ``split`` key
  naming one of them, and every file entry then holds ``splits``: per-split prompt counts that
  add up to ``count``. A version without ``splits`` (v1) is unsplit: asking it for a split is
  an error.

A published version directory is immutable: every file's sha256 is pinned in its manifest and
checked on every load, so an edited file cannot silently be used. Changing prompts means adding
a new version directory (``v3``) with its own manifest.

Pure Python (standard library only): no Django, no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ALL_AXES",
    "DEFAULT_VERSION",
    "MANIFEST_NAME",
    "NEUTRAL_AXIS",
    "OVER_REFUSAL_AXIS",
    "PROBES_DIR",
    "RISK_AXES",
    "SPLITS",
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
# v1's axes. v2 adds OVER_REFUSAL_AXIS; a version's own axes are in ``ProbeSet.axes``.
ALL_AXES: tuple[str, ...] = (*RISK_AXES, NEUTRAL_AXIS)
OVER_REFUSAL_AXIS = "over_refusal"
# Every style any version may use; v1 uses the first six (its manifest lists them).
STYLES: tuple[str, ...] = (
    "direct",
    "indirect",
    "roleplay",
    "fiction",
    "stepwise",
    "other",
    "misspelled",
    "non_english",
)
# Fixed splits (v2 on): discovery finds features, confirmation checks them, audit is held out.
SPLITS: tuple[str, ...] = ("discovery", "confirmation", "audit")
DEFAULT_VERSION = "v1"
MANIFEST_NAME = "MANIFEST.json"
PROBES_DIR = Path(__file__).resolve().parent

_VERSION_RE = re.compile(r"v[1-9][0-9]*")
_AXIS_RE = re.compile(r"[a-z][a-z0-9_]*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_RISK_KEYS = ("id", "axis", "prompt", "style")
_CONTROL_KEYS = (*_RISK_KEYS, "topic")


class ProbeSetError(ValueError):
    """A probe set is unknown, malformed, or does not match its manifest."""


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe prompt. ``topic`` is set for control axes (neutral, over_refusal) only;
    ``split`` is set for versions that have splits (v2 on) only."""

    id: str
    axis: str
    prompt: str
    style: str
    topic: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class ProbeSet:
    """The prompts of one version, restricted to some axes and optionally some splits.

    ``prompts`` are ordered by axis (in the manifest's axis order, whatever order the caller
    asked for) and then by line. ``files`` holds ``(file name, sha256)`` of each included file,
    sorted by name; ``digest`` is :func:`compute_digest` over them and the split selection, and
    is what provenance records should store. ``splits`` is the split selection in the
    manifest's order, or ``()`` for every prompt (an unsplit version, ``split=None``, or a
    selection naming every split). ``control_axes`` are the included axes that are controls.
    """

    version: str
    prompts: tuple[Probe, ...]
    digest: str
    axes: tuple[str, ...]
    files: tuple[tuple[str, str], ...]
    splits: tuple[str, ...] = ()
    control_axes: tuple[str, ...] = (NEUTRAL_AXIS,)

    def for_axis(self, axis: str) -> tuple[Probe, ...]:
        """The prompts of one included axis; ``ProbeSetError`` if it is not included."""
        if axis not in self.axes:
            raise ProbeSetError(
                f"axis {axis!r} is not in this probe set (included: {', '.join(self.axes)})"
            )
        return tuple(p for p in self.prompts if p.axis == axis)

    @property
    def risk_axes(self) -> tuple[str, ...]:
        """The included axes that are not controls."""
        return tuple(a for a in self.axes if a not in self.control_axes)

    @property
    def risk_prompts(self) -> tuple[Probe, ...]:
        """The prompts of every included risk axis (controls excluded)."""
        return tuple(p for p in self.prompts if p.axis not in self.control_axes)

    @property
    def neutral_prompts(self) -> tuple[Probe, ...]:
        return tuple(p for p in self.prompts if p.axis == NEUTRAL_AXIS)

    @property
    def control_prompts(self) -> tuple[Probe, ...]:
        """The prompts of every included control axis (neutral, over_refusal)."""
        return tuple(p for p in self.prompts if p.axis in self.control_axes)


def compute_digest(file_hashes: Mapping[str, str], *, splits: Iterable[str] = ()) -> str:
    """Digest of a probe set from its files' sha256s and its split selection.

    Exact rule: sort the included files by file name (plain string order, e.g.
    ``cyber.jsonl`` < ``fraud.jsonl`` < ``neutral.jsonl`` < ``self_harm.jsonl`` <
    ``weapons.jsonl``); for each write the line ``<file name>:<sha256 lowercase hex>\\n``.
    If ``splits`` is non-empty, then write one more line, ``splits=<names>\\n``, where
    ``<names>`` are the distinct split names in plain string order joined by ``,``. The digest
    is the lowercase hex sha256 of the ASCII bytes of those lines concatenated. The sha256 of a
    file is taken over its exact bytes on disk (the whole file, whatever the split selection).

    For example, a set holding only ``weapons.jsonl`` whose bytes hash to ``H`` has digest
    ``sha256(b"weapons.jsonl:" + H.encode() + b"\\n").hexdigest()``; its discovery and audit
    prompts only have digest
    ``sha256(b"weapons.jsonl:" + H.encode() + b"\\nsplits=audit,discovery\\n").hexdigest()``.
    The split line has no ``:``, so it can never be mistaken for a file line.

    The digest therefore depends only on which files are included, their bytes, and which
    splits were selected: not on the version label, the manifest's prose, or the order in
    which axes or splits were requested. With no split selection (``splits=()``, what
    :func:`load_probe_set` uses for ``split=None`` or for every split) the rule is v1's, so
    digests recorded before splits existed still verify.
    """
    if not file_hashes:
        raise ProbeSetError("cannot compute the digest of an empty probe set")
    requested = (splits,) if isinstance(splits, str) else tuple(splits)
    for split in requested:
        if not isinstance(split, str) or not _AXIS_RE.fullmatch(split):
            raise ProbeSetError(f"bad split name for digest: {split!r}")
    names = sorted(set(requested))
    h = hashlib.sha256()
    for name in sorted(file_hashes):
        sha = file_hashes[name]
        if not name or not _SHA256_RE.fullmatch(sha) or ":" in name or "\n" in name:
            raise ProbeSetError(f"bad file entry for digest: {name!r}: {sha!r}")
        h.update(f"{name}:{sha}\n".encode("ascii"))
    if names:
        h.update(f"splits={','.join(names)}\n".encode("ascii"))
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


@dataclass(frozen=True)
class _Manifest:
    axes: tuple[str, ...]
    files: dict
    control_axes: tuple[str, ...]
    styles: tuple[str, ...]
    splits: tuple[str, ...]  # () for an unsplit version


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _name_list(manifest: dict, key: str, path: Path, allowed: Iterable[str]) -> tuple[str, ...]:
    """An optional manifest list of distinct names, each one of ``allowed``."""
    value = manifest[key]
    allowed = tuple(allowed)
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v in allowed for v in value)
        or len(set(value)) != len(value)
    ):
        raise ProbeSetError(
            f"{path}: {key!r} must be a non-empty list of distinct names from {', '.join(allowed)}"
        )
    return tuple(value)


def _read_manifest(version_dir: Path, version: str) -> _Manifest:
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
    if "control_axes" in manifest:
        controls = _name_list(manifest, "control_axes", path, axes)
        if NEUTRAL_AXIS in axes and NEUTRAL_AXIS not in controls:
            raise ProbeSetError(f"{path}: 'control_axes' must include {NEUTRAL_AXIS!r}")
    else:
        controls = (NEUTRAL_AXIS,) if NEUTRAL_AXIS in axes else ()
    styles = _name_list(manifest, "styles", path, STYLES) if "styles" in manifest else STYLES
    splits = _name_list(manifest, "splits", path, SPLITS) if "splits" in manifest else ()

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
        if splits:
            counts = entry.get("splits")
            if (
                not isinstance(counts, dict)
                or list(counts) != list(splits)
                or not all(_is_count(n) for n in counts.values())
                or sum(counts.values()) != entry["count"]
            ):
                raise ProbeSetError(
                    f"{path}: files[{name!r}]['splits'] must map each split "
                    f"({', '.join(splits)}, in that order) to a prompt count, "
                    "adding up to 'count'"
                )
    return _Manifest(tuple(axes), files, controls, styles, splits)


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


def _resolve_splits(
    split: str | Iterable[str] | None, known: tuple[str, ...], version: str
) -> tuple[str, ...]:
    """The split selection in manifest order; ``()`` means every prompt."""
    if split is None:
        return ()
    requested = (split,) if isinstance(split, str) else tuple(split)
    if not known:
        raise ProbeSetError(
            f"probe set {version} has no splits (requested {', '.join(map(repr, requested))}); "
            "load it with split=None, or use a version with splits (v2 or later)"
        )
    if not requested:
        raise ProbeSetError("split must name at least one split (or be None for all)")
    for name in requested:
        if name not in known:
            raise ProbeSetError(
                f"unknown split {name!r} for probe set {version}; known splits: {', '.join(known)}"
            )
    wanted = set(requested)
    chosen = tuple(s for s in known if s in wanted)
    return () if chosen == known else chosen


def _parse_line(path: Path, lineno: int, line: str, axis: str, manifest: _Manifest) -> Probe:
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
    expected = _CONTROL_KEYS if axis in manifest.control_axes else _RISK_KEYS
    if manifest.splits:
        expected = (*expected, "split")
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
    if obj["style"] not in manifest.styles:
        raise ProbeSetError(
            f"{where}: unknown style {obj['style']!r}; expected one of {', '.join(manifest.styles)}"
        )
    if manifest.splits and obj["split"] not in manifest.splits:
        raise ProbeSetError(
            f"{where}: unknown split {obj['split']!r}; expected one of {', '.join(manifest.splits)}"
        )
    return Probe(
        id=obj["id"],
        axis=axis,
        prompt=obj["prompt"],
        style=obj["style"],
        topic=obj.get("topic"),
        split=obj.get("split"),
    )


def _load_file(
    path: Path, axis: str, manifest: _Manifest, seen: dict[str, str]
) -> tuple[str, list]:
    entry = manifest.files[path.name]
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
        probe = _parse_line(path, lineno, line, axis, manifest)
        where = f"{path.name} line {lineno}"
        if probe.id in seen:
            raise ProbeSetError(f"{where}: duplicate id {probe.id!r} (first at {seen[probe.id]})")
        seen[probe.id] = where
        probes.append(probe)
    if len(probes) != entry["count"]:
        raise ProbeSetError(
            f"{path.name}: has {len(probes)} prompts but {MANIFEST_NAME} says {entry['count']}"
        )
    if manifest.splits:
        counts = Counter(p.split for p in probes)
        for split in manifest.splits:
            if counts[split] != entry["splits"][split]:
                raise ProbeSetError(
                    f"{path.name}: has {counts[split]} prompts in split {split!r} but "
                    f"{MANIFEST_NAME} says {entry['splits'][split]}"
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
    split: str | Iterable[str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> ProbeSet:
    """Load and validate a probe set.

    ``axes`` is None for every axis in the version's manifest, or an axis name or iterable
    of axis names (duplicates are ignored; the result is in manifest order). ``split`` is None
    for every prompt, or a split name or iterable of split names (``"discovery"``,
    ``"confirmation"``, ``"audit"``; duplicates ignored, result in manifest order) to keep only
    those prompts; it changes the digest (see :func:`compute_digest`), except that naming every
    split is the same as None. ``base_dir`` overrides the directory that holds the version
    directories (tests use a copy).

    Every included file is validated and hashed in full, whatever the split selection.

    Raises :class:`ProbeSetError` for an unknown version, axis or split, a split requested from
    an unsplit version (v1), an unreadable or inconsistent manifest, a malformed line (the
    message names the file and line), a duplicate id, a count mismatch (overall or per split),
    or a file whose sha256 differs from the manifest.
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
    manifest = _read_manifest(version_dir, version)
    chosen = _resolve_axes(axes, manifest.axes, version)
    splits = _resolve_splits(split, manifest.splits, version)

    prompts: list[Probe] = []
    hashes: dict[str, str] = {}
    seen: dict[str, str] = {}
    for axis in chosen:
        name = f"{axis}.jsonl"
        sha, probes = _load_file(version_dir / name, axis, manifest, seen)
        hashes[name] = sha
        prompts.extend(p for p in probes if not splits or p.split in splits)

    return ProbeSet(
        version=version,
        prompts=tuple(prompts),
        digest=compute_digest(hashes, splits=splits),
        axes=chosen,
        files=tuple(sorted(hashes.items())),
        splits=splits,
        control_axes=tuple(a for a in chosen if a in manifest.control_axes),
    )
