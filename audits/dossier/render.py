"""The dossier PDF: Django templates (templates/dossier/) rendered by WeasyPrint as PDF/A-3b,
with the bundle's manifest attached inside it.

Everything shown comes from the Snapshot the bundle is written from. Figures are the counting
runs' own SVG / PNG evidence, embedded as data URIs; WeasyPrint fetches nothing else (the URL
fetcher refuses every other address, so an evidence file cannot make the renderer read a local
file or the network).
"""

import base64
import functools
import json
import logging
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.template.loader import render_to_string

from audits import checkkinds, merkle
from audits.dossier.collect import EvidenceFile, Snapshot

NONE = "\N{EN DASH}"  # shown for a value that is not there
FIGURE_TYPES = ("image/svg+xml", "image/png")
WIDE_FIGURE_PX = 720  # wider figures get a landscape page of their own, to stay legible
MAX_EXAMPLES = 12
MAX_ANSWER_CHARS = 280
MAX_METRIC_ROWS = 40

EVIDENCE_KINDS = {
    "observed": "Observed: activations or outputs measured as they are; nothing was edited.",
    "attribution": "Attribution estimate: a linear approximation of influence (gradient x "
    "activation), not a measured causal effect.",
    "intervention": "Intervention result: a measured causal effect under the stated "
    "replacement (zero, mean or clamp).",
    "integrity": "Integrity measurement: file hashes compared with recorded digests.",
}
# The figure the executive summary shows for each kind (the first present wins).
KEY_FIGURES: dict[str, tuple[tuple[str, str], ...]] = {
    "weights_fingerprint": (("mismatched", "files differing from the registered digests"),),
    "sae_fidelity": (
        ("explained_variance", "explained variance"),
        ("fraction_loss_recovered", "loss recovered"),
    ),
    "feature_discovery": (("best_auroc", "best AUROC"),),
    "feature_activation_audit": (("max_neutral_firing_rate", "max firing rate on neutral"),),
    "circuit_trace": (("rank_agreement", "rank agreement with ablations"),),
    "feature_intervention": (("control_kl_answer_start", "KL on controls (nats)"),),
    "behavior_probe": (("overall_refusal_rate", "refusal rate on risk prompts"),),
    "version_drift": (("max_abs_firing_rate_change", "largest firing-rate change"),),
}
INTERVAL_SUFFIXES = ("_ci95", "_ci", "_interval")


def data_only_fetcher():
    """WeasyPrint's URL fetcher, allowed data: URIs only (nothing local, nothing remote)."""
    from weasyprint.urls import URLFetcher

    return URLFetcher(allowed_protocols={"data"}, allow_redirects=False)


# --- numbers --------------------------------------------------------------------------------


def number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: NONE}[value]
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def interval(metrics: dict, key: str, value: Any) -> str:
    """The interval the metrics carry for key, as "95 % CI [low, high]", else "". An Estimate
    ({value, lower95, upper95, n, method}) carries its own; older metrics name it beside."""
    candidates = [metrics.get(key + suffix) for suffix in INTERVAL_SUFFIXES]
    candidates.append((metrics.get("intervals") or {}).get(key))
    extra = ""
    if isinstance(value, dict):
        candidates.insert(0, [value.get("lower95"), value.get("upper95")])
        candidates.append(value.get("ci95") or value.get("interval"))
        candidates.append([value.get("low"), value.get("high")])
        details = [f"n={value['n']}" if value.get("n") is not None else "", value.get("method", "")]
        extra = "; ".join(str(d) for d in details if d)
    for found in candidates:
        bounds = _bounds(found)
        if bounds:
            shown = f"95 % CI [{number(bounds[0])}, {number(bounds[1])}]"
            return f"{shown} ({extra})" if extra else shown
    return ""


def _bounds(found: Any) -> tuple[float, float] | None:
    if isinstance(found, dict):
        found = [found.get("low", found.get("lower")), found.get("high", found.get("upper"))]
    numbers = isinstance(found, list | tuple) and len(found) == 2
    if numbers and all(isinstance(v, int | float) and not isinstance(v, bool) for v in found):
        return float(found[0]), float(found[1])
    return None


