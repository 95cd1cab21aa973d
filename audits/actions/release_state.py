"""The stored state of a release: a cache of the gate's answer (state, reasons, trust
warnings), refreshed by every action that changes one of its inputs. The API computes the
answer afresh on every read; the cache serves filters (?state=) and the ledger's record."""

from django.db import transaction

from audits import gate, ledger, signals
from audits.ledger import Verb
from audits.models import Decision, Release
from audits.queries import gate_facts


@transaction.atomic
def refresh_release_state(*, release_id) -> gate.GateAnswer:
    release = Release.objects.select_for_update().select_related("policy").get(pk=release_id)
    answer = gate.evaluate(gate_facts(release))
    previous = release.state
    if (answer.state, answer.reasons, answer.trust_warnings) == (
        previous,
        release.state_reasons,
        release.trust_warnings,
    ):
        return answer
    Release.objects.filter(pk=release.pk).update(
        state=answer.state, state_reasons=answer.reasons, trust_warnings=answer.trust_warnings
    )
    if answer.state != previous:
        transaction.on_commit(
            lambda: signals.release_state_changed.send(
                sender=Release,
                release_id=release.pk,
                previous=previous,
                state=answer.state,
                reasons=answer.reasons,
            )
        )
        ledger.record(
            Verb.RELEASE_STATE_CHANGED,
            actor=None,
            target=release,
            data={
                "from": previous,
                "to": answer.state,
                "reasons": answer.reasons,
                "trust_warnings": answer.trust_warnings,
            },
        )
    elif answer.trust_warnings != release.trust_warnings:
        ledger.record(
            Verb.RELEASE_TRUST_WARNINGS,
            actor=None,
            target=release,
            data={"state": answer.state, "trust_warnings": answer.trust_warnings},
        )
    return answer


def refresh_releases_decided_by(user) -> None:
    """An account change of someone who signed decisions can change those releases' answers
    (eligibility, trust warnings): recompute them."""
    release_ids = set(
        Decision.objects.filter(reviewer=user, release__withdrawn_at__isnull=True).values_list(
            "release_id", flat=True
        )
    )
    for release_id in release_ids:
        refresh_release_state(release_id=release_id)
