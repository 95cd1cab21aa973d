"""tools/assay_review.py, the reviewer's own client, against a live server: keys are made
locally, registered with proof of possession, statements are shown in words and signed; what
the server would refuse is refused before anything is signed or registered."""

import json
import stat

import pytest

from audits import actions, canonical
from audits.models import Decision, ReviewerKey
from interp_jobs.worker.tasks import run_check

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _run(review, capsys, *argv, answer: str | None = None, monkeypatch=None) -> tuple[int, str]:
    if answer is not None:
        monkeypatch.setattr("builtins.input", lambda prompt: answer)
    code = review.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def release(personas, model_version, policy):
    opened, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    return opened


def _finish(release):
    for run in release.check_runs.all():
        run_check.apply(args=[str(run.pk)])


def _as(live_server, token) -> list[str]:
    return ["--server", live_server.url, "--token", token]


def test_keygen_needs_no_server_and_keeps_the_key_private(review, tmp_path, capsys):
    code, out = _run(review, capsys, "keygen", str(tmp_path / "me.pem"))
    assert code == 0
    assert stat.S_IMODE((tmp_path / "me.pem").stat().st_mode) == 0o600
    assert "key id:" in out
    code, out = _run(review, capsys, "keygen", str(tmp_path / "me.pem"))
    assert code == 1
    assert "exists" in out


def test_the_tools_canonical_json_is_the_servers(review):
    values = [
        {"b": 1, "a": [1.5, 1e21, 1e-7, -0.0, 123456789.125], "é": "ü\n\u2028", "c": None},
        {"\U0001f600": True, "\ue000": False, "z": {"y": [{"x": "x"}]}},
        [0.1, 2.5e-6, 1e300, 100.0, -7],
    ]
    for value in values:
        assert review.canonical_json(value) == canonical.canonical_json(value)


def test_a_reviewer_registers_and_signs_with_the_client_alone(
    review, live_server, personas, release, token_for, tmp_path, capsys, monkeypatch
):
    _finish(release)
    for who in ("reviewer", "reviewer2"):
        key = tmp_path / f"{who}.pem"
        _run(review, capsys, "keygen", str(key))
        server = _as(live_server, token_for(getattr(personas, who)))
        code, out = _run(review, capsys, *server, "register", "--key", str(key), "--yes")
        assert code == 0, out
        code, out = _run(
            review,
            capsys,
            *server,
            "sign",
            "--release",
            str(release.pk),
            "--decision",
            "approve",
            "--rationale",
            "read every check's evidence",
            "--key",
            str(key),
            answer="y",
            monkeypatch=monkeypatch,
        )
        assert code == 0, out
        assert "You are about to sign:" in out
        assert "21 CFR 11.50" in out
        assert "recorded decision" in out
    gate = personas.client("auditor").get(f"/api/v1/releases/{release.pk}/gate/").json()
    assert (gate["state"], gate["may_ship"]) == ("approved", True)


def test_nothing_is_registered_unless_the_reviewer_says_yes(
    review, live_server, personas, token_for, tmp_path, capsys, monkeypatch
):
    key = tmp_path / "me.pem"
    _run(review, capsys, "keygen", str(key))
    server = _as(live_server, token_for(personas.reviewer))
    code, out = _run(
        review,
        capsys,
        *server,
        "register",
        "--key",
        str(key),
        answer="n",
        monkeypatch=monkeypatch,
    )
    assert code == 1
    assert "nothing registered" in out
    assert not ReviewerKey.objects.exists()


@pytest.mark.parametrize(
    ("decision", "extra", "finished", "expected"),
    [
        ("approve", [], False, "have not finished"),
        ("waive", [], True, "a waiver names one of the release's blocking checks (fingerprint)"),
        ("waive", ["--check", "nope"], True, "'nope' is not one"),
        ("approve", ["--check", "fingerprint"], True, "only for waivers"),
    ],
)
def test_what_the_server_would_refuse_is_refused_before_signing(
    review,
    live_server,
    personas,
    release,
    token_for,
    tmp_path,
    capsys,
    decision,
    extra,
    finished,
    expected,
):
    if finished:
        _finish(release)
    key = tmp_path / "me.pem"
    _run(review, capsys, "keygen", str(key))
    server = _as(live_server, token_for(personas.reviewer))
    _run(review, capsys, *server, "register", "--key", str(key), "--yes")
    code, out = _run(
        review,
        capsys,
        *server,
        "sign",
        "--release",
        str(release.pk),
        "--decision",
        decision,
        "--rationale",
        "r",
        "--key",
        str(key),
        "--yes",
        *extra,
    )
    assert code == 1
    assert expected in out
    assert not Decision.objects.exists()


def test_a_key_that_is_not_the_signers_is_refused(
    review, live_server, personas, release, token_for, tmp_path, capsys
):
    _finish(release)
    key = tmp_path / "someone-elses.pem"
    _run(review, capsys, "keygen", str(key))
    server = _as(live_server, token_for(personas.reviewer))
    code, out = _run(
        review,
        capsys,
        *server,
        "sign",
        "--release",
        str(release.pk),
        "--decision",
        "approve",
        "--rationale",
        "r",
        "--key",
        str(key),
        "--yes",
    )
    assert code == 1
    assert "not a registered key of reviewer" in out


def test_an_envelope_verifies_offline_and_a_changed_one_does_not(
    review, live_server, personas, release, token_for, tmp_path, capsys
):
    _finish(release)
    key = tmp_path / "me.pem"
    _run(review, capsys, "keygen", str(key))
    server = _as(live_server, token_for(personas.reviewer))
    _run(review, capsys, *server, "register", "--key", str(key), "--yes")
    _run(
        review,
        capsys,
        *server,
        "sign",
        "--release",
        str(release.pk),
        "--decision",
        "reject",
        "--rationale",
        "no",
        "--key",
        str(key),
        "--yes",
    )
    envelope = Decision.objects.get().envelope
    (tmp_path / "env.json").write_text(json.dumps(envelope))
    code, out = _run(
        review, capsys, "verify", "--envelope", str(tmp_path / "env.json"), "--key", str(key)
    )
    assert code == 0
    assert "valid signature" in out
    assert "reject" in out
    envelope["payload"] = envelope["payload"][:-4] + "AAA="
    (tmp_path / "env.json").write_text(json.dumps(envelope))
    code, out = _run(
        review, capsys, "verify", "--envelope", str(tmp_path / "env.json"), "--key", str(key)
    )
    assert code == 1
