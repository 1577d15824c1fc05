"""The two versioned kinds the registry manages, described once so views and services treat
prompts and model configs alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.http import Http404

from console.registry import models, validation


@dataclass(frozen=True)
class Kind:
    slug: str  # URL segment
    label: str  # "Prompt"
    plural: str  # "Prompts"
    action: str  # audit prefix: prompt.version.create, prompt.bind, ...
    head: type
    version: type
    binding: type
    clean: Callable[[dict], dict]


PROMPT = Kind(
    slug="prompts",
    label="Prompt",
    plural="Prompts",
    action="prompt",
    head=models.Prompt,
    version=models.PromptVersion,
    binding=models.PromptBinding,
    clean=validation.clean_prompt_content,
)
MODEL_CONFIG = Kind(
    slug="models",
    label="Model config",
    plural="Model configs",
    action="model_config",
    head=models.ModelConfig,
    version=models.ModelConfigVersion,
    binding=models.ModelConfigBinding,
    clean=validation.clean_model_config_content,
)
KINDS = {k.slug: k for k in (PROMPT, MODEL_CONFIG)}


def kind_of(slug: str) -> Kind:
    try:
        return KINDS[slug]
    except KeyError:
        raise Http404("No such kind") from None


def kind_for_head(head) -> Kind:
    for kind in KINDS.values():
        if isinstance(head, kind.head):
            return kind
    raise TypeError(f"{type(head).__name__} is not a registry head")
