"""docs/operations.md's code is run, not just read: the webhook receiver's verification code
(used by test_webhooks.py against real deliveries), and every gate-client command of the CI
examples parses with the client's own arguments."""

import re
import shlex
from pathlib import Path

from tests.tools.conftest import load_tool

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"


def _block(marker: str, language: str) -> str:
    found = re.findall(
        rf"<!-- tested: {re.escape(marker)} -->\n```{language}\n(.*?)```", DOC.read_text(), re.S
    )
    assert len(found) == 1, f"docs/operations.md lost its {marker!r} block"
    return found[0]


def receiver_snippet():
    """The verification function a receiver copies from the docs."""
    namespace: dict = {}
    exec(compile(_block("webhook receiver", "python"), str(DOC), "exec"), namespace)  # noqa: S102
    return namespace["verify_assay_webhook"]


def _gate_commands() -> list[list[str]]:
    text = DOC.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        if "python3 tools/assay_gate.py" in line and not line.lstrip().startswith("#"):
            words = shlex.split(line.split("assay_gate.py", 1)[1])
            commands.append([w for w in words if w not in ("|", "||", "&&")])
    return commands


def _concrete(words: list[str]) -> list[str]:
    """Shell variables replaced by values of the right shape."""
    out = []
    for i, word in enumerate(words):
        if word.startswith("$"):
            word = "0" * 64 if i and words[i - 1].endswith("-digest") else "x"
        out.append(word)
    return out


def test_every_gate_client_command_in_the_docs_parses(monkeypatch):
    gate = load_tool("assay_gate")
    monkeypatch.setenv("ASSAY_SERVER", "https://assay.example.com")
    commands = _gate_commands()
    assert len(commands) >= 2, "the CI examples went missing"
    for words in commands:
        args = gate.parse_args(_concrete(words))
        assert args.release


def test_the_receiver_code_is_standard_library_only():
    code = _block("webhook receiver", "python")
    imports = re.findall(r"^(?:import|from) (\w+)", code, re.M)
    assert set(imports) <= {"hashlib", "hmac", "json", "time"}
