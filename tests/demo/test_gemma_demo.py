"""`make demo-gemma`: the demo on Gemma 3 270M. The real run takes ten minutes or more, so
these tests check what can be checked cheaply: that the command line the target runs is one
the demo accepts and points at Gemma, its lens, its transcoder set and its own var dir; that the
findings record a LoRA the target trained; and that docs/gemma3.md states exactly what the
committed findings say."""

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from demo import findings, gemma_findings
from demo.gemma_fetch import FILENAME, SUBDIR
from demo.management.commands.demo import Command

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "gemma3.md"


def _demo_line() -> str:
    """The `manage.py demo` command `make -n demo-gemma` prints (continuations joined)."""
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    dry = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "demo-gemma"], capture_output=True, text=True, check=True
    ).stdout.replace("\\\n", " ")
    return next(line for line in dry.splitlines() if "manage.py demo " in line)


def test_make_demo_gemma_runs_an_accepted_demo_command_on_gemma_and_its_lens():
    line = _demo_line()
    args = shlex.split(line.split("manage.py demo ", 1)[1])
    options = vars(Command().create_parser("manage.py", "demo").parse_args(args))
    model = Command()._demo_model(options["model"])
    assert model.format == "gguf"
    assert model.path.parts[-2:] == (SUBDIR, FILENAME)
    assert (ROOT / options["lens"] / "cfg.json").is_file()
    assert "gemma3-270m" in options["lens"]
    assert options["adapter"]  # no Gemma adapter is shipped: the target trains one first
    # the circuit check traces through Gemma's own shipped transcoder set
    assert "gemma3-270m" in options["transcoders"]
    assert (ROOT / options["transcoders"] / "transcoders.json").is_file()


def test_make_demo_gemma_keeps_its_own_var_dir_apart_from_the_smollm2_demo():
    var_dir = re.search(r"ASSAY_VAR_DIR=(\S+)", _demo_line()).group(1)
    assert Path(var_dir).resolve() != (ROOT / "var").resolve()
    assert Path(var_dir).resolve().parent == (ROOT / "var").resolve()


def _version(tmp_path: Path, digest: str | None):
    source = tmp_path / "merged"
    source.mkdir(exist_ok=True)
    if digest:
        (source / "assay-merge.json").write_text(json.dumps({"adapter_digest": digest}))
    return SimpleNamespace(
        format="hf_dir", weights_digest="w", parent=None, source_path=str(source)
    )


def test_findings_record_the_adapter_the_demo_merged_when_it_is_not_the_shipped_one(tmp_path):
    record = json.loads(
        (ROOT / "interp_jobs/adapters/smollm2-135m-safety-lora-v1/training.json").read_text()
    )
    trained = {**record, "adapter_digest": "a" * 64, "command": "trained by make demo-gemma"}
    base = SimpleNamespace(model_version=_version(tmp_path, None))
    tuned = SimpleNamespace(model_version=_version(tmp_path, trained["adapter_digest"]))
    adapter = findings._models(base, tuned, trained)["tuned"]["adapter"]
    assert adapter["digest"] == "a" * 64
    assert adapter["command"] == "trained by make demo-gemma"
    assert adapter["size_bytes"] is None  # a file size is only stated for the shipped adapter
    other = {**trained, "adapter_digest": "b" * 64}  # a record of some other adapter
    assert findings._models(base, tuned, other)["tuned"]["adapter"] is None


def test_the_gemma_doc_states_what_the_committed_findings_say():
    assert gemma_findings.main(["--check", str(DOC)]) == 0


def test_the_committed_gemma_findings_carry_the_figures_the_doc_quotes():
    data = json.loads(gemma_findings.FINDINGS.read_text())
    assert data["models"]["tuned"]["adapter"]["settings"]["epochs"] >= 1
    assert data["models"]["tuned"]["parent"] == data["models"]["base"]["name"]
    circuit = data["circuit"]  # traced through Gemma's transcoders, validated on the family
    assert circuit["target"] == " Paris"
    assert circuit["family_prompts"] >= 20
    assert circuit["two_hop_found_rate"]["n"] == 12
    for version in ("base", "tuned"):
        for group in data["behaviour"][version]["groups"].values():
            rate = group["refusal_rate"]
            assert {"value", "lower95", "upper95", "n"} <= set(rate)
    text = gemma_findings.render(
        data, gemma_findings.read_time_report(gemma_findings.TIME_REPORT.read_text())
    )
    assert "None" not in text
    assert "The whole target took" in text


def test_the_doc_says_training_the_adapter_was_part_of_the_run_only_when_it_fits_in_it():
    data = json.loads(gemma_findings.FINDINGS.read_text())
    train = data["models"]["tuned"]["adapter"]["seconds"]["train"]
    stages = sum(s["wall_seconds"] for s in data["timings"])

    def header(wall_seconds: float) -> str:
        clock = f"{int(wall_seconds // 60)}:{wall_seconds % 60:05.2f}"
        report = {"wall": clock, "user": "1", "system": "1", "cpu_percent": "100%"}
        return "\n".join(gemma_findings.header(data, report))

    assert "Of that, training the adapter took" in header(train + stages + 5)
    assert "reused the adapter an earlier run had trained" in header(train + stages - 5)
