"""The governance web UI: server-rendered pages over the record system.

Thin, like audits.api: views validate input, call an action from audits.actions and render.
Everything a page shows is computed by the read-side modules (audits.queries, audits.gate,
audits.statements) or by the presenters here (figures, evidence, graphs, policy_diff), which
are pure functions of records and evidence bytes. Nothing in this package imports torch.
"""
