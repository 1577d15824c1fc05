from celery import shared_task
from django.db import InterfaceError, OperationalError, close_old_connections

from console.evals import services

DATABASE_RETRY_S = 5


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_eval(self, run_id: int) -> str:
    """Thin: execute (or resume) the run. If another worker holds its lease, look again when
    the lease would expire — so a run whose worker died is picked up, and a live one is not
    run twice."""
    # A fresh owner per execution: a redelivered copy of this task is not the lease holder.
    try:
        outcome = services.execute_run(
            run_id, owner=f"{self.request.hostname}:{services.worker_name()}"
        )
    except (OperationalError, InterfaceError) as exc:
        # The database is restarting: drop the broken connection and come back; the run
        # resumes from its stored items once our lease runs out.
        close_old_connections()
        raise self.retry(countdown=DATABASE_RETRY_S, exc=exc) from exc
    if outcome.status == "busy":
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status


@shared_task
def requeue_stalled_runs() -> list[int]:
    """From beat: give active runs whose task message was lost a new one."""
    return services.requeue_stalled()
