"""Launch an eval from a CI pipeline: exit 0 when the gates pass, 1 when they do not."""

from __future__ import annotations

import time

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError, close_old_connections

from console.datasets.models import DatasetVersion
from console.evals import services
from console.evals.models import EvalRun
from console.evals.scorers import DEFAULT_SCORERS, JUDGED
from console.registry.models import Application, ModelConfigVersion, PromptVersion


def _split(ref: str, what: str) -> tuple[str, int]:
    key, _, number = ref.partition("@")
    if not key or not number.isdigit():
        raise CommandError(f"--{what} must look like KEY@N, got {ref!r}")
    return key, int(number)


class Command(BaseCommand):
    help = (
        "Evaluate a prompt × model version on a golden set version; non-zero exit on a failed gate."
    )

    def add_arguments(self, parser):
        parser.add_argument("app")
        parser.add_argument("--prompt", required=True, help="KEY@N")
        parser.add_argument("--model", required=True, help="KEY@N")
        parser.add_argument("--dataset", required=True, help="KEY@N (a published version)")
        parser.add_argument(
            "--judge", help="judge model config KEY@N (enables faithfulness/relevance)"
        )
        parser.add_argument("--cost-cap", type=float)
        parser.add_argument(
            "--as-user", default=None, help="who launches it (default: first admin)"
        )
        parser.add_argument(
            "--wait", action="store_true", help="wait for a Celery worker to finish it"
        )
        parser.add_argument(
            "--inline", action="store_true", help="run it in this process (no worker)"
        )
        parser.add_argument("--timeout", type=float, default=3600)

    def handle(self, *args, app, **o):
        application = Application.objects.filter(key=app).first()
        if application is None:
            raise CommandError(f"application {app!r} does not exist")

        def version(model, ref, what):
            key, number = _split(ref, what)
            found = model.objects.filter(
                head__application=application, head__key=key, number=number
            ).first()
            if found is None:
                raise CommandError(f"--{what} {ref}: no such version in {app}")
            return found

        prompt = version(PromptVersion, o["prompt"], "prompt")
        model = version(ModelConfigVersion, o["model"], "model")
        dataset = version(DatasetVersion, o["dataset"], "dataset")
        judge = version(ModelConfigVersion, o["judge"], "judge") if o["judge"] else None
        judge_prompts = {}
        scorers = list(DEFAULT_SCORERS)
        if judge is not None:
            for metric in JUDGED:
                head = application.prompts.filter(key=f"judge-{metric}").first()
                if head is None:
                    raise CommandError(f"--judge needs a prompt judge-{metric} in {app}")
                judge_prompts[metric] = head.versions.get(number=head.latest_number)
            scorers = [*DEFAULT_SCORERS, *JUDGED]
        user = self._user(application, o["as_user"])
        try:
            run = services.launch_run(
                actor=user,
                application=application,
                dataset_version=dataset,
                prompt_version=prompt,
                model_version=model,
                judge_model_version=judge,
                judge_prompts=judge_prompts,
                scorers=scorers,
                cost_cap=o["cost_cap"],
            )
        except services.DuplicateRun as exc:
            run = exc.run
            self.stderr.write(str(exc))
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            ) from None
        self.stdout.write(f"run #{run.pk}: {run.label}")
        if o["inline"]:
            services.execute_run(run.pk)
        elif not o["wait"]:
            return
        deadline = time.monotonic() + o["timeout"]
        while True:
            if time.monotonic() > deadline:
                raise CommandError(f"run #{run.pk} still {run.status} after {o['timeout']:g}s")
            try:
                run.refresh_from_db()
            except (OperationalError, InterfaceError) as exc:
                # A database restart while a CI job waits is not the run's verdict: keep waiting.
                self.stderr.write(f"database unavailable ({exc.__class__.__name__}); still waiting")
                close_old_connections()
                time.sleep(1)
                continue
            if not run.active:
                break
            time.sleep(1)
        self.stdout.write(
            f"{run.status}: {run.verdict or '-'} — {run.verdict_detail.get('reason', '')}"
        )
        for gate in run.verdict_detail.get("gates", []):
            mark = "ok  " if gate["passed"] else "FAIL"
            self.stdout.write(
                f"  {mark} {gate['metric']} {gate['actual']} {gate['op']} {gate['threshold']}"
            )
        if run.verdict != EvalRun.Verdict.PASSED:
            raise CommandError(
                f"eval gate not passed: run #{run.pk} is {run.verdict or run.status}"
            )

    def _user(self, application, username):
        User = get_user_model()
        if username:
            user = User.objects.filter(username=username).first()
            if user is None:
                raise CommandError(f"user {username!r} does not exist")
            return user
        user = User.objects.filter(
            memberships__application=application, memberships__role="admin"
        ).first()
        if user is None:
            raise CommandError("no admin in this application to launch as; pass --as-user")
        return user
