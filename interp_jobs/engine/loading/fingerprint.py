"""Digests of model and lens files on disk, in a form an auditor can recompute with sha256sum,
and the check that the files a worker is about to read are still the registered ones.

A group digest (weights, tokenizer, config, a lens directory) is the sha256 of the group's
lines in `sha256sum` format ("<hex>  <relative path>\\n"), sorted by path. A GGUF file carries
its tokenizer and config inside, so all three digests of a GGUF model are the file's own sha256.

Listing refuses symbolic links that lead outside the allowed roots when the caller names them
(the engine knows no settings; the worker passes ASSAY_MODEL_ROOTS or ASSAY_LENS_ROOTS): the
API only lets a submitter register paths inside the roots, and a link inside a registered
directory must not carry the worker's reads (and the digests it reports) anywhere else.
"""

import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from interp_jobs.engine.errors import EngineError, PermanentEngineError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
        "vocab.txt",
        "added_tokens.json",
        "chat_template.jinja",
    }
)
CONFIG_FILES = frozenset({"config.json", "generation_config.json"})
CHUNK = 1 << 20

Roots = Sequence[Path | str] | None  # None: no containment rule (library and test use)


@dataclass(frozen=True)
class ModelFingerprint:
    files: dict[str, str]  # relative path -> sha256
    weights_digest: str
    tokenizer_digest: str
    config_digest: str


# Markers of a download or copy still in progress (the Hugging Face hub's convention).
IN_PROGRESS_SUFFIXES = (".incomplete", ".lock", ".partial")


def _refuse_if_being_written(folder: Path) -> None:
    busy = sorted(
        item.name for item in folder.rglob("*") if item.name.endswith(IN_PROGRESS_SUFFIXES)
    )
    if busy:
        # Transient: the copy will finish, so the worker retries with backoff.
        raise EngineError(
            f"model files under {folder} are still being written "
            f"({', '.join(busy[:5])}); retrying later"
        )


def _refuse_escaping_link(link: Path, roots: Roots) -> None:
    if roots is None or not link.is_symlink():
        return
    target = link.resolve()
    resolved = [Path(root).resolve() for root in roots]
    if not any(target.is_relative_to(root) for root in resolved):
        raise PermanentEngineError(
            f"{link} is a symbolic link to {target}, which is outside the allowed roots "
            f"({', '.join(str(root) for root in resolved)}); a link must not lead the worker's "
            "reads out of the store. Replace the link with the file itself (or a link inside "
            "the roots) and register the directory again."
        )


def _walk(
    directory: Path, top: Path, roots: Roots, hidden_dirs: bool, ancestors: frozenset[Path]
) -> dict[str, Path]:
    """Files below ``directory`` by path relative to ``top``; linked directories are followed
    (a loader follows them too), after the link is checked against the roots."""
    files: dict[str, Path] = {}
    for item in sorted(directory.iterdir()):
        _refuse_escaping_link(item, roots)
        hidden = item.name.startswith(".")
        if item.is_dir():
            if hidden and not hidden_dirs:
                continue
            real = item.resolve()
            if real in ancestors:
                raise PermanentEngineError(
                    f"{item} is a symbolic link to {real}, one of its own parents (a loop); "
                    "remove the link and register the directory again."
                )
            files.update(_walk(item, top, roots, hidden_dirs, ancestors | {real}))
        elif item.is_file() and not hidden:
            files[item.relative_to(top).as_posix()] = item
    return files


def model_files(path: Path, fmt: str, roots: Roots = None) -> dict[str, Path]:
    """Every file that makes up the model, by relative path (hidden files and directories
    excluded); with ``roots``, a symbolic link leading outside them is refused."""
    if fmt in ("gguf", "hf_dir") and path.parent.is_dir():
        _refuse_if_being_written(path if fmt == "hf_dir" and path.is_dir() else path.parent)
    _refuse_escaping_link(path, roots)
    if fmt == "gguf":
        if not path.is_file():
            raise PermanentEngineError(f"GGUF model file {path} does not exist or is not a file")
        return {path.name: path}
    if fmt != "hf_dir":
        raise PermanentEngineError(f"unknown model format {fmt!r}; use 'hf_dir' or 'gguf'")
    if not path.is_dir():
        raise PermanentEngineError(f"model directory {path} does not exist or is not a directory")
    files = _walk(path, path, roots, hidden_dirs=False, ancestors=frozenset({path.resolve()}))
    if not any(name.endswith(WEIGHT_SUFFIXES) for name in files):
        raise PermanentEngineError(
            f"model directory {path} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})"
        )
    return files


