import os

from celery import shared_task

from console.evals import services


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_eval(self, run_id: int) -> str:
    """Thin: execute (or resume) the run. If another worker holds its lease, look again when
    the lease would expire — so a run whose worker died is picked up, and a live one is not
    run twice."""
    owner = f"{self.request.hostname}:{os.getpid()}:{self.request.id}"
    outcome = services.execute_run(run_id, owner=owner)
    if outcome.status == "busy":
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status
