"""The UI's forms. Each validates what a person typed; the action it feeds checks the rest
(and says why, in words the page shows)."""

from typing import Any

from django import forms

from audits import checkkinds, safe_json
from audits.models import CatalogFeature, CheckPolicy


class WithdrawForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Recorded in the ledger with the withdrawal.",
    )


class RerunForm(forms.Form):
    check = forms.SlugField(max_length=64)


class FeatureReviewForm(forms.Form):
    label = forms.CharField(max_length=200)
    risk_axis = forms.SlugField(max_length=40, label="Risk axis")
    status = forms.ChoiceField(
        choices=[
            (CatalogFeature.Status.CONFIRMED, "confirm"),
            (CatalogFeature.Status.REJECTED, "reject"),
        ]
    )


class JSONObjectField(forms.Field):
    """A JSON object typed into a text area (parameters, thresholds)."""

    widget = forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "class": "json-input"})
    MAX_LENGTH = 20_000

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> dict:
        text = str(value or "").strip()
        if not text:
            return {}
        if len(text) > self.MAX_LENGTH:
            raise forms.ValidationError(f"at most {self.MAX_LENGTH:,} characters")
        try:
            parsed = safe_json.loads(text, what="this field")
        except safe_json.UnsafeJSONError as exc:
            raise forms.ValidationError(str(exc)) from None
        if not isinstance(parsed, dict):
            raise forms.ValidationError('write a JSON object, e.g. {"top_n": 10}')
        return parsed

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            import json

            return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False) if value else ""
        return value


def kind_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in checkkinds.available()]


class RequiredCheckForm(forms.Form):
    key = forms.SlugField(max_length=64, help_text="a short name for this check in the policy")
    kind = forms.ChoiceField(choices=kind_choices)
    blocking = forms.BooleanField(
        required=False, initial=True, help_text="a blocking check must pass (or be waived)"
    )
    parameters = JSONObjectField()
    thresholds = JSONObjectField()


RequiredCheckFormSet = forms.formset_factory(
    RequiredCheckForm, extra=1, can_delete=True, max_num=50, validate_max=True
)


class PolicyForm(forms.Form):
    description = forms.CharField(
        required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 3})
    )
    approvals_required = forms.IntegerField(
        min_value=1, max_value=20, initial=2, label="Approvals required"
    )
    submitter_may_approve = forms.BooleanField(
        required=False,
        label="The submitter may approve their own release",
        help_text="Off by default: the four-eyes rule.",
    )


class NewPolicyForm(PolicyForm):
    name = forms.SlugField(
        max_length=100,
        help_text="A new draft with an existing name becomes that policy's next version.",
    )
    field_order = ("name", "description", "approvals_required", "submitter_may_approve")


def published_policy_names() -> list[tuple[str, str]]:
    names = (
        CheckPolicy.objects.filter(status=CheckPolicy.Status.PUBLISHED)
        .values_list("name", flat=True)
        .distinct()
        .order_by("name")
    )
    return [(name, name) for name in names]


class AssignForm(forms.Form):
    family = forms.CharField(
        max_length=100,
        required=False,
        help_text="A model family, or empty for the default of every family without its own.",
    )
    policy_name = forms.ChoiceField(choices=published_policy_names, label="Policy")


class ReauthForm(forms.Form):
    password = forms.CharField(max_length=4096, strip=False, widget=forms.PasswordInput)
