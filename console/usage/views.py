"""Cost dashboard, CSV export, budgets and price corrections."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from console.accounts.roles import ADMIN, ENGINEER
from console.core import csvcells
from console.core.canonical import loads
from console.core.permissions import access_application
from console.usage import budgets as budget_service
from console.usage import charts, selectors, services
from console.usage.models import Budget, PricePoint


def _filters(request):
    return selectors.UsageFilters.from_query(request.GET, timezone.now().date())


# Breakdowns whose rollups carry errors, ratings and cache hits, shown as a rates table.
RATE_GROUPS = ("model", "feature", "environment")


@login_required
@require_GET
def dashboard(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app)
    filters, errors = _filters(request)
    board = selectors.dashboard(application, filters, timezone.now().date())
    context = {
        "application": application,
        "filters": filters,
        "errors": errors,
        "board": board,
        "figures": charts.figures(board),
        "spenders": selectors.top_spenders(application, filters),
        "fallbacks": selectors.fallbacks(application, filters),
        "options": selectors.filter_options(application),
        "rate_tables": [(name, board.breakdowns[name]) for name in RATE_GROUPS],
        "budgets": list(
            Budget.objects.filter(application=application).select_related("environment")
        ),
    }
    if request.htmx and request.htmx.target == "board":
        return render(request, "usage/dashboard.html#board", context)
    return render(request, "usage/dashboard.html", context)


EXPORT_VIEWS = {"daily", "model", "prompt", "feature", "environment"}


@login_required
@require_GET
def export(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app)
    filters, errors = _filters(request)
    view = request.GET.get("view", "daily")
    if errors or view not in EXPORT_VIEWS:
        problems = list(errors.values()) or [
            f"view must be one of {', '.join(sorted(EXPORT_VIEWS))}"
        ]
        return HttpResponse("; ".join(problems), status=400, content_type="text/plain")
    board = selectors.dashboard(application, filters, timezone.now().date())
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = (
        f'attachment; filename="{application.key}-usage-{view}-{filters.since}-{filters.until}.csv"'
    )
    writer = csvcells.writer(response)
    if view == "daily":
        writer.writerow(
            [
                "day",
                "cost_usd",
                "requests",
                "errors",
                "cost_per_request",
                "cache_savings",
                "eval_cost",
                "shadow_cost",
            ]
        )
        for d in board.days:
            writer.writerow(
                [
                    d["day"],
                    d["cost"],
                    d["requests"],
                    d["errors"],
                    d["cost_per_request"] or "",
                    d["savings"],
                    d["eval_cost"],
                    d["shadow_cost"],
                ]
            )
    else:
        writer.writerow([view, "cost_usd", "requests"])
        for row in board.breakdowns[view]:
            writer.writerow([row["label"], row["cost"], row["requests"]])
    return response


@login_required
def budgets(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app)
    if request.method == "POST":
        access_application(request, app, ENGINEER)
        data = request.POST
        env_key = data.get("environment", "")
        env = application.environments.filter(key=env_key).first() if env_key else None
        if env_key and env is None:
            messages.error(
                request, f"environment: {application.name} has no environment {env_key!r}."
            )
            return redirect("usage:budgets", app=app)
        action = {}
        if data.get("action_type") in {"kill_switch", "variant"}:
            action = {"type": data["action_type"], "flag": data.get("action_flag", "")}
            if data["action_type"] == "variant":
                action["variant"] = data.get("action_variant", "")
        try:
            thresholds = [
                int(t)
                for t in data.get("thresholds", "50,80,100,120").replace(" ", "").split(",")
                if t
            ]
            limit = (
                Decimal(data["per_user_daily_limit"]) if data.get("per_user_daily_limit") else None
            )
            budget_service.create_budget(
                actor=request.user,
                application=application,
                name=data.get("name", "").strip() or "Budget",
                period=data.get("period", ""),
                amount=data.get("amount", ""),
                environment=env,
                feature=data.get("feature", "").strip(),
                thresholds=thresholds,
                action=action,
                per_user_daily_limit=limit,
            )
        except (ValueError, InvalidOperation):
            messages.error(
                request, "Thresholds are whole percents separated by commas; limits are amounts."
            )
        except ValidationError as exc:
            messages.error(
                request, "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            )
        else:
            messages.success(request, "Budget created.")
        return redirect("usage:budgets", app=app)
    rows = list(
        Budget.objects.filter(application=application)
        .select_related("environment")
        .prefetch_related("alerts")
    )
    now = timezone.now()
    for budget in rows:
        start = budget_service.period_start(budget, now)
        budget.spent = budget_service.spend(budget, start, budget_service.period_end(budget, start))
        budget.percent = float(budget.spent / budget.amount * 100) if budget.amount else 0
    return render(
        request,
        "usage/budgets.html",
        {
            "application": application,
            "budgets": rows,
            "flags": list(application.flags.values_list("key", flat=True)),
        },
    )


@login_required
def prices(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app)
    summary = None
    if request.method == "POST":
        access_application(request, app, ADMIN)
        data = request.POST
        try:
            try:
                day = date.fromisoformat(data.get("effective_from", ""))
            except ValueError:
                raise ValidationError({"effective_from": "a date, YYYY-MM-DD"}) from None
            effective = datetime.combine(day, time.min, UTC)
            tiers = loads(data.get("tiers") or "[]")
            summary = services.record_price(
                actor=request.user,
                application=application,
                model=data.get("model", "").strip(),
                effective_from=effective,
                input_per_1m=Decimal(data.get("input_per_1m", "")),
                cached_input_per_1m=Decimal(data.get("cached_input_per_1m", "")),
                output_per_1m=Decimal(data.get("output_per_1m", "")),
                tiers=tiers,
                note=data.get("note", ""),
            )
        except (InvalidOperation, ValueError) as exc:
            messages.error(request, f"Prices must be numbers and tiers a JSON list ({exc}).")
        except TypeError as exc:
            messages.error(request, f"Tiers must be a JSON list of objects ({exc}).")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(
                request,
                f"Recorded. Repriced {summary['events_repriced']} events: "
                f"${Decimal(summary['cost_before']):.4f} → ${Decimal(summary['cost_after']):.4f}.",
            )
            return redirect("usage:prices", app=app)
    points = PricePoint.objects.filter(application=application).order_by("model", "-effective_from")
    return render(
        request,
        "usage/prices.html",
        {"application": application, "points": points, "summary": summary},
    )
