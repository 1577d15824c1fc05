from celery import shared_task

from console.evals import services


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_eval(self, run_id: int) -> str:
    """Thin: execute (or resume) the run. If another worker holds its lease, look again when
    the lease would expire — so a run whose worker died is picked up, and a live one is not
    run twice."""
    # A fresh owner per execution: a redelivered copy of this task is not the lease holder.
    outcome = services.execute_run(
        run_id, owner=f"{self.request.hostname}:{services.worker_name()}"
    )
    if outcome.status == "busy":
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status
