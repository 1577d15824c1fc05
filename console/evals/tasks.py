from celery import shared_task
from django.db import InterfaceError, OperationalError, close_old_connections

from console.evals import services

DATABASE_RETRY_S = 5


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_eval(self, run_id: int, shard: int | None = None) -> str:
    """Thin: execute (or resume) the run, or one shard of it. If another worker holds the
    lease, look again when it would expire — so a run whose worker died is picked up, and a
    live one is not run twice.

    A sharded run's own message (no `shard`) fans out: one message per unfinished shard, on
    the queue it came in on, so as many worker processes share it."""
    if shard is None and (pending := services.unfinished_shards(run_id)):
        queue = (self.request.delivery_info or {}).get("routing_key")
        for index in pending:
            run_eval.apply_async((run_id,), {"shard": index}, queue=queue)
        return "sharded"
    # A fresh owner per execution: a redelivered copy of this task is not the lease holder.
    try:
        outcome = services.execute_run(
            run_id, owner=f"{self.request.hostname}:{services.worker_name()}", shard=shard
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
