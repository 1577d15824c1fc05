from celery import shared_task

from console.releases import rollouts


@shared_task(acks_late=True)
def advance_rollouts() -> dict:
    """Every minute from beat: check guards, advance held steps, complete finished rollouts."""
    return {str(k): v for k, v in rollouts.tick().items()}
