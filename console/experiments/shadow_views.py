"""Shadow comparison pages: every shadow deployment with its figures against live, one
deployment's comparison, and "Request promotion" with that comparison as the evidence.

Every member reads them; requesting a promotion takes the role that may (engineers and
admins), and goes through the one door like any other request (console.releases.services)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from console.core.permissions import CURATE, ENGINEER, access_application
from console.experiments import shadows
from console.registry.models import Application
from console.releases import services as releases
from console.releases.models import PromotionRequest, ShadowDeployment
from console.samples.models import AGREES_FROM, Sample, ShadowAnswer
from console.samples.services import LIVE_SAMPLE_SLACK

DISAGREEMENTS = 10  # judged answers shown where the shadow and live disagree the most


def _shadow(application: Application, pk: int) -> ShadowDeployment:
    shadow = shadows.deployments(application).filter(pk=pk).first()
    if shadow is None:
        raise Http404("No such shadow deployment")
    return shadow


def _open_request(shadow: ShadowDeployment) -> PromotionRequest | None:
    """The open request for the shadow's prompt or model config in its environment, if any
    (there is at most one per thing and environment): for the shadow's version, promoting adds
    the comparison to its evidence; for another version, it must be decided or withdrawn
    first."""
    subject = releases.subject_of(shadow.kind, shadow.version)
    return (
        PromotionRequest.objects.filter(
            environment=shadow.environment, subject=subject, status__in=PromotionRequest.OPEN
        )
        .select_related("prompt_version__head", "model_version__head")
        .first()
    )


def _same_version(request: PromotionRequest | None, shadow: ShadowDeployment) -> bool:
    return request is not None and request.version == shadow.version and not request.shadow


def _request_page(shadow: ShadowDeployment) -> str:
    """The full promotion page for the shadow's version (pairing, staged rollout, evals)."""
    query = {
        "kind": shadow.kind,
        "key": shadow.version.head.key,
        "version": shadow.version.number,
        "environment": shadow.environment.key,
    }
    return f"{reverse('releases:new', kwargs={'app': shadow.environment.application.key})}?" + (
        urlencode(query)
    )


def _disagreements(shadow: ShadowDeployment) -> list[dict]:
    """The judged answers agreeing least with live, beside the live answer: two queries."""
    since, until = shadows.window(shadow)
    answers = list(
        ShadowAnswer.objects.filter(
            application_id=shadow.environment.application_id,
            environment=shadow.environment,
            judge_state=ShadowAnswer.Judge.DONE,
            agreement__lt=AGREES_FROM,
            at__gte=since,
            at__lt=until,
            **{shadows.label_column(shadow): shadows.version_label(shadow)},
        ).order_by("agreement", "-at")[:DISAGREEMENTS]
    )
    if not answers:
        return []
    live = {
        s.sample_id: s
        for s in Sample.objects.filter(
            application_id=shadow.environment.application_id,
            environment=shadow.environment,
            sample_id__in={a.shadow_of for a in answers},
            at__gte=min(a.at for a in answers) - LIVE_SAMPLE_SLACK,
            at__lte=max(a.at for a in answers) + LIVE_SAMPLE_SLACK,
        ).only("pk", "sample_id", "at", "question", "output")
    }
    return [{"answer": a, "live": live.get(a.shadow_of)} for a in answers]


@login_required
@require_GET
def shadow_list(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app)
    found = list(shadows.deployments(application)[: shadows.SHOWN])
    comparisons = shadows.compare(found)
    return render(
        request,
        "experiments/shadows.html",
        {
            "application": application,
            "rows": [{"shadow": s, "c": comparisons[s.pk]} for s in found],
            "shown": shadows.SHOWN,
        },
    )


@login_required
@require_GET
def shadow_detail(request: HttpRequest, app: str, pk: int) -> HttpResponse:
    application = access_application(request, app)
    shadow = _shadow(application, pk)
    comparison = shadows.comparison(shadow)
    since, until = shadows.window(shadow)
    open_request = _open_request(shadow)
    can_curate = CURATE in request.app_perms
    return render(
        request,
        "experiments/shadow.html",
        {
            "application": application,
            "shadow": shadow,
            "c": comparison,
            "since": since,
            "until": until,
            "can_promote": ENGINEER in request.app_perms,
            "open_request": open_request,
            "joins_request": _same_version(open_request, shadow),
            "request_page": _request_page(shadow),
            "justification": _justification(shadow, comparison),
            # Production answers are for those who may browse production samples.
            "can_curate": can_curate,
            "disagreements": _disagreements(shadow) if can_curate else [],
        },
    )


def _justification(shadow: ShadowDeployment, comparison: dict) -> str:
    return (
        f"Shadow comparison of {comparison['version']} in {shadow.environment.name}: "
        f"{comparison['summary']}"
    )


@login_required
@require_POST
def promote(request: HttpRequest, app: str, pk: int) -> HttpResponse:
    """Request the promotion of the shadow's version into its environment, with the
    comparison as it reads now as the request's online evidence; when a request for that
    version is already open, the comparison joins its evidence instead (as concluding an
    experiment does)."""
    application = access_application(request, app, ENGINEER)
    shadow = _shadow(application, pk)
    comparison = shadows.comparison(shadow)
    justification = request.POST.get("justification", "").strip()
    environment = shadow.environment
    try:
        existing = releases.open_request_for(environment, shadow.version)
        if existing is not None:
            releases.add_online_evidence(
                actor=request.user, request=existing, online=dict(comparison)
            )
            messages.success(
                request, f"The shadow comparison is now the online evidence of #{existing.pk}."
            )
            return redirect("releases:detail", app=app, pk=existing.pk)
        promotion = releases.open_request(
            actor=request.user,
            environment=environment,
            version=shadow.version,
            justification=justification or _justification(shadow, comparison),
            online=dict(comparison),
        )
    except releases.EvidenceMissing as exc:
        messages.error(
            request,
            f"{environment.name}'s release policy needs eval evidence before "
            f"{comparison['version']} can be requested: {'; '.join(exc.missing)}. "
            "Open the promotion page to launch the missing runs.",
        )
    except ValidationError as exc:
        for message in exc.messages:
            messages.error(request, message)
    else:
        messages.success(
            request,
            f"Requested #{promotion.pk} with the shadow comparison as evidence; approvers have "
            "been notified.",
        )
        return redirect("releases:detail", app=app, pk=promotion.pk)
    return redirect("experiments:shadow", app=app, pk=pk)
