"""Golden-set reads: the editor's page of items, version manifests, diffs, quality hints."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from django.core.paginator import Page, Paginator
from django.db.models import BooleanField, Count, ExpressionWrapper, F, Q, QuerySet

from console.core.diff import FieldDiff, diff_contents
from console.datasets import safety
from console.datasets.cells import ToolChip, tool_chips
from console.datasets.items import (
    CONTENT_FIELDS,
    ITEM_FIELD_VARIABLES,
    TAG_PATTERN,
    content_with_defaults,
)
from console.datasets.models import Dataset, DatasetItem, DatasetVersion, PublishedItem
from console.registry.models import PromptBinding, PromptVersion

PAGE_SIZE = 50
FEW_ITEMS_PER_TAG = 3
STOPWORDS = frozenset(
    "a an the is are was were do does did i my me you your we our to of in on for and or "
    "can how what when where why which with it this that be have has".split()
)


@dataclass(frozen=True)
class ItemFilters:
    q: str = ""
    tag: str = ""
    changed: bool = False

    @classmethod
    def from_query(cls, params) -> ItemFilters:
        tag = (params.get("tag") or "").strip().lower()
        return cls(
            q=(params.get("q") or "").strip()[:200],
            tag=tag if TAG_PATTERN.match(tag) else "",
            changed=params.get("changed") == "1",
        )


def draft_items(dataset: Dataset, filters: ItemFilters) -> QuerySet:
    qs = dataset.draft_items.select_related("updated_by").order_by("position", "id")
    if filters.q:
        qs = qs.filter(Q(question__icontains=filters.q) | Q(item_id=filters.q))
    if filters.tag:
        qs = qs.filter(tags_text__contains=f",{filters.tag},")
    if filters.changed:
        qs = qs.filter(Q(published_hash__isnull=True) | ~Q(published_hash=F("content_hash")))
    return qs


def draft_counts(application) -> dict[int, dict[str, int]]:
    """Items and changed-since-published items per dataset of an application, one query."""
    changed = Q(published_hash__isnull=True) | ~Q(published_hash=F("content_hash"))
    rows = (
        DatasetItem.objects.filter(dataset__application=application)
        .values("dataset")
        .annotate(items=Count("id"), changed=Count("id", filter=changed))
        .order_by()
    )
    return {r["dataset"]: {"items": r["items"], "changed": r["changed"]} for r in rows}


def draft_page(dataset: Dataset, filters: ItemFilters, number) -> Page:
    return Paginator(draft_items(dataset, filters), PAGE_SIZE).get_page(number)


@dataclass(frozen=True)
class PublishedRow:
    """One item of a published version, shaped like a draft item for the read-only table."""

    item_id: str
    question: str = ""
    variables: dict = field(default_factory=dict)
    expected_contains: list = field(default_factory=list)
    expected_not_contains: list = field(default_factory=list)
    expected_sources: list = field(default_factory=list)
    expected_tools: list = field(default_factory=list)
    reference_answer: str = ""
    unanswerable: bool = False
    tags: list = field(default_factory=list)
    note: str = ""

    @property
    def tool_chips(self) -> list[ToolChip]:
        return tool_chips(self.expected_tools)


class _PublishedRows:
    """A lazy sequence for the Paginator: count and slices each run one query."""

    def __init__(self, queryset: QuerySet):
        self.queryset = queryset

    def count(self) -> int:
        return self.queryset.count()

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, index):
        rows = self.queryset.values_list("item_id", "snapshot__content")[index]
        known = set(CONTENT_FIELDS)
        return [
            PublishedRow(item_id, **{k: v for k, v in content.items() if k in known})
            for item_id, content in rows
        ]


def version_page(version: DatasetVersion, q: str, number) -> Page:
    """One page of a published version's items, in order; `q` matches an id or the question.
    Two queries whatever the size (count, then the page with its snapshots)."""
    qs = PublishedItem.objects.filter(version=version).order_by("position")
    if q:
        qs = qs.filter(Q(item_id=q) | Q(snapshot__content__question__icontains=q))
    return Paginator(_PublishedRows(qs), PAGE_SIZE).get_page(number)


def version_items(version: DatasetVersion) -> Iterator[dict]:
    """Every item of a published version, in order, streamed: {'id': ..., **content}, with
    fields newer than the snapshot filled in (an old snapshot has no expected_tools)."""
    rows = (
        PublishedItem.objects.filter(version=version)
        .order_by("position")
        .values_list("item_id", "snapshot__content")
        .iterator(chunk_size=2000)
    )
    for item_id, content in rows:
        yield {"id": item_id, **content_with_defaults(content)}


def draft_export_items(dataset: Dataset) -> Iterator[dict]:
    rows = dataset.draft_items.order_by("position", "id").values("item_id", *CONTENT_FIELDS)
    for row in rows.iterator(chunk_size=2000):
        row["id"] = row.pop("item_id")
        yield row


def version_manifest(version: DatasetVersion | None) -> dict[str, str]:
    if version is None:
        return {}
    return dict(
        PublishedItem.objects.filter(version=version).values_list(
            "item_id", "snapshot__content_hash"
        )
    )


def draft_manifest(dataset: Dataset) -> dict[str, str]:
    return dict(dataset.draft_items.values_list("item_id", "content_hash"))


@dataclass
class ManifestDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict:
        return {
            "added": len(self.added),
            "removed": len(self.removed),
            "changed": len(self.changed),
        }

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def diff_manifests(old: dict[str, str], new: dict[str, str]) -> ManifestDiff:
    return ManifestDiff(
        added=[i for i in new if i not in old],
        removed=[i for i in old if i not in new],
        changed=[i for i in new if i in old and old[i] != new[i]],
    )


def version_diff_summary(old: DatasetVersion | None, new: DatasetVersion) -> dict:
    return diff_manifests(version_manifest(old), version_manifest(new)).summary


def item_checks(version: DatasetVersion) -> list[str]:
    """Which checks the version's items call for, counted in one pass over its items: the safety
    variables they carry (console.datasets.safety.CHECK_VARIABLES), and "expected_tools" when
    any item expects tool calls."""
    expects_tools = Q(snapshot__content__has_key="expected_tools") & ~Q(
        snapshot__content__expected_tools=[]
    )
    counts = version.items.aggregate(
        **{
            name: Count("pk", filter=Q(snapshot__content__variables__has_key=name))
            for name in safety.CHECK_VARIABLES
        },
        expected_tools=Count("pk", filter=expects_tools),
    )
    return [name for name in [*safety.CHECK_VARIABLES, "expected_tools"] if counts[name]]


def latest_version(dataset: Dataset) -> DatasetVersion | None:
    if not dataset.latest_number:
        return None
    return DatasetVersion.objects.filter(head=dataset, number=dataset.latest_number).first()


def _version_contents(version: DatasetVersion, ids: list[str]) -> dict[str, dict]:
    rows = PublishedItem.objects.filter(version=version, item_id__in=ids).values_list(
        "item_id", "snapshot__content"
    )
    # Filled in, so an old snapshot diffs against the draft without a spurious empty field.
    return {item_id: content_with_defaults(content) for item_id, content in rows}


def _draft_contents(dataset: Dataset, ids: list[str]) -> dict[str, dict]:
    rows = dataset.draft_items.filter(item_id__in=ids).values("item_id", *CONTENT_FIELDS)
    return {r.pop("item_id"): r for r in rows}


@dataclass
class ItemChange:
    item_id: str
    status: str  # added | removed | changed
    question: str
    fields: list[FieldDiff]


def detailed_diff(
    dataset: Dataset, old: DatasetVersion | None, new: DatasetVersion | None, limit: int = 100
) -> tuple[ManifestDiff, list[ItemChange]]:
    """Diff two versions (`new=None` means the draft), with field diffs for the first items."""
    old_manifest = version_manifest(old)
    new_manifest = version_manifest(new) if new is not None else draft_manifest(dataset)
    diff = diff_manifests(old_manifest, new_manifest)
    shown = (
        [("changed", i) for i in diff.changed]
        + [("added", i) for i in diff.added]
        + [("removed", i) for i in diff.removed]
    )[:limit]
    ids_new = [i for s, i in shown if s != "removed"]
    ids_old = [i for s, i in shown if s != "added"]
    new_contents = (
        _version_contents(new, ids_new) if new is not None else _draft_contents(dataset, ids_new)
    )
    old_contents = _version_contents(old, ids_old) if old is not None else {}
    changes = []
    for status, item_id in shown:
        before, after = old_contents.get(item_id, {}), new_contents.get(item_id, {})
        fields = [d for d in diff_contents(before, after) if d.changed]
        question = (after or before).get("question", "")
        changes.append(ItemChange(item_id, status, question, fields))
    return diff, changes


# ---------------------------------------------------------------- quality hints


WORD = re.compile(r"\w+")


def _keys(question: str) -> tuple[str, str]:
    """(normalised text, near-duplicate signature): the words in order, and the set of words
    that are not stopwords, sorted."""
    words = WORD.findall(question.lower())
    return " ".join(words), " ".join(sorted(set(words) - STOPWORDS))


@dataclass
class QualityHints:
    total: int
    no_expected_facts: list[str]
    duplicates: list[list[tuple[str, str]]]
    near_duplicates: list[list[tuple[str, str]]]
    rare_tags: list[tuple[str, int]]
    unanswerable: int

    @property
    def unanswerable_advice(self) -> str:
        if self.total >= 50 and self.unanswerable < 5:
            return "Add unanswerable cases: guidance is 5-10 in a set of 50 or more."
        if self.total and self.unanswerable > max(10, self.total // 4):
            return "Many unanswerable cases: make sure answerable questions dominate."
        return ""


def quality_hints(dataset: Dataset) -> QualityHints:
    """One pass over the draft (two columns + lists), fast enough at 10,000 items."""
    # No JSON decoding per row: emptiness of the facts is decided in SQL, tags come from the
    # comma-joined tags_text column.
    rows = (
        dataset.draft_items.order_by("position", "id")
        .annotate(
            has_facts=ExpressionWrapper(
                ~Q(expected_contains=[]) | ~Q(expected_tools=[]), output_field=BooleanField()
            )
        )
        .values_list("item_id", "question", "has_facts", "unanswerable", "tags_text")
    )
    exact: dict[str, list[tuple[str, str]]] = defaultdict(list)
    near: dict[str, list[tuple[str, str]]] = defaultdict(list)
    tag_counts: Counter[str] = Counter()
    no_facts: list[str] = []
    total = unanswerable = 0
    for item_id, question, has_facts, is_unanswerable, tags in rows.iterator(chunk_size=2000):
        total += 1
        unanswerable += bool(is_unanswerable)
        if not has_facts and not is_unanswerable:
            no_facts.append(item_id)
        normalised, signature = _keys(question)
        exact[normalised].append((item_id, question))
        near[signature].append((item_id, question))
        if tags:
            tag_counts.update(t for t in tags.split(",") if t)
    duplicates = [group for key, group in exact.items() if key and len(group) > 1]
    duplicate_ids = {i for group in duplicates for i, _ in group}
    near_duplicates = [
        group
        for key, group in near.items()
        if key and len(group) > 1 and not {i for i, _ in group} <= duplicate_ids
    ]
    return QualityHints(
        total=total,
        no_expected_facts=no_facts,
        duplicates=duplicates,
        near_duplicates=near_duplicates,
        rare_tags=sorted((t, n) for t, n in tag_counts.items() if n < FEW_ITEMS_PER_TAG),
        unanswerable=unanswerable,
    )


def all_tags(dataset: Dataset) -> list[str]:
    tags: set[str] = set()
    for row in (
        dataset.draft_items.exclude(tags_text="")
        .order_by()
        .values_list("tags_text", flat=True)
        .distinct()
    ):
        tags.update(t for t in row.split(",") if t)
    return sorted(tags)


# ---------------------------------------------------------------- prompt variables
#
# Which prompts are "evaluated on" a set is known only to a layer above this one (eval runs),
# which this app must not import. That layer registers a source at startup instead: a function
# dataset → QuerySet of PromptVersion ids, used here as a subquery (it runs no query itself).

EvaluatedPrompts = Callable[[Dataset], QuerySet]
_evaluated_prompt_sources: list[EvaluatedPrompts] = []


def register_evaluated_prompts(source: EvaluatedPrompts) -> None:
    if source not in _evaluated_prompt_sources:
        _evaluated_prompt_sources.append(source)


@dataclass(frozen=True)
class VariableGap:
    """A variable a prompt version declares that some draft items do not fill."""

    prompt: str  # "support-answer@3": the newest checked version declaring it
    variable: str
    missing: int
    total: int
    also: list[int]  # older checked versions of the same prompt that declare it too


def checked_prompt_versions(dataset: Dataset) -> QuerySet:
    """Prompt versions whose variables the set should fill: every version evaluated on any
    version of the set, and the versions now live (in any environment) of those prompts."""
    if not _evaluated_prompt_sources:
        return PromptVersion.objects.none()
    evaluated = Q()
    for source in _evaluated_prompt_sources:
        evaluated |= Q(pk__in=source(dataset))
    live = PromptBinding.objects.filter(
        environment__application_id=dataset.application_id,
        head__in=PromptVersion.objects.filter(evaluated).values("head"),
    ).values("version")
    return PromptVersion.objects.filter(evaluated | Q(pk__in=live))


def prompt_variable_gaps(dataset: Dataset) -> list[VariableGap]:
    """Per prompt and declared variable, how many draft items do not fill it (an eval makes
    those items errors). Two queries whatever the number of prompts, runs or items: the
    checked versions' declared variables, then one count per variable in a single pass."""
    declared: dict[str, dict[str, list[int]]] = {}  # prompt key → variable → versions, newest 1st
    rows = (
        checked_prompt_versions(dataset)
        .order_by("head__key", "-number")
        .values_list("head__key", "number", "content__variables")
    )
    for key, number, variables in rows:
        by_name = declared.setdefault(key, {})
        for name in variables or []:
            if isinstance(name, str) and name not in ITEM_FIELD_VARIABLES:
                by_name.setdefault(name, []).append(number)
    names = sorted({name for by_name in declared.values() for name in by_name})
    if not names:
        return []
    counts = dataset.draft_items.aggregate(
        total=Count("id"),
        **{
            f"missing_{n}": Count("id", filter=~Q(variables__has_key=name))
            for n, name in enumerate(names)
        },
    )
    missing = {name: counts[f"missing_{n}"] for n, name in enumerate(names)}
    gaps = []
    for key, by_name in declared.items():
        ordered = sorted(by_name.items(), key=lambda pair: -pair[1][0])  # newest version first
        for name, numbers in ordered:
            if missing[name]:
                gaps.append(
                    VariableGap(
                        prompt=f"{key}@{numbers[0]}",
                        variable=name,
                        missing=missing[name],
                        total=counts["total"],
                        also=sorted(numbers[1:]),
                    )
                )
    return gaps
