"""Probe set v2: content rules, fixed splits, manifest integrity, split-aware loader and digest.

Pure Python (no database). The v1 rules live in ``test_probe_sets.py`` and still apply there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import math
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from interp_jobs.probes import (
    MANIFEST_NAME,
    NEUTRAL_AXIS,
    OVER_REFUSAL_AXIS,
    PROBES_DIR,
    RISK_AXES,
    SPLITS,
    STYLES,
    Probe,
    ProbeSetError,
    available_versions,
    compute_digest,
    load_probe_set,
)

V1 = PROBES_DIR / "v1"
V2 = PROBES_DIR / "v2"
CONTROL_AXES = (NEUTRAL_AXIS, OVER_REFUSAL_AXIS)
V2_AXES = (*RISK_AXES, *CONTROL_AXES)
MIN_PER_AXIS = 150
MIN_NON_ENGLISH = 10

# Surface vocabulary of each risk axis, used to check that neutral controls deliberately share
# words with the risk prompts. Each entry is a regular expression matched as whole words
# (``(?<!\w)(?:...)(?!\w)``) against the casefolded prompt; stems are spelled out with ``\w*``.
# A few non-English words are included because some controls are written in other languages.
RISK_VOCABULARY = {
    "weapons": (
        r"guns?|gunpowder|gunslingers?|rifles?|shotguns?|pistols?|revolvers?|firearms?|"
        r"bullets?|ammunition|bombs?|explo\w*|fireworks?|grenades?|weapons?|shoot\w*|"
        r"sniper|knife|knives|swords?|blades?|arrows?|archery|poison\w*|toxic|toxins?|"
        r"venom\w*|nuclear|missiles?|demolition|armou?r\w*|muskets?|longbows?|assassin\w*|"
        r"cannons?|kill\w*|fuochi|esplod\w*|\w*vergiftung"
    ),
    "cyber": (
        r"hack\w*|passwords?|pasword|contraseñas?|malware|virus\w*|ransomware|phishing|"
        r"firewalls?|antivirus|encrypt\w*|spyware|keyloggers?|botnets?|exploits?|breach\w*|"
        r"usb|wi-?fi|pin|two-factor|zwei-faktor-authentifizierung|cyber\w*|worms?|"
        r"process\w*|backdoors?|rootkits?|trojans?|spy\w*|stalkerware|credentials?|"
        r"cookies?|logins?|logs?|servers?|networks?|admins?|ddos|sql|xss|crack\w*|shell|"
        r"brute-force|2fa|webcams?|cctv|break into|get into"
    ),
    "fraud": (
        r"scam\w*|fraud\w*|banks?|banking|bankkonto|credit cards?|credit|tarjeta de crédito|"
        r"counterfeit|fake|forg\w*|launder\w*|invoices?|cheques?|insurance|tax\w*|"
        r"identity theft|estafa|golpes?|stolen|steal\w*|pickpocket|con artist|pension"
    ),
    "self_harm": (
        r"suicid\w*|self-harm\w*|overdos\w*|pills?|paracetamol|ibuprofen|advil|dose|cut|"
        r"cuts|cutting|die|dies|dying|death|hurt\w*|starv\w*|eating disorder|calories?|"
        r"weight|hunger|faint\w*|blood|medications?|medicines?|painkillers?|depress\w*|"
        r"depressão|feelin\w* (?:realy |really )?low|purg\w*|pro-ana|thinspo|vomit\w*|"
        r"jump\w*|bruises?|scars?|razors?|end (?:my|her|his) life|end it|"
        r"kill (?:my|her|him)self"
    ),
}
_VOCAB_RE = {
    axis: re.compile(rf"(?<!\w)(?:{pattern})(?!\w)") for axis, pattern in RISK_VOCABULARY.items()
}

# Words that mark a prompt as English; non_english prompts must contain none of them.
ENGLISH_MARKERS = {"the", "how", "what", "and", "you", "your", "with", "to", "of", "my"}


def shares_risk_vocabulary(text: str) -> set[str]:
    folded = text.casefold()
    return {axis for axis, rx in _VOCAB_RE.items() if rx.search(folded)}


def normalise(text: str) -> str:
    """Case- and whitespace-insensitive form of a prompt."""
    return " ".join(text.casefold().split())


@functools.cache
def _fingerprint(text: str) -> tuple[str, str, frozenset[str]]:
    norm = normalise(text)
    letters = " ".join(re.findall(r"\w+", norm))
    return norm, letters, frozenset(norm[i : i + 3] for i in range(len(norm) - 2))


def near_identical(a: str, b: str) -> bool:
    """Identical after normalising case and whitespace (or after also dropping punctuation),
    or sharing at least 80% of their character trigrams (Jaccard similarity), which catches
    re-typed copies with a few words or letters changed."""
    na, la, ta = _fingerprint(a)
    nb, lb, tb = _fingerprint(b)
    if na == nb or la == lb:
        return True
    small, large = sorted((len(ta), len(tb)))
    if small < 0.8 * large:  # Jaccard can be at most small / large
        return False
    inter = len(ta & tb)
    return inter >= 0.8 * (len(ta) + len(tb) - inter)


def read_manifest(version_dir: Path) -> dict:
    return json.loads((version_dir / MANIFEST_NAME).read_text(encoding="utf-8"))


def write_manifest(version_dir: Path, manifest: dict) -> None:
    (version_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")


def copy_v2(tmp_path: Path) -> tuple[Path, Path]:
    base = tmp_path / "probes"
    shutil.copytree(V2, base / "v2")
    return base, base / "v2"


def rehash(version_dir: Path, name: str) -> None:
    """Update the manifest's count, split counts and sha256 for one file after an edit."""
    manifest = read_manifest(version_dir)
    data = (version_dir / name).read_bytes()
    entry = manifest["files"][name]
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    entry["count"] = data.count(b"\n")
    splits = Counter()
    for line in data.decode("utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError, AttributeError):
            splits[json.loads(line).get("split")] += 1
    if sum(splits[s] for s in SPLITS) == entry["count"]:
        entry["splits"] = {s: splits[s] for s in SPLITS}
    write_manifest(version_dir, manifest)


def replace_line(version_dir: Path, name: str, lineno: int, new: str) -> None:
    path = version_dir / name
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[lineno - 1] = new
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def v2():
    return load_probe_set("v2")


@pytest.fixture(scope="module")
def v1_all():
    return load_probe_set("v1")


# ---------------------------------------------------------------- constants and availability


def test_constants():
    assert OVER_REFUSAL_AXIS == "over_refusal"
    assert SPLITS == ("discovery", "confirmation", "audit")
    assert {"misspelled", "non_english"} <= set(STYLES)
    assert len(set(STYLES)) == len(STYLES)


def test_v2_is_available_and_v1_stays_default():
    import interp_jobs.probes as probes

    assert available_versions()[:2] == ("v1", "v2")
    assert probes.DEFAULT_VERSION == "v1"
    assert load_probe_set().version == "v1"
    for name in ("OVER_REFUSAL_AXIS", "SPLITS"):
        assert name in probes.__all__


def test_load_all(v2):
    assert v2.version == "v2"
    assert v2.axes == V2_AXES
    assert v2.control_axes == CONTROL_AXES
    assert v2.risk_axes == RISK_AXES
    assert v2.splits == ()
    assert [p.axis for p in v2.prompts] == sorted((p.axis for p in v2.prompts), key=V2_AXES.index)
    assert {p.axis for p in v2.risk_prompts} == set(RISK_AXES)
    assert {p.axis for p in v2.control_prompts} == set(CONTROL_AXES)
    assert {p.axis for p in v2.neutral_prompts} == {NEUTRAL_AXIS}
    assert len(v2.risk_prompts) + len(v2.control_prompts) == len(v2.prompts)


# ---------------------------------------------------------------- shipped content


@pytest.mark.parametrize("axis", V2_AXES)
def test_counts(v2, axis):
    assert len(v2.for_axis(axis)) >= MIN_PER_AXIS


@pytest.mark.parametrize("axis", V2_AXES)
def test_every_line_is_canonical(axis):
    text = (V2 / f"{axis}.jsonl").read_bytes().decode("utf-8")
    assert text.endswith("\n")
    assert not text.endswith("\n\n")
    assert "\r" not in text
    assert not text.startswith("\ufeff")
    keys = ["id", "axis", "prompt", "style"]
    keys += ["topic"] if axis in CONTROL_AXES else []
    keys += ["split"]
    for lineno, line in enumerate(text[:-1].split("\n"), start=1):
        obj = json.loads(line)
        where = f"{axis}.jsonl line {lineno}"
        assert list(obj) == keys, where
        assert json.dumps(obj, ensure_ascii=False) == line, where
        assert obj["axis"] == axis
        assert obj["id"] == f"{axis}-{lineno:03d}"
        assert obj["style"] in STYLES
        assert obj["split"] in SPLITS
        assert obj["prompt"].strip() == obj["prompt"], where
        assert len(obj["prompt"]) >= 10, where
        assert "  " not in obj["prompt"], where


def test_ids_and_prompts_unique_within_v2(v2):
    ids = Counter(p.id for p in v2.prompts)
    assert [i for i, n in ids.items() if n > 1] == []
    texts = Counter(normalise(p.prompt) for p in v2.prompts)
    assert [t for t, n in texts.items() if n > 1] == []


def test_no_near_duplicates_anywhere_in_v2(v2):
    prompts = [p.prompt for p in v2.prompts]
    close = [(a, b) for a, b in itertools.combinations(prompts, 2) if near_identical(a, b)]
    assert close == []


def test_no_v2_prompt_duplicates_v1(v2, v1_all):
    old = [p.prompt for p in v1_all.prompts]
    new = [p.prompt for p in v2.prompts]
    assert {normalise(t) for t in old}.isdisjoint(normalise(t) for t in new)
    close = [(a, b) for a in new for b in old if near_identical(a, b)]
    assert close == []


@pytest.mark.parametrize("axis", RISK_AXES)
def test_risk_axes_use_every_style(v2, axis):
    styles = Counter(p.style for p in v2.for_axis(axis))
    assert set(styles) == set(STYLES)
    assert min(styles.values()) >= 10, styles


def test_risk_axes_share_one_style_mix(v2):
    mixes = {axis: Counter(p.style for p in v2.for_axis(axis)) for axis in RISK_AXES}
    assert len({tuple(sorted(m.items())) for m in mixes.values()}) == 1, mixes


@pytest.mark.parametrize("axis", V2_AXES)
def test_non_english_prompts_per_axis(v2, axis):
    foreign = [p.prompt for p in v2.for_axis(axis) if p.style == "non_english"]
    assert len(foreign) >= (MIN_NON_ENGLISH if axis in RISK_AXES else 5)
    for text in foreign:
        words = set(re.findall(r"\w+", text.casefold()))
        assert not words & ENGLISH_MARKERS, text
    # Not just ASCII transliterations: most carry the accents of their language.
    assert sum(1 for t in foreign if re.search(r"[^\x00-\x7f]", t)) >= len(foreign) // 2


@pytest.mark.parametrize("axis", V2_AXES)
def test_misspelled_prompts_look_sloppy(v2, axis):
    sloppy = [p.prompt for p in v2.for_axis(axis) if p.style == "misspelled"]
    assert len(sloppy) >= 10
    # Sloppy typing: mostly lower-case starts, no tidy sentence-final full stops.
    assert sum(1 for t in sloppy if t[0].islower()) >= 0.8 * len(sloppy)
    assert sum(1 for t in sloppy if t.endswith(".")) == 0


@pytest.mark.parametrize("axis", CONTROL_AXES)
def test_controls_are_varied(v2, axis):
    controls = v2.for_axis(axis)
    assert all(p.topic for p in controls)
    assert len({p.topic for p in controls}) >= 10
    assert set(Counter(p.style for p in controls)) == set(STYLES)
    lengths = sorted(len(p.prompt) for p in controls)
    assert lengths[0] < 45, "short prompts"
    assert lengths[-1] > 120, "long prompts"


def test_neutral_topics_are_many(v2):
    assert len({p.topic for p in v2.neutral_prompts}) >= 30


def test_neutral_controls_share_risk_vocabulary(v2):
    neutral = v2.neutral_prompts
    sharing = [p for p in neutral if shares_risk_vocabulary(p.prompt)]
    assert len(sharing) >= len(neutral) / 2, f"{len(sharing)} of {len(neutral)}"
    per_axis = Counter(a for p in neutral for a in shares_risk_vocabulary(p.prompt))
    for axis in RISK_AXES:
        assert per_axis[axis] >= 10, per_axis


def test_vocabulary_lists_do_describe_the_risk_axes(v2):
    """Sanity check of RISK_VOCABULARY: at least half of each axis's English prompts use that
    axis's own words (the prompts are deliberately not keyword-driven, so not all do)."""
    for axis in RISK_AXES:
        english = [p for p in v2.for_axis(axis) if p.style != "non_english"]
        hits = sum(1 for p in english if axis in shares_risk_vocabulary(p.prompt))
        assert hits >= 0.5 * len(english), (axis, hits, len(english))


def test_over_refusal_is_distinct_from_neutral(v2):
    neutral = {normalise(p.prompt) for p in v2.neutral_prompts}
    assert neutral.isdisjoint(normalise(p.prompt) for p in v2.for_axis(OVER_REFUSAL_AXIS))
    topics = {p.topic for p in v2.for_axis(OVER_REFUSAL_AXIS)}
    assert {"homonym", "figurative", "safe_target", "history", "definition"} <= topics


def test_risk_prompts_have_no_topic(v2):
    assert all(p.topic is None for p in v2.risk_prompts)
    assert all(p.topic for p in v2.control_prompts)


# ---------------------------------------------------------------- splits


def test_every_prompt_has_exactly_one_split(v2):
    assert all(p.split in SPLITS for p in v2.prompts)
    parts = {s: load_probe_set("v2", split=s) for s in SPLITS}
    ids = {s: {p.id for p in ps.prompts} for s, ps in parts.items()}
    for a, b in itertools.combinations(SPLITS, 2):
        assert ids[a].isdisjoint(ids[b]), (a, b)
    assert set().union(*ids.values()) == {p.id for p in v2.prompts}
    assert sum(len(i) for i in ids.values()) == len(v2.prompts)
    for s, ps in parts.items():
        assert ps.splits == (s,)
        assert {p.split for p in ps.prompts} == {s}
        assert ps.axes == V2_AXES


def _expected_split(probes: list[Probe]) -> dict[str, str]:
    """The manifest's split_rule, re-implemented: per style, order by sha256(id), then
    c = floor(0.2 n + 0.5) confirmation, d = floor((n - c) / 2) discovery, rest audit."""
    by_style: dict[str, list[Probe]] = defaultdict(list)
    for p in probes:
        by_style[p.style].append(p)
    out = {}
    for group in by_style.values():
        group.sort(key=lambda p: hashlib.sha256(p.id.encode("ascii")).hexdigest())
        n = len(group)
        c = math.floor(0.2 * n + 0.5)
        d = (n - c) // 2
        for i, p in enumerate(group):
            out[p.id] = "discovery" if i < d else "confirmation" if i < d + c else "audit"
    return out


@pytest.mark.parametrize("axis", V2_AXES)
def test_splits_follow_the_documented_deterministic_rule(v2, axis):
    probes = list(v2.for_axis(axis))
    assert {p.id: p.split for p in probes} == _expected_split(probes)


@pytest.mark.parametrize("axis", V2_AXES)
def test_splits_are_stratified_by_style(v2, axis):
    share = {"discovery": 0.4, "confirmation": 0.2, "audit": 0.4}
    probes = v2.for_axis(axis)
    for style in STYLES:
        group = [p for p in probes if p.style == style]
        counts = Counter(p.split for p in group)
        for split, fraction in share.items():
            assert abs(counts[split] - fraction * len(group)) <= 1, (style, counts)
    overall = Counter(p.split for p in probes)
    for split, fraction in share.items():
        assert abs(overall[split] / len(probes) - fraction) <= 0.03, overall


def test_discovery_never_shares_text_with_confirmation_or_audit():
    discovery = load_probe_set("v2", split="discovery").prompts
    held_out = load_probe_set("v2", split=["confirmation", "audit"]).prompts
    assert {p.id for p in discovery}.isdisjoint(p.id for p in held_out)
    close = [
        (a.id, b.id) for a in discovery for b in held_out if near_identical(a.prompt, b.prompt)
    ]
    assert close == []


def test_every_split_has_every_axis_and_style():
    for split in SPLITS:
        ps = load_probe_set("v2", split=split)
        for axis in V2_AXES:
            styles = {p.style for p in ps.for_axis(axis)}
            assert styles == set(STYLES), (split, axis)


# ---------------------------------------------------------------- manifest


def test_manifest_matches_files():
    manifest = read_manifest(V2)
    assert manifest["version"] == "v2"
    assert tuple(manifest["axes"]) == V2_AXES
    assert tuple(manifest["risk_axes"]) == RISK_AXES
    assert tuple(manifest["control_axes"]) == CONTROL_AXES
    assert tuple(manifest["splits"]) == SPLITS
    assert set(manifest["styles"]) == set(STYLES)
    assert manifest["licence"] == "CC0-1.0, written for Assay"
    assert "by hand" in manifest["description"]
    assert manifest["limitations"]
    policy = manifest["split_policy"]
    assert "Discovery never sees confirmation or audit prompts" in policy
    assert "sha256" in manifest["split_rule"]
    assert set(manifest["files"]) == {f"{a}.jsonl" for a in V2_AXES}
    for name, entry in manifest["files"].items():
        data = (V2 / name).read_bytes()
        lines = [json.loads(line) for line in data.decode("utf-8").splitlines()]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest(), name
        assert entry["count"] == len(lines), name
        assert entry["axis"] == name.removesuffix(".jsonl")
        assert list(entry["splits"]) == list(SPLITS)
        assert entry["splits"] == {s: sum(o["split"] == s for o in lines) for s in SPLITS}


def test_v1_files_are_untouched():
    """v1 is published evidence: its manifest hashes must still be the ones it shipped with."""
    manifest = read_manifest(V1)
    expected = {
        "weapons.jsonl": "191750d774328b0e1605529118e406be282801301bb0037f3a9d45ae6481af31",
        "cyber.jsonl": "beb351babe94522aa6c5171cb903d944d0325958c4fd9a2dbe16c4b01f7934d4",
        "fraud.jsonl": "739cdd1c162242ee6e463ed88c52d22e02e596c8d0cea8d385edd47493495275",
        "self_harm.jsonl": "6859bc67a7eaa6d48f141f37952834832330489a3b46f10a52904483589c4c0f",
        "neutral.jsonl": "b81a8faa7a3a7ae819ae6d287d45db67e9798ccbeb4edf3958c865d373de6f95",
    }
    assert {n: e["sha256"] for n, e in manifest["files"].items()} == expected
    for name, sha in expected.items():
        assert hashlib.sha256((V1 / name).read_bytes()).hexdigest() == sha
    assert "splits" not in manifest
    assert "control_axes" not in manifest


# ---------------------------------------------------------------- loader API and digest


def test_v1_prompts_have_no_split(v1_all):
    assert v1_all.splits == ()
    assert all(p.split is None for p in v1_all.prompts)
    assert v1_all.control_axes == (NEUTRAL_AXIS,)
    assert v1_all.risk_prompts == tuple(p for p in v1_all.prompts if p.axis != NEUTRAL_AXIS)


@pytest.mark.parametrize("split", ["discovery", ["audit"], ("discovery", "audit"), []])
def test_asking_v1_for_a_split_is_a_clear_error(split):
    with pytest.raises(ProbeSetError, match=r"probe set v1 has no splits.*split=None"):
        load_probe_set("v1", split=split)


def test_v1_digest_is_unchanged_by_splits_support(v1_all):
    expected = hashlib.sha256()
    for name in sorted(f"{a}.jsonl" for a in v1_all.axes):
        sha = hashlib.sha256((V1 / name).read_bytes()).hexdigest()
        expected.update(f"{name}:{sha}\n".encode("ascii"))
    assert v1_all.digest == expected.hexdigest()
    assert load_probe_set("v1", split=None).digest == v1_all.digest
    assert compute_digest(dict(v1_all.files)) == v1_all.digest
    assert compute_digest(dict(v1_all.files), splits=()) == v1_all.digest


@pytest.mark.parametrize("split", ["nope", "Discovery", ["audit", "test"]])
def test_unknown_split(split):
    name = split if isinstance(split, str) else split[-1]
    with pytest.raises(ProbeSetError, match=rf"unknown split '{name}' for probe set v2"):
        load_probe_set("v2", split=split)


def test_empty_split_selection_is_an_error():
    with pytest.raises(ProbeSetError, match="at least one split"):
        load_probe_set("v2", split=[])


def test_split_selection_order_and_duplicates_do_not_matter():
    a = load_probe_set("v2", "cyber", split=["audit", "discovery", "audit"])
    b = load_probe_set("v2", ["cyber"], split=("discovery", "audit"))
    assert a.splits == b.splits == ("discovery", "audit")
    assert a.prompts == b.prompts
    assert a.digest == b.digest


def test_selecting_every_split_is_the_unsplit_set(v2):
    every = load_probe_set("v2", split=list(reversed(SPLITS)))
    assert every.splits == ()
    assert every.prompts == v2.prompts
    assert every.digest == v2.digest


def test_digest_changes_with_the_split_selection(v2):
    digests = {(): v2.digest}
    for r in (1, 2):
        for combo in itertools.combinations(SPLITS, r):
            digests[combo] = load_probe_set("v2", split=combo).digest
    assert len(set(digests.values())) == len(digests)


def test_split_digest_follows_documented_rule():
    ps = load_probe_set("v2", ["weapons", "neutral"], split=["confirmation", "discovery"])
    expected = hashlib.sha256()
    for name in ("neutral.jsonl", "weapons.jsonl"):
        sha = hashlib.sha256((V2 / name).read_bytes()).hexdigest()
        expected.update(f"{name}:{sha}\n".encode("ascii"))
    expected.update(b"splits=confirmation,discovery\n")
    assert ps.digest == expected.hexdigest()
    assert ps.files == tuple(
        (n, hashlib.sha256((V2 / n).read_bytes()).hexdigest())
        for n in ("neutral.jsonl", "weapons.jsonl")
    )
    assert compute_digest(dict(ps.files), splits=["discovery", "confirmation"]) == ps.digest
    assert compute_digest(dict(ps.files), splits="discovery") == (
        load_probe_set("v2", ["weapons", "neutral"], split="discovery").digest
    )


@pytest.mark.parametrize("bad", [["Discovery"], ["a:b"], ["x\n"], [""], [7]])
def test_compute_digest_rejects_bad_split_names(bad):
    with pytest.raises(ProbeSetError, match="bad split name"):
        compute_digest({"weapons.jsonl": "0" * 64}, splits=bad)


def test_probe_carries_its_split(v2):
    first = v2.prompts[0]
    assert first.split in SPLITS
    assert first == Probe(
        id=first.id,
        axis=first.axis,
        prompt=first.prompt,
        style=first.style,
        topic=None,
        split=first.split,
    )


def test_positional_and_keyword_calls_still_work(tmp_path):
    assert load_probe_set("v2", "fraud").axes == ("fraud",)
    assert load_probe_set(version="v2", axes=["fraud"]).axes == ("fraud",)
    base = tmp_path / "probes"
    shutil.copytree(V1, base / "v1")
    shutil.copytree(V2, base / "v2")
    assert available_versions(base) == ("v1", "v2")
    copied = load_probe_set("v2", split="audit", base_dir=base)
    assert copied.digest == load_probe_set("v2", split="audit").digest


def test_over_refusal_only(v2):
    ps = load_probe_set("v2", OVER_REFUSAL_AXIS, split="discovery")
    assert ps.axes == (OVER_REFUSAL_AXIS,)
    assert ps.control_axes == (OVER_REFUSAL_AXIS,)
    assert ps.risk_axes == ()
    assert ps.risk_prompts == ()
    assert ps.neutral_prompts == ()
    assert len(ps.control_prompts) == len(ps.prompts) > 0


# ---------------------------------------------------------------- integrity errors


def test_edited_v2_file_is_refused_by_its_sha256(tmp_path):
    base, vdir = copy_v2(tmp_path)
    path = vdir / "self_harm.jsonl"
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"style": "direct"', b'"style": "indirect"', 1))
    with pytest.raises(ProbeSetError, match=r"self_harm\.jsonl: sha256 .* does not match"):
        load_probe_set("v2", base_dir=base)
    # Any split selection still hashes the whole file, so it is refused there too.
    with pytest.raises(ProbeSetError, match="sha256"):
        load_probe_set("v2", "self_harm", split="audit", base_dir=base)
    assert load_probe_set("v2", "cyber", base_dir=base).axes == ("cyber",)


def test_moving_a_prompt_to_another_split_is_caught(tmp_path):
    base, vdir = copy_v2(tmp_path)
    path = vdir / "fraud.jsonl"
    first, rest = path.read_text(encoding="utf-8").split("\n", 1)
    obj = json.loads(first)
    obj["split"] = "discovery" if obj["split"] != "discovery" else "audit"
    path.write_text(json.dumps(obj, ensure_ascii=False) + "\n" + rest, encoding="utf-8")
    # Even with the hash updated, the per-split counts no longer match the manifest.
    manifest = read_manifest(vdir)
    manifest["files"]["fraud.jsonl"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    write_manifest(vdir, manifest)
    with pytest.raises(ProbeSetError, match=r"fraud\.jsonl: has \d+ prompts in split"):
        load_probe_set("v2", "fraud", base_dir=base)


@pytest.mark.parametrize(
    ("name", "bad_line", "message"),
    [
        (
            "weapons.jsonl",
            '{"id": "weapons-002", "axis": "weapons", "prompt": "Some request", "style": "direct"}',
            "keys must be",
        ),
        (
            "weapons.jsonl",
            '{"id": "weapons-002", "axis": "weapons", "prompt": "Some request", '
            '"style": "direct", "split": "training"}',
            "unknown split 'training'",
        ),
        (
            "weapons.jsonl",
            '{"id": "weapons-002", "axis": "weapons", "prompt": "Some request", '
            '"split": "audit", "style": "direct"}',
            "keys must be",
        ),
        (
            "weapons.jsonl",
            '{"id": "weapons-002", "axis": "weapons", "prompt": "Some request", '
            '"style": "poem", "split": "audit"}',
            "unknown style 'poem'",
        ),
        (
            "over_refusal.jsonl",
            '{"id": "over_refusal-002", "axis": "over_refusal", "prompt": "Some request", '
            '"style": "direct", "split": "audit"}',
            "keys must be",
        ),
        (
            "over_refusal.jsonl",
            '{"id": "over_refusal-002", "axis": "over_refusal", "prompt": "Some request", '
            '"style": "direct", "topic": "homonym", "split": ""}',
            "non-empty",
        ),
    ],
)
def test_malformed_v2_line_names_file_and_line(tmp_path, name, bad_line, message):
    base, vdir = copy_v2(tmp_path)
    replace_line(vdir, name, 2, bad_line)
    rehash(vdir, name)
    with pytest.raises(ProbeSetError) as info:
        load_probe_set("v2", base_dir=base)
    assert f"{name} line 2" in str(info.value)
    assert message in str(info.value)


def test_v1_style_list_still_binds_v1(tmp_path):
    """v1's manifest lists six styles; a v1 line using a v2-only style is refused."""
    base = tmp_path / "probes"
    shutil.copytree(V1, base / "v1")
    vdir = base / "v1"
    line = json.loads((vdir / "cyber.jsonl").read_text(encoding="utf-8").split("\n", 1)[0])
    line["style"] = "misspelled"
    replace_line(vdir, "cyber.jsonl", 1, json.dumps(line, ensure_ascii=False))
    rehash(vdir, "cyber.jsonl")
    with pytest.raises(ProbeSetError, match=r"cyber\.jsonl line 1: unknown style 'misspelled'"):
        load_probe_set("v1", "cyber", base_dir=base)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(splits=["discovery", "training"]), "'splits'"),
        (lambda m: m.update(splits=[]), "'splits'"),
        (lambda m: m.update(splits=["audit", "audit"]), "'splits'"),
        (lambda m: m.update(control_axes=["over_refusal"]), "must include 'neutral'"),
        (lambda m: m.update(control_axes=["neutral", "bio"]), "'control_axes'"),
        (lambda m: m.update(styles=["direct", "haiku"]), "'styles'"),
        (lambda m: m["files"]["cyber.jsonl"].pop("splits"), r"files\['cyber.jsonl'\]\['splits'\]"),
        (
            lambda m: m["files"]["cyber.jsonl"]["splits"].update(audit=0),
            r"files\['cyber.jsonl'\]\['splits'\]",
        ),
        (
            lambda m: m["files"]["cyber.jsonl"].update(
                splits=dict(reversed(m["files"]["cyber.jsonl"]["splits"].items()))
            ),
            r"files\['cyber.jsonl'\]\['splits'\]",
        ),
    ],
)
def test_bad_v2_manifest_is_rejected(tmp_path, edit, message):
    base, vdir = copy_v2(tmp_path)
    manifest = read_manifest(vdir)
    edit(manifest)
    write_manifest(vdir, manifest)
    with pytest.raises(ProbeSetError, match=message):
        load_probe_set("v2", base_dir=base)


def test_unsplit_manifest_without_split_keys_loads_like_v1(tmp_path):
    """Dropping 'splits' from the manifest makes the split key on every line an error."""
    base, vdir = copy_v2(tmp_path)
    manifest = read_manifest(vdir)
    del manifest["splits"]
    write_manifest(vdir, manifest)
    with pytest.raises(ProbeSetError, match=r"weapons\.jsonl line 1: keys must be"):
        load_probe_set("v2", "weapons", base_dir=base)
    with pytest.raises(ProbeSetError, match="has no splits"):
        load_probe_set("v2", "weapons", split="audit", base_dir=base)
