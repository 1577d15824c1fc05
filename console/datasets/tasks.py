from celery import shared_task

from console.datasets import services


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_import(job_id: int, apply: bool) -> str:
    """Validate (preview) or apply an uploaded golden-set file; see services.run_import_job."""
    return services.run_import_job(job_id, apply=apply).status