def lens_files(path: Path, roots: Roots = None) -> dict[str, Path]:
    """Every file of a lens directory, by relative path. Only hidden *files* are left out
    (not hidden directories): that is how lens digests have always been taken."""
    _refuse_escaping_link(path, roots)
    if not path.is_dir():
        raise PermanentEngineError(f"lens directory {path} does not exist or is not a directory")
    return _walk(path, path, roots, hidden_dirs=True, ancestors=frozenset({path.resolve()}))


def file_sha256(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return digest.hexdigest()


def group_digest(files: Mapping[str, str]) -> str:
    lines = "".join(f"{files[name]}  {name}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest() if files else ""


def hash_files(
    files: dict[str, Path], progress: Callable[[float], None] | None = None
) -> dict[str, str]:
    total = sum(item.stat().st_size for item in files.values()) or 1
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress:
            progress(done / total)

    return {name: file_sha256(item, advance) for name, item in files.items()}


def fingerprint_model(
    path: Path, fmt: str, progress: Callable[[float], None] | None = None, roots: Roots = None
) -> ModelFingerprint:
    digests = hash_files(model_files(Path(path), fmt, roots), progress)
    if fmt == "gguf":
        (only,) = digests.values()
        return ModelFingerprint(digests, only, only, only)
    return ModelFingerprint(
        files=digests,
        weights_digest=group_digest(_select(digests, _is_weights)),
        tokenizer_digest=group_digest(_select(digests, lambda n: _base(n) in TOKENIZER_FILES)),
        config_digest=group_digest(_select(digests, lambda n: _base(n) in CONFIG_FILES)),
    )


def _is_weights(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES)


def _base(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _select(digests: dict[str, str], keep: Callable[[str], bool]) -> dict[str, str]:
    return {name: digest for name, digest in digests.items() if keep(name)}


# --- Is this file still the one that was hashed? ------------------------------------------
#
# A check run must read the registered bytes, and re-reading gigabytes of weights before every
# check would cost more than many checks. So the worker remembers, per path, the sha256 it
# measured together with the file's stat signature (device, inode, size, mtime_ns, ctime_ns),
# and hashes again whenever any of them differs. Why that is enough:
# - every write through the file system moves mtime and ctime; replacing the file (copy and
#   rename, a new file) changes the inode; truncating or growing it changes the size;
# - mtime can be set back with utime(), but that sets ctime to the current time, and ctime
#   cannot be chosen by an ordinary user: only root can rewrite a file and keep its ctime (by
#   moving the system clock, or writing the raw block device). Root on the worker's host can
#   equally rewrite the database or the worker, so this rule does not claim to stop root;
# - timestamps are coarse (a kernel tick on ext4 and xfs, up to 2 s elsewhere), so a write in
#   the same tick as our hash would leave the signature as it was. A digest is therefore only
#   remembered when the file's mtime and ctime are older than RACY_WINDOW_NS at hashing time
#   (git's "racy clean" rule): a file changed in the last seconds is hashed again next time.
# Not caught: root, and file systems that do not keep these timestamps honestly (some FUSE or
# network mounts let a client or a server with its own clock set them). The weights_fingerprint
# check kind never uses this cache: it re-reads every byte.
Signature = tuple[int, int, int, int, int]
RACY_WINDOW_NS = 2_000_000_000
MAX_REMEMBERED = 100_000


def signature(path: Path) -> Signature:
    st = os.stat(path)  # follows a link: the bytes read are the target's
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class DigestCache:
    """sha256 by path, re-measured whenever the file's stat signature changes."""

    def __init__(
        self,
        *,
        clock: Callable[[], int] = time.time_ns,
        racy_window_ns: int = RACY_WINDOW_NS,
    ) -> None:
        self._clock = clock
        self._racy_window_ns = racy_window_ns
        self._known: dict[str, tuple[Signature, str]] = {}
        self.stats = {"hits": 0, "hashed": 0}

    def sha256(self, path: Path) -> tuple[str, Signature]:
        """The file's sha256 and the signature it was measured under."""
        before = signature(path)
        known = self._known.get(str(path))
        if known is not None and known[0] == before:
            self.stats["hits"] += 1
            return known[1], before
        digest = file_sha256(path)
        self.stats["hashed"] += 1
        if signature(path) != before:
            raise EngineError(f"{path} changed while it was being hashed; retrying later")
        if self._settled(before):
            if len(self._known) >= MAX_REMEMBERED:
                self._known.clear()
            self._known[str(path)] = (before, digest)
        return digest, before

    def _settled(self, sig: Signature) -> bool:
        newest = max(sig[3], sig[4])
        return self._clock() - newest >= self._racy_window_ns

    def clear(self) -> None:
        self._known.clear()


digest_cache = DigestCache()  # one per worker process

Snapshot = dict[str, Signature]  # path -> the signature its verified digest was measured under


def measure(
    files: Mapping[str, Path], cache: DigestCache | None = None
) -> tuple[dict[str, str], Snapshot]:
    """(relative path -> sha256, the snapshot those digests belong to), through the cache."""
    cache = cache or digest_cache
    digests: dict[str, str] = {}
    snapshot: Snapshot = {}
    for name, item in files.items():
        digests[name], snapshot[str(item)] = cache.sha256(item)
    return digests, snapshot


def changed_since(snapshot: Snapshot) -> list[str]:
    """Paths whose signature moved (or which vanished) since they were verified."""
    changed = []
    for path, sig in snapshot.items():
        try:
            now = signature(Path(path))
        except OSError:
            now = None
        if now != sig:
            changed.append(path)
    return changed


def file_mismatches(recorded: Mapping[str, str], measured: Mapping[str, str]) -> list[str]:
    """'name (changed|missing|unexpected)' for every file that differs, sorted by name."""
    problems = []
    for name in sorted(set(recorded) | set(measured)):
        if name not in recorded:
            problems.append(f"{name} (unexpected)")
        elif name not in measured:
            problems.append(f"{name} (missing)")
        elif recorded[name] != measured[name]:
            problems.append(f"{name} (changed)")
    return problems


def verify_model_files(
    path: Path, fmt: str, recorded: Mapping[str, str], *, roots: Roots = None, what: str = ""
) -> Snapshot:
    """Raise PermanentEngineError unless the model's files are exactly the recorded ones."""
    what = what or f"model at {path}"
    if not recorded:
        raise PermanentEngineError(
            f"{what} has no recorded file digests (its digest job has not finished, or "
            "failed), so its files cannot be bound to a registration; wait for the digests "
            "or register the model version again."
        )
    digests, snapshot = measure(model_files(Path(path), fmt, roots))
    problems = file_mismatches(recorded, digests)
    if problems:
        raise PermanentEngineError(
            f"the files of {what} ({path}) are not the ones recorded at registration: "
            f"{', '.join(problems)}. Evidence must describe the registered weights, so this "
            "run stops without any. If the new files are intended, register them as a new "
            "model version; otherwise restore the registered files and find out who changed "
            "them."
        )
    return snapshot


# Lenses record one digest over all their files. A group's per-file digests are remembered
# when they are measured (content-addressed, so they cannot go stale), which lets a mismatch
# name the file that changed whenever this process has seen the registered lens.
_known_groups: OrderedDict[str, dict[str, str]] = OrderedDict()
MAX_GROUPS = 256


def remember_group(digests: Mapping[str, str]) -> str:
    digest = group_digest(digests)
    _known_groups[digest] = dict(digests)
    _known_groups.move_to_end(digest)
    while len(_known_groups) > MAX_GROUPS:
        _known_groups.popitem(last=False)
    return digest


def verify_lens_files(path: Path, digest: str, *, roots: Roots = None, what: str = "") -> Snapshot:
    """Raise PermanentEngineError unless the lens directory hashes to its recorded digest."""
    what = what or f"lens at {path}"
    if not digest:
        raise PermanentEngineError(
            f"{what} has no recorded digest (it has not been validated); validate the lens "
            "before a check reads it."
        )
    digests, snapshot = measure(lens_files(Path(path), roots))
    if remember_group(digests) == digest:
        return snapshot
    raise PermanentEngineError(
        f"the files of {what} ({path}) are not the ones recorded at registration: "
        f"{_lens_differences(digest, digests)}. Evidence must describe the registered lens, "
        "so this run stops without any. If the new files are intended, register them as a "
        "new lens; otherwise restore the registered files and find out who changed them."
    )


def _lens_differences(digest: str, measured: Mapping[str, str]) -> str:
    registered = _known_groups.get(digest)
    if registered is not None:
        return ", ".join(file_mismatches(registered, measured))
    return (
        f"the lens's files ({', '.join(sorted(measured)) or 'none'}) no longer hash to its "
        f"registered digest {digest[:16]}…; the lens record keeps one digest for the whole "
        "directory, so which file changed cannot be told from it"
    )
