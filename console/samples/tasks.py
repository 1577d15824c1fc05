from celery import shared_task

from console.samples import services


@shared_task(acks_late=True)
def judge_samples() -> dict:
    """Every minute from beat: judge waiting samples within each application's daily cap."""
    result = services.judge_pending()
    return {"judged": result.judged, "failed": result.failed, "capped": result.capped}


@shared_task(acks_late=True)
def maintain_partitions(older_than_days: int) -> int:
    """Hourly from beat: make the next days' partitions and drop those past retention."""
    return services.purge(older_than_days=older_than_days)


@shared_task(acks_late=True)
def check_monitors() -> dict:
    """Every minute from beat: evaluate the monitors; raise, escalate or hold back alerts."""
    from console.samples import monitors

    return monitors.sweep()
