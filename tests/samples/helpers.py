"""Form posts the samples pages accept, shared by the role matrix and the governance sweep."""

from __future__ import annotations


def curate_post(dataset_key: str, question: str) -> dict:
    return {
        "dataset": dataset_key, "question": question, "expected_contains": "30 days",
        "expected_not_contains": "Forever",
    }  # fmt: skip


def monitor_post(environment: str) -> dict:
    return {
        "environment": environment, "metric": "refusal_rate", "version": "", "window_minutes": 60,
        "baseline_minutes": 1440, "min_samples": 30, "cooldown_minutes": 15,
    }  # fmt: skip


def policy_post() -> dict:
    return {
        "revision": "0", "redact_kinds": ["email", "card"], "redact_patterns": "",
        "judge_rate": "0.5", "judge_daily_cap": "2.00",
    }  # fmt: skip