@dataclass(frozen=True)
class KeyFigure:
    label: str
    value: str
    interval: str


def key_figure(kind: str, metrics: dict) -> KeyFigure:
    for key, label in KEY_FIGURES.get(kind, ()):
        if key in metrics:
            raw = metrics[key]
            shown = raw.get("value", raw.get("estimate")) if isinstance(raw, dict) else raw
            return KeyFigure(label, number(shown), interval(metrics, key, raw))
    for key, raw in metrics.items():
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return KeyFigure(key.replace("_", " "), number(raw), interval(metrics, key, raw))
    return KeyFigure(NONE, NONE, "")


def metric_rows(metrics: dict) -> list[tuple[str, str, str]]:
    """(name, value, interval) for each metric, nested dicts one level deep, long lists cut."""
    rows = []
    for key, value in metrics.items():
        if key.endswith(INTERVAL_SUFFIXES) or key == "intervals":
            continue
        if isinstance(value, dict) and not {"value", "estimate"} & set(value):
            rows += [
                (f"{key}.{sub}", _cell(item), interval(value, sub, item))
                for sub, item in value.items()
            ]
        else:
            shown = value.get("value", value.get("estimate")) if isinstance(value, dict) else value
            rows.append((key, _cell(shown), interval(metrics, key, value)))
    return rows[:MAX_METRIC_ROWS]


def _cell(value: Any) -> str:
    if isinstance(value, list):
        shown = ", ".join(number(v) for v in value[:8])
        return shown + (f" … ({len(value)} in all)" if len(value) > 8 else "")
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)[:200]
    return number(value)


# --- figures and examples -------------------------------------------------------------------


