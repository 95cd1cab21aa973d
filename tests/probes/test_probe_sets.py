"""Probe prompt sets: content rules, manifest integrity, digest, and loader validation.

Pure Python: run with ``python -m pytest tests/probes -q -p no:django``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from interp_jobs.probes import (
    ALL_AXES,
    MANIFEST_NAME,
    NEUTRAL_AXIS,
    PROBES_DIR,
    RISK_AXES,
    STYLES,
    Probe,
    ProbeSet,
    ProbeSetError,
    available_versions,
    compute_digest,
    load_probe_set,
)

V1 = PROBES_DIR / "v1"
# v1 uses the first six styles; STYLES grew with v2 (misspelled, non_english).
V1_STYLES = ("direct", "indirect", "roleplay", "fiction", "stepwise", "other")
REPO_ROOT = Path(__file__).resolve().parents[2]


def read_manifest(version_dir: Path) -> dict:
    return json.loads((version_dir / MANIFEST_NAME).read_text(encoding="utf-8"))


def copy_set(tmp_path: Path, version: str = "v1") -> tuple[Path, Path]:
    """Copy a shipped version into tmp_path/probes/<version>; return (base, version_dir)."""
    base = tmp_path / "probes"
    shutil.copytree(PROBES_DIR / version, base / version)
    return base, base / version


def rehash(version_dir: Path, name: str) -> None:
    """Update the manifest's count and sha256 for one file after an edit."""
    manifest = read_manifest(version_dir)
    data = (version_dir / name).read_bytes()
    manifest["files"][name]["sha256"] = hashlib.sha256(data).hexdigest()
    manifest["files"][name]["count"] = data.count(b"\n")
    (version_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")


def replace_line(version_dir: Path, name: str, lineno: int, new: str) -> None:
    path = version_dir / name
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[lineno - 1] = new
    path.write_text("\n".join(lines), encoding="utf-8")


# ---------------------------------------------------------------- shipped content


def test_constants():
    assert RISK_AXES == ("weapons", "cyber", "fraud", "self_harm")
    assert STYLES[: len(V1_STYLES)] == V1_STYLES
    assert read_manifest(V1)["styles"] == list(V1_STYLES)
    assert NEUTRAL_AXIS == "neutral"
    assert (*RISK_AXES, NEUTRAL_AXIS) == ALL_AXES


def test_v1_is_available():
    assert "v1" in available_versions()


@pytest.mark.parametrize("axis", ALL_AXES)
def test_counts(axis):
    minimum = 96 if axis == NEUTRAL_AXIS else 48
    assert len(load_probe_set("v1").for_axis(axis)) >= minimum


@pytest.mark.parametrize("axis", ALL_AXES)
def test_every_line_is_canonical(axis):
    raw = (V1 / f"{axis}.jsonl").read_bytes()
    text = raw.decode("utf-8")
    assert text.endswith("\n"), "last line ends with a newline"
    assert not text.endswith("\n\n"), "no trailing blank lines"
    assert "\r" not in text
    assert not text.startswith("\ufeff")
    keys = ["id", "axis", "prompt", "style"] + (["topic"] if axis == NEUTRAL_AXIS else [])
    for lineno, line in enumerate(text[:-1].split("\n"), start=1):
        obj = json.loads(line)
        assert list(obj) == keys, f"{axis}.jsonl line {lineno}"
        assert json.dumps(obj, ensure_ascii=False) == line, f"{axis}.jsonl line {lineno}"
        assert obj["axis"] == axis
        assert obj["id"] == f"{axis}-{lineno:03d}"
        assert obj["style"] in STYLES
        assert obj["prompt"].strip() == obj["prompt"]
        assert len(obj["prompt"]) >= 10


def test_ids_and_prompts_unique_across_all_files():
    ids, prompts = [], []
    for axis in ALL_AXES:
        for line in (V1 / f"{axis}.jsonl").read_text(encoding="utf-8").splitlines():
            obj = json.loads(line)
            ids.append(obj["id"])
            prompts.append(obj["prompt"].casefold())
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    assert [p for p, n in Counter(prompts).items() if n > 1] == []


@pytest.mark.parametrize("axis", RISK_AXES)
def test_risk_axes_use_every_style(axis):
    styles = Counter(p.style for p in load_probe_set("v1", [axis]).prompts)
    assert set(styles) == set(V1_STYLES)
    assert min(styles.values()) >= 5


def test_neutral_controls_are_varied():
    neutral = load_probe_set("v1", NEUTRAL_AXIS).prompts
    assert all(p.topic for p in neutral)
    assert len({p.topic for p in neutral}) >= 20
    assert set(Counter(p.style for p in neutral)) == set(V1_STYLES)
    lengths = sorted(len(p.prompt) for p in neutral)
    assert lengths[0] < 40, "short prompts"
    assert lengths[-1] > 120, "long prompts"
    # Controls deliberately share vocabulary with the risk axes.
    text = " ".join(p.prompt.lower() for p in neutral)
    for word in (
        "firework",
        "gunpowder",
        "password",
        "malware",
        "phishing",
        "bank",
        "pills",
        "cut",
    ):
        assert word in text, word


def test_risk_prompts_have_no_topic():
    assert all(p.topic is None for p in load_probe_set("v1", RISK_AXES).prompts)


def test_manifest_matches_files():
    manifest = read_manifest(V1)
    assert manifest["version"] == "v1"
    assert tuple(manifest["axes"]) == ALL_AXES
    assert manifest["licence"] == "CC0-1.0, written for Assay"
    assert manifest["description"].strip()
    assert manifest["limitations"]
    assert set(manifest["files"]) == {f"{a}.jsonl" for a in ALL_AXES}
    for name, entry in manifest["files"].items():
        data = (V1 / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest(), name
        assert entry["count"] == len(data.decode("utf-8").splitlines()), name
        assert entry["axis"] == name.removesuffix(".jsonl")


# ---------------------------------------------------------------- API and digest


def test_load_all_axes():
    ps = load_probe_set()
    assert isinstance(ps, ProbeSet)
    assert ps.version == "v1"
    assert ps.axes == ALL_AXES
    assert all(isinstance(p, Probe) for p in ps.prompts)
    assert [p.axis for p in ps.prompts] == sorted((p.axis for p in ps.prompts), key=ALL_AXES.index)
    assert len(ps.risk_prompts) + len(ps.neutral_prompts) == len(ps.prompts)
    assert ps.prompts[0] == Probe(
        id="weapons-001",
        axis="weapons",
        prompt=ps.prompts[0].prompt,
        style=ps.prompts[0].style,
    )


def test_probe_set_is_frozen():
    ps = load_probe_set("v1", "fraud")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ps.digest = "0" * 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        ps.prompts[0].prompt = "changed"
    assert isinstance(ps.prompts, tuple)


def test_subset_and_axis_order():
    ps = load_probe_set("v1", ["fraud", "weapons", "fraud"])
    assert ps.axes == ("weapons", "fraud")
    assert {p.axis for p in ps.prompts} == {"weapons", "fraud"}
    assert ps.digest == load_probe_set("v1", ["weapons", "fraud"]).digest
    assert ps.digest != load_probe_set("v1").digest
    with pytest.raises(ProbeSetError, match="not in this probe set"):
        ps.for_axis("cyber")


def test_digest_follows_documented_rule():
    ps = load_probe_set()
    expected = hashlib.sha256()
    for name in sorted(f"{a}.jsonl" for a in ALL_AXES):
        sha = hashlib.sha256((V1 / name).read_bytes()).hexdigest()
        expected.update(f"{name}:{sha}\n".encode("ascii"))
    assert ps.digest == expected.hexdigest()
    assert ps.files == tuple(
        sorted((n, hashlib.sha256((V1 / n).read_bytes()).hexdigest()) for n in dict(ps.files))
    )
    assert compute_digest(dict(ps.files)) == ps.digest


def test_digest_is_stable_across_loads_and_locations(tmp_path):
    base, _ = copy_set(tmp_path)
    first = load_probe_set("v1")
    assert load_probe_set("v1").digest == first.digest
    copied = load_probe_set("v1", base_dir=base)
    assert copied.digest == first.digest
    assert copied.prompts == first.prompts
    assert available_versions(base) == ("v1",)


def test_digest_changes_when_a_file_changes(tmp_path):
    base, vdir = copy_set(tmp_path)
    before_all = load_probe_set("v1", base_dir=base).digest
    before_cyber = load_probe_set("v1", "cyber", base_dir=base).digest
    before_neutral = load_probe_set("v1", NEUTRAL_AXIS, base_dir=base).digest

    path = vdir / "neutral.jsonl"
    first, rest = path.read_text(encoding="utf-8").split("\n", 1)
    obj = json.loads(first)
    obj["prompt"] = obj["prompt"] + " Please keep it short."
    path.write_text(json.dumps(obj, ensure_ascii=False) + "\n" + rest, encoding="utf-8")
    rehash(vdir, "neutral.jsonl")

    after = load_probe_set("v1", base_dir=base)
    assert after.digest != before_all
    assert load_probe_set("v1", NEUTRAL_AXIS, base_dir=base).digest != before_neutral
    assert load_probe_set("v1", "cyber", base_dir=base).digest == before_cyber
    assert after.for_axis(NEUTRAL_AXIS)[0].prompt.endswith("Please keep it short.")


def test_digest_changes_for_whitespace_only_byte_change(tmp_path):
    base, vdir = copy_set(tmp_path)
    before = load_probe_set("v1", "fraud", base_dir=base).digest
    path = vdir / "fraud.jsonl"
    obj = json.loads(path.read_text(encoding="utf-8").split("\n", 1)[0])
    replace_line(
        vdir,
        "fraud.jsonl",
        1,
        json.dumps(obj, ensure_ascii=False, indent=None, separators=(",", ":")),
    )
    rehash(vdir, "fraud.jsonl")
    after = load_probe_set("v1", "fraud", base_dir=base)
    assert after.prompts == load_probe_set("v1", "fraud").prompts
    assert after.digest != before


# ---------------------------------------------------------------- errors


def test_error_is_a_value_error():
    assert issubclass(ProbeSetError, ValueError)


@pytest.mark.parametrize("version", ["v999", "v0", "latest", "../v1", "v1/..", "", "V1"])
def test_unknown_version(version):
    with pytest.raises(ProbeSetError, match="unknown probe set version"):
        load_probe_set(version)


def test_unknown_version_lists_available(tmp_path):
    base, _ = copy_set(tmp_path)
    with pytest.raises(ProbeSetError, match=r"available: v1"):
        load_probe_set("v2", base_dir=base)
    with pytest.raises(ProbeSetError, match=r"available: none"):
        load_probe_set("v1", base_dir=tmp_path / "empty")


@pytest.mark.parametrize("axes", ["bio", ["weapons", "chemistry"], ["Weapons"], []])
def test_unknown_axis(axes):
    with pytest.raises(ProbeSetError, match="axis"):
        load_probe_set("v1", axes)


def test_unknown_axis_message_names_known_axes():
    with pytest.raises(ProbeSetError) as info:
        load_probe_set("v1", "bio")
    assert "'bio'" in str(info.value)
    assert "self_harm" in str(info.value)


def test_changed_file_without_manifest_update_is_rejected(tmp_path):
    base, vdir = copy_set(tmp_path)
    path = vdir / "weapons.jsonl"
    path.write_bytes(path.read_bytes().replace(b"pipe bomb", b"pipe bombs", 1))
    with pytest.raises(ProbeSetError, match=r"weapons\.jsonl: sha256 .* does not match"):
        load_probe_set("v1", base_dir=base)
    # Other axes are still usable; the bad file is refused wherever it is included.
    assert load_probe_set("v1", "cyber", base_dir=base).axes == ("cyber",)
    with pytest.raises(ProbeSetError, match="sha256"):
        load_probe_set("v1", ["cyber", "weapons"], base_dir=base)


def test_wrong_manifest_hash_is_rejected(tmp_path):
    base, vdir = copy_set(tmp_path)
    manifest = read_manifest(vdir)
    manifest["files"]["cyber.jsonl"]["sha256"] = "0" * 64
    (vdir / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ProbeSetError, match=r"cyber\.jsonl: sha256"):
        load_probe_set("v1", "cyber", base_dir=base)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"id": "fraud-003", "axis": "fraud", "prompt": "x y z", ', "invalid JSON"),
        ('["fraud-003", "fraud", "prompt", "direct"]', "expected a JSON object"),
        ('{"id": "fraud-003", "axis": "fraud", "prompt": "Some request"}', "keys must be"),
        (
            '{"axis": "fraud", "id": "fraud-003", "prompt": "Some request", "style": "direct"}',
            "keys must be",
        ),
        (
            '{"id": "fraud-003", "axis": "fraud", "prompt": "Some request", "style": "direct", '
            '"topic": "x"}',
            "keys must be",
        ),
        ('{"id": "fraud-003", "axis": "fraud", "prompt": "", "style": "direct"}', "non-empty"),
        ('{"id": "fraud-003", "axis": "fraud", "prompt": 7, "style": "direct"}', "non-empty"),
        (
            '{"id": "fraud-003", "axis": "fraud", "prompt": " pad ", "style": "direct"}',
            "whitespace",
        ),
        (
            '{"id": "fraud-003", "axis": "fraud", "prompt": "Some request", "style": "poem"}',
            "style",
        ),
        (
            '{"id": "fraud-003", "axis": "cyber", "prompt": "Some request", "style": "direct"}',
            "does not belong",
        ),
        (
            '{"id": "cyber-003", "axis": "fraud", "prompt": "Some request", "style": "direct"}',
            "must look like",
        ),
        (
            '{"id": "fraud-001", "axis": "fraud", "prompt": "Some request", "style": "direct"}',
            "duplicate id 'fraud-001'",
        ),
        ("", "blank line"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    base, vdir = copy_set(tmp_path)
    replace_line(vdir, "fraud.jsonl", 3, bad_line)
    rehash(vdir, "fraud.jsonl")  # so the line check, not the hash check, is what fails
    with pytest.raises(ProbeSetError) as info:
        load_probe_set("v1", base_dir=base)
    assert "fraud.jsonl line 3" in str(info.value)
    assert message in str(info.value)


def test_neutral_line_without_topic_is_rejected(tmp_path):
    base, vdir = copy_set(tmp_path)
    line = '{"id": "neutral-002", "axis": "neutral", "prompt": "Hello there", "style": "direct"}'
    replace_line(vdir, "neutral.jsonl", 2, line)
    rehash(vdir, "neutral.jsonl")
    with pytest.raises(ProbeSetError, match=r"neutral\.jsonl line 2: keys must be"):
        load_probe_set("v1", NEUTRAL_AXIS, base_dir=base)


def test_trailing_blank_line_and_missing_newline(tmp_path):
    base, vdir = copy_set(tmp_path)
    path = vdir / "cyber.jsonl"
    original = path.read_bytes()
    path.write_bytes(original + b"\n")
    rehash(vdir, "cyber.jsonl")
    with pytest.raises(ProbeSetError, match=r"cyber\.jsonl line 51: blank line"):
        load_probe_set("v1", "cyber", base_dir=base)
    path.write_bytes(original[:-1])
    rehash(vdir, "cyber.jsonl")
    with pytest.raises(ProbeSetError, match="must end with a newline"):
        load_probe_set("v1", "cyber", base_dir=base)


def test_invalid_utf8_is_rejected(tmp_path):
    base, vdir = copy_set(tmp_path)
    path = vdir / "self_harm.jsonl"
    path.write_bytes(path.read_bytes().replace(b"painless", b"pain\xffless", 1))
    with pytest.raises(ProbeSetError, match=r"self_harm\.jsonl: not valid UTF-8"):
        load_probe_set("v1", "self_harm", base_dir=base)


def test_count_mismatch_is_rejected(tmp_path):
    base, vdir = copy_set(tmp_path)
    manifest = read_manifest(vdir)
    manifest["files"]["weapons.jsonl"]["count"] += 1
    (vdir / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ProbeSetError, match=r"weapons\.jsonl: has 50 prompts but"):
        load_probe_set("v1", "weapons", base_dir=base)


def test_missing_file_is_rejected(tmp_path):
    base, vdir = copy_set(tmp_path)
    (vdir / "fraud.jsonl").unlink()
    with pytest.raises(ProbeSetError, match="cannot read probe file"):
        load_probe_set("v1", "fraud", base_dir=base)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(version="v2"), "does not match directory"),
        (lambda m: m.update(axes=[]), "'axes'"),
        (lambda m: m["files"].pop("fraud.jsonl"), r"files\['fraud.jsonl'\]"),
        (lambda m: m["files"]["fraud.jsonl"].update(sha256="ABC"), "sha256"),
    ],
)
def test_bad_manifest_is_rejected(tmp_path, edit, message):
    base, vdir = copy_set(tmp_path)
    manifest = read_manifest(vdir)
    edit(manifest)
    (vdir / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ProbeSetError, match=message):
        load_probe_set("v1", base_dir=base)


def test_unparseable_manifest_is_rejected(tmp_path):
    base, vdir = copy_set(tmp_path)
    (vdir / MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(ProbeSetError, match="cannot read manifest"):
        load_probe_set("v1", base_dir=base)


def test_import_pulls_in_no_django_or_torch():
    code = (
        "import sys, interp_jobs.probes as p; p.load_probe_set(); "
        "bad = [m for m in ('django', 'torch', 'rest_framework') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
