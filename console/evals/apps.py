from django.apps import AppConfig


class EvalsConfig(AppConfig):
    name = "console.evals"
    label = "evals"

    def ready(self) -> None:
        # The datasets layer sits below evals: it learns which prompts were evaluated on a golden
        # set through this registration instead of importing eval runs.
        from console.datasets.selectors import register_evaluated_prompts
        from console.evals.selectors import prompt_versions_evaluated_on

        register_evaluated_prompts(prompt_versions_evaluated_on)
