from celery import shared_task

from console.usage import budgets, services


@shared_task(acks_late=True)
def rollup_usage() -> dict:
    """Every 30 s from beat: fold new events into the hourly rollups (dashboards lag < 1 min)."""
    return services.rollup()


@shared_task(acks_late=True)
def check_budgets() -> int:
    """Every minute from beat: raise crossed thresholds once and run 100% actions; alert an
    unusual day once."""
    services.rollup()
    return len(budgets.check_budgets()) + len(budgets.check_anomalies())


@shared_task(acks_late=True)
def purge_usage(older_than_days: int) -> int:
    return services.purge_raw_events(older_than_days=older_than_days)
