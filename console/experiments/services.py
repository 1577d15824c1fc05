"""Concluding an experiment: a promotion request for the winning variant's version, with the
experiment report as its evidence. The promotion goes through the one door like any other
(approval by someone else, the environment's policy); concluding changes nothing served."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from console.experiments import report as report_mod
from console.flags.models import Flag
from console.registry.models import Environment, ModelConfigVersion, PromptVersion
from console.releases import services as releases
from console.releases.models import PromotionRequest


def variant_version(flag: Flag, variant: str, report: dict) -> PromptVersion | ModelConfigVersion:
    """The prompt or model config version a variant of the experiment named (its `ref` as the
    environment served it, which the report records)."""
    definition = next((v for v in report["variants"] if v["key"] == variant), None)
    if definition is None:
        raise ValidationError(
            {"variant": f"{variant!r} is not one of the variants {flag.key} splits traffic between"}
        )
    ref = definition.get("ref") or {}
    model = {"prompt": PromptVersion, "model_config": ModelConfigVersion}.get(ref.get("kind"))
    if model is None:
        raise ValidationError(
            {
                "variant": f"{variant} serves a plain value, not a prompt or model config "
                "version, so there is nothing to promote: make the flag serve it in each "
                "environment's rules instead"
            }
        )
    version = model.objects.filter(
        head__application_id=flag.application_id,
        head__key=ref.get("key"),
        number=ref.get("version"),
    ).first()
    if version is None:
        raise ValidationError(
            {"variant": f"{variant} names {ref.get('key')}@{ref.get('version')}, which no "
             "longer exists"}
        )  # fmt: skip
    return version


def conclude(
    *,
    actor: Any,
    flag: Flag,
    environment: Environment,
    variant: str,
    justification: str = "",
) -> tuple[PromotionRequest, bool]:
    """Open the promotion of `variant`'s version into `environment` with the report, as it
    reads now, as evidence (or add the report to the request already open for it). Refused
    (ValidationError) when the flag splits no traffic there, the variant names no version, or
    the environment's policy refuses the request. Returns the request and whether it is new."""
    try:
        report = report_mod.build(flag, environment)
    except report_mod.NotAnExperiment as exc:
        raise ValidationError(str(exc)) from None
    if variant == report["control"]:
        raise ValidationError(
            {
                "variant": f"{variant} is the control, which the environment serves already: to "
                "keep it, make the flag stop splitting (serve it alone) in the rules"
            }
        )
    version = variant_version(flag, variant, report)
    conclusion = report["conclusion"]
    text = justification.strip() or (
        f"Experiment {flag.key} in {environment.name} concluded for {variant}: "
        f"{conclusion['summary']}"
    )
    online = {"kind": "experiment", "variant": variant, "report": report}
    existing = releases.open_request_for(environment, version)
    if existing is not None:
        # Someone already asked for this version: the report joins that request's evidence
        # instead of being refused as a second request.
        return releases.add_online_evidence(actor=actor, request=existing, online=online), False
    request = releases.open_request(
        actor=actor, environment=environment, version=version, justification=text, online=online
    )
    return request, True
