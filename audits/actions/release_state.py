"""The stored state of a release: a cache of the gate's answer, refreshed by every action that
changes one of its inputs."""

from django.db import transaction

from audits import gate, ledger
from audits.ledger import Verb
from audits.models import Release
from audits.queries import gate_facts


@transaction.atomic
def refresh_release_state(*, release_id) -> gate.GateAnswer:
    release = Release.objects.select_for_update().select_related("policy").get(pk=release_id)
    answer = gate.evaluate(gate_facts(release))
    if answer.state != release.state or answer.reasons != release.state_reasons:
        previous = release.state
        Release.objects.filter(pk=release.pk).update(
            state=answer.state, state_reasons=answer.reasons
        )
        if answer.state != previous:
            ledger.record(
                Verb.RELEASE_STATE_CHANGED,
                actor=None,
                target=release,
                data={
                    "from": previous,
                    "to": answer.state,
                    "reasons": answer.reasons,
                },
            )
    return answer