def data_uri(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def figure_size(media_type: str, data: bytes) -> tuple[int, int]:
    """The figure's width and height in CSS px (SVG attributes, PNG header); 0 when unknown."""
    if media_type == "image/png" and data[:8] == b"\x89PNG\r\n\x1a\n":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    head = data[:2000]
    sizes = []
    for name in (rb"width", rb"height"):
        match = re.search(rb"<svg[^>]*?\s" + name + rb"=['\"]([0-9.]+)", head)
        sizes.append(int(float(match.group(1))) if match else 0)
    return sizes[0], sizes[1]


def is_wide(media_type: str, data: bytes) -> bool:
    """Landscape for figures that would shrink below legible print on a portrait page: very
    wide ones, and wide ones tall enough to fill a landscape page."""
    width, height = figure_size(media_type, data)
    return width > 2 * WIDE_FIGURE_PX or (width > WIDE_FIGURE_PX and height > 260)


def figures(files: list[EvidenceFile], read: Callable[[EvidenceFile], bytes]) -> list[dict]:
    shown = []
    for item in files:
        if item.media_type not in FIGURE_TYPES:
            continue
        data = read(item)
        shown.append(
            {
                "title": item.title,
                "uri": data_uri(item.media_type, data),
                "wide": is_wide(item.media_type, data),
                "sha256": item.sha256,
                "kind": item.evidence_kind,
            }
        )
    return shown


def _truncated(text: str) -> dict:
    text = text or ""
    if len(text) <= MAX_ANSWER_CHARS:
        return {"text": text, "cut": 0}
    return {"text": text[:MAX_ANSWER_CHARS], "cut": len(text) - MAX_ANSWER_CHARS}


def examples(kind: str, files: list[EvidenceFile], read: Callable[[EvidenceFile], bytes]) -> dict:
    """Real answers from behaviour and intervention evidence, truncated and marked as such."""
    wanted = {"behavior_probe": "behavior.json", "feature_intervention": "intervention.json"}
    source = next((f for f in files if f.title == wanted.get(kind)), None)
    if source is None:
        return {}
    try:
        report = json.loads(read(source))
    except ValueError:
        return {}
    if kind == "behavior_probe":
        rows = _spread(report.get("responses", []), "axis")
        items = [
            {
                **_pick(r, "id", "axis", "label"),
                "prompt": r.get("prompt", ""),
                "answer": _truncated(r.get("answer", "")),
            }
            for r in rows
        ]
        return {"source": source.path, "behaviour": items}
    rows = _spread(report.get("generations", []), "axis")
    items = [
        {
            **_pick(r, "id", "axis", "label_before", "label_after"),
            "prompt": r.get("prompt", ""),
            "before": _truncated(r.get("before", "")),
            "after": _truncated(r.get("after", "")),
        }
        for r in rows
    ]
    return {"source": source.path, "intervention": items}


def _pick(row: dict, *names: str) -> dict:
    return {name: row.get(name, "") for name in names}


def _spread(rows: list[dict], group: str) -> list[dict]:
    """Up to MAX_EXAMPLES rows, taking from each group in turn."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row.get(group)), []).append(row)
    picked: list[dict] = []
    while len(picked) < MAX_EXAMPLES and any(groups.values()):
        for members in groups.values():
            if members and len(picked) < MAX_EXAMPLES:
                picked.append(members.pop(0))
    return picked


# --- the context ----------------------------------------------------------------------------


def when(value: str | None) -> str:
    """An ISO time as a reader wants it: date, time and zone (UTC)."""
    if not value:
        return NONE
    moment = datetime.fromisoformat(value).astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _description(kind: str) -> str:
    try:
        return checkkinds.get(kind).description
    except checkkinds.CheckSpecError:
        return kind


def _evidence_kind(kind: str, files: list[EvidenceFile]) -> str:
    kinds = sorted({f.evidence_kind for f in files if f.title != "manifest.json"})
    if kinds:
        return " + ".join(kinds)
    try:
        return checkkinds.get(kind).evidence_kind
    except checkkinds.CheckSpecError:
        return NONE


def _required(snap: Snapshot) -> dict[str, dict]:
    return {c["key"]: c for c in snap.policy["content"]["required_checks"]}


def _events_of(snap: Snapshot) -> list[dict]:
    return [{**json.loads(e["body"]), "entry_hash": e["entry_hash"]} for e in snap.events]


def run_sections(
    snap: Snapshot, read: Callable[[EvidenceFile], bytes], with_figures: bool
) -> list[dict]:
    required = _required(snap)
    sections = []
    for run in (r for r in snap.runs if r["counting"]):
        files = [f for f in snap.evidence if f.run_id == run["id"]]
        prov = run.get("provenance") or {}
        sections.append(
            {
                "run": run,
                "anchor": f"run-{run['key']}",
                "description": _description(run["kind"]),
                "evidence_kind": _evidence_kind(run["kind"], files),
                "kind_meanings": [
                    EVIDENCE_KINDS.get(k, k)
                    for k in sorted({f.evidence_kind for f in files if f.title != "manifest.json"})
                ],
                "parameters": json.dumps(
                    required.get(run["key"], {}).get("parameters", {}), indent=1, sort_keys=True
                ),
                "thresholds": required.get(run["key"], {}).get("thresholds", {}),
                "figure": key_figure(run["kind"], run["metrics"]),
                "metrics": metric_rows(run["metrics"]),
                "figures": figures(files, read) if with_figures else [],
                "examples": examples(run["kind"], files, read),
                "files": files,
                "provenance": provenance_rows(prov),
                "earlier": earlier_attempts(snap, run),
                "started": when(run["started_at"]),
                "finished": when(run["finished_at"]),
            }
        )
    return sections


def provenance_rows(prov: dict) -> list[tuple[str, str]]:
    """Model, lenses, probe set, code and environment, whatever shape a kind gave them."""
    model = prov["model"] if isinstance(prov.get("model"), dict) else {}
    libraries = prov["libraries"] if isinstance(prov.get("libraries"), dict) else {}
    code = f"engine {prov.get('engine_version', NONE)}; " + ", ".join(
        f"{name} {version}" for name, version in libraries.items()
    )
    environment = (
        f"Python {prov.get('python', NONE)} on {prov.get('platform', NONE)}; "
        f"device {prov.get('device', NONE)}, {prov.get('dtype', NONE)}"
    )
    return [
        (
            "model",
            f"{model.get('name', NONE)} (weights sha256 {model.get('weights_digest', NONE)})",
        ),
        ("lenses", _describe(prov.get("lenses"))),
        ("probe set", _describe(prov.get("probe_set"))),
        ("code", code),
        ("environment", environment),
        ("seed", number(prov.get("seed"))),
        ("policy digest", str(prov.get("policy_digest", NONE))),
    ]


def _describe(value: Any) -> str:
    if value in (None, "", [], {}):
        return NONE
    if isinstance(value, list):
        return "; ".join(_describe(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key} {_describe(item)}" for key, item in value.items())[:600]
    return str(value)


def earlier_attempts(snap: Snapshot, run: dict) -> list[dict]:
    return [
        {
            **r,
            "finished": when(r["finished_at"]),
            "why": f"superseded by attempt {run['attempt']}: the latest attempt of a required "
            "check is the one that counts"
            + (f" (this one errored: {r['error'][:200]})" if r["error"] else ""),
        }
        for r in snap.runs
        if r["key"] == run["key"] and r["attempt"] < run["attempt"]
    ]


def summary_rows(snap: Snapshot) -> list[dict]:
    waived = {d["check"] for d in snap.decisions if d["decision"] == "waive" and d["counts"]}
    rows = []
    for run in (r for r in snap.runs if r["counting"]):
        files = [f for f in snap.evidence if f.run_id == run["id"]]
        rows.append(
            {
                "run": run,
                "anchor": f"run-{run['key']}",
                "figure": key_figure(run["kind"], run["metrics"]),
                "evidence_kind": _evidence_kind(run["kind"], files),
                "waived": run["key"] in waived,
            }
        )
    return rows


def policy_timing(snap: Snapshot) -> dict:
    events = _events_of(snap)
    published = next((e for e in events if e["verb"] == "policy.published"), None)
    run_ids = {r["id"] for r in snap.runs}
    started = [e for e in events if e["verb"] == "check_run.started" and e["target_id"] in run_ids]
    first = min(started, key=lambda e: e["seq"]) if started else None
    return {
        "published": published,
        "published_at": when(published["at"]) if published else NONE,
        "first_run": first,
        "first_run_at": when(first["at"]) if first else NONE,
        "before": bool(published and all(e["seq"] > published["seq"] for e in started)),
    }


def ledger_rows(snap: Snapshot) -> list[dict]:
    point = json.loads(snap.checkpoint["body"])
    root = bytes.fromhex(point["root_hash"])
    rows = []
    for event, parsed in zip(snap.events, _events_of(snap), strict=True):
        proof = snap.proofs[str(event["seq"])]
        ok = merkle.verify_inclusion(
            event["seq"] - 1,
            point["tree_size"],
            merkle.leaf_hash(event["body"].encode()),
            [bytes.fromhex(node) for node in proof["audit_path"]],
            root,
        )
        rows.append(
            {**parsed, "at": when(parsed["at"]), "proof_ok": ok, "proof_root": proof["root_hash"]}
        )
    return rows


def context(
    snap: Snapshot,
    *,
    manifest_sha256: str,
    read: Callable[[EvidenceFile], bytes],
    with_figures: bool = True,
) -> dict:
    point = json.loads(snap.checkpoint["body"])
    return {
        "snap": snap,
        "generated_at": when(snap.generated_at.isoformat()),
        "release": snap.release,
        "model": snap.model_version,
        "lineage": snap.lineage,
        "policy": snap.policy,
        "policy_checks": snap.policy["content"]["required_checks"],
        "timing": policy_timing(snap),
        "gate": snap.gate,
        "summary": summary_rows(snap),
        "runs": run_sections(snap, read, with_figures),
        "lenses": [
            {**lens, "training_rows": _flatten(lens.get("training") or {})} for lens in snap.lenses
        ],
        "decisions": [
            {**d, "signed": when(d["signed_at"]), "roles": _roles_of(snap, d["reviewer"])}
            for d in snap.decisions
        ],
        "events": ledger_rows(snap),
        "checkpoint": {
            **point,
            "at": when(point["timestamp"]),
            "key_id": snap.checkpoint["key_id"],
        },
        "server_key": snap.server_key,
        "manifest_sha256": manifest_sha256,
        "earlier_checkpoints": len(snap.earlier_checkpoints),
        "problems": snap.problems,
    }


def _roles_of(snap: Snapshot, username: str) -> str:
    person = next((p for p in snap.people if p["username"] == username), None)
    return ", ".join(person["roles"]) if person and person["roles"] else "none"


def _flatten(data: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and len(rows) < 60:
            rows += _flatten(value, name + ".")
        else:
            rows.append((name, _cell(value)))
    return rows[:60]


# --- PDF ------------------------------------------------------------------------------------


def html(snap: Snapshot, **kwargs) -> str:
    return printable(render_to_string("dossier/dossier.html", context(snap, **kwargs)))


# Characters the dossier's fonts lack would make WeasyPrint encode the whole font through a
# custom CMap, and then no reader can extract or search that font's text (digests included).
# Model answers and people's words can hold anything, so characters outside what every face
# covers are written as \u{XXXX} (the bundle's JSON keeps the text as it was).
FONT_FACES = {
    "DejaVu Sans": "DejaVuSans.ttf",
    "DejaVu Sans:bold": "DejaVuSans-Bold.ttf",
    "DejaVu Sans Mono": "DejaVuSansMono.ttf",
    "DejaVu Sans Mono:bold": "DejaVuSansMono-Bold.ttf",
}
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
# Without the font files: printable ASCII, Latin-1 and Latin Extended-A, general punctuation,
# and the few symbols the templates use (middle dot, times, arrows, less / greater or equal).
FALLBACK_COVERAGE = frozenset(
    (*range(0x20, 0x7F), *range(0xA0, 0x180), *range(0x2010, 0x2027))
).union(map(ord, "\xb7\xd7\u2190\u2192\u2264\u2265"))


def _font_file(face: str, name: str) -> Path | None:
    """The file fontconfig picks for a face (as Pango will), else the file found by name."""
    fc_match = shutil.which("fc-match")
    if fc_match:
        found = subprocess.run(
            [fc_match, "-f", "%{file}", face], capture_output=True, text=True, check=False
        ).stdout.strip()
        if found and Path(found).is_file():
            return Path(found)
    for folder in FONT_DIRS:
        for path in folder.rglob(name) if folder.is_dir() else ():
            return path
    return None


@functools.cache
def covered() -> frozenset[int]:
    """The code points every face of the dossier's fonts has a glyph for."""
    from fontTools.ttLib import TTFont

    sets = []
    for face, name in FONT_FACES.items():
        path = _font_file(face, name)
        if path is None:
            return FALLBACK_COVERAGE
        sets.append(set(TTFont(path, lazy=True).getBestCmap()))
    return frozenset(set.intersection(*sets))


def printable(text: str) -> str:
    have = covered()
    return "".join(c if c in "\n\t" or ord(c) in have else f"\\u{{{ord(c):04x}}}" for c in text)


def pdf(document_html: str, *, manifest: bytes, dossier_id: str) -> bytes:
    """PDF/A-3b with the bundle's manifest attached (AFRelationship Data)."""
    # Font subsetting logs every glyph list at INFO, and importing weasyprint parses its own
    # stylesheets with a progress line each: nothing a worker's log needs. Set before the import.
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)
    from weasyprint import HTML, Attachment

    attachment = Attachment(
        string=manifest.decode("utf-8"),
        name="bundle-manifest.json",
        description=f"manifest of the verifiable bundle of dossier {dossier_id}",
        relationship="Data",
    )
    return HTML(string=document_html, url_fetcher=data_only_fetcher(), base_url="data:,").write_pdf(
        pdf_variant="pdf/a-3b",
        attachments=[attachment],
        finisher=_one_reference_per_attachment,
    )


def _one_reference_per_attachment(document, pdf) -> None:
    """WeasyPrint 70 lists a PDF/A-3 attachment twice in the catalog's /AF array (once from
    the EmbeddedFiles names, once from the objects); list each file specification once."""
    if "AF" in pdf.catalog:
        unique = list(dict.fromkeys(pdf.catalog["AF"]))
        pdf.catalog["AF"].clear()
        pdf.catalog["AF"].extend(unique)
