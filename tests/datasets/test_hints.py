"""Quality hints: what a curator should look at before publishing a golden set."""

from __future__ import annotations

import pytest

from console.datasets import selectors
from tests.datasets.helpers import HTMX, generated, seed, url


def item(item_id, question, facts=("fact",), tags=(), unanswerable=False):
    return {
        "id": item_id,
        "question": question,
        "expected_contains": list(facts),
        "tags": list(tags),
        "unanswerable": unanswerable,
    }


@pytest.fixture
def hinted(dataset):
    seed(
        dataset,
        [
            item("a1", "How long do I have to return an item?", tags=["refunds"]),
            item("a2", "how long do I have to RETURN an item", tags=["refunds"]),  # exact dup
            item("a3", "Return an item: how long do I have?", tags=["refunds"]),  # near dup
            item("b1", "What is the return window for shoes?", facts=(), tags=["shoes"]),
            item("b2", "Do you sell gift cards?", facts=(), tags=["gifts", "shoes"]),
            item("c1", "What will prices be next year?", facts=(), unanswerable=True),
            item("d1", "Which carrier do you use?", tags=["shipping"]),
            item("d2", "Which carriers do you use?", tags=["shipping"]),  # different words
        ],
    )
    return dataset


def test_hints_name_the_items_to_look_at(hinted):
    hints = selectors.quality_hints(hinted)
    assert hints.total == 8
    assert hints.unanswerable == 1
    assert hints.no_expected_facts == ["b1", "b2"]  # c1 is unanswerable: no facts expected
    assert [[i for i, _ in g] for g in hints.duplicates] == [["a1", "a2"]]
    assert [[i for i, _ in g] for g in hints.near_duplicates] == [["a1", "a2", "a3"]]
    assert hints.rare_tags == [("gifts", 1), ("shipping", 2), ("shoes", 2)]
    assert hints.unanswerable_advice == ""


def test_near_duplicates_that_are_all_exact_duplicates_are_not_repeated(dataset):
    seed(dataset, [item("x1", "Where is my order?"), item("x2", "where is my order")])
    hints = selectors.quality_hints(dataset)
    assert len(hints.duplicates) == 1
    assert hints.near_duplicates == []


def test_an_item_expecting_tool_calls_has_its_expectation(dataset):
    agent = item("t1", "Where is order A-1?", facts=())
    agent["expected_tools"] = [{"name": "lookup_order", "args": {"order_id": "A-1"}}]
    seed(dataset, [agent, item("t2", "Opening hours?", facts=())])
    assert selectors.quality_hints(dataset).no_expected_facts == ["t2"]


def test_a_clean_set_has_no_warnings(dataset):
    seed(
        dataset,
        [item(f"i{n}", f"Question about subject {n}?", tags=["common"]) for n in range(1, 4)],
    )
    hints = selectors.quality_hints(dataset)
    assert (hints.no_expected_facts, hints.duplicates, hints.near_duplicates) == ([], [], [])
    assert hints.rare_tags == []


@pytest.mark.parametrize(
    ("total", "unanswerable", "advice"),
    [
        (50, 4, "Add unanswerable cases"),
        (50, 5, ""),
        (49, 0, ""),  # small sets are not nagged
        (60, 16, "Many unanswerable cases"),
        (60, 15, ""),
        (60, 10, ""),
        (20, 11, "Many unanswerable cases"),
        (20, 10, ""),
    ],
)
def test_unanswerable_advice(dataset, total, unanswerable, advice):
    items = generated(total)
    for it in items[:unanswerable]:
        it["unanswerable"] = True
    seed(dataset, items)
    hints = selectors.quality_hints(dataset)
    assert hints.unanswerable == unanswerable
    assert hints.unanswerable_advice.startswith(advice) if advice else not hints.unanswerable_advice


def test_hints_fragment_renders_the_findings(curator_client, hinted):
    response = curator_client.get(url("hints", hinted), headers=HTMX)
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="hints"')
    assert "<strong>1</strong> unanswerable of 8" in body
    assert "<strong>2</strong> answerable items without expected facts or tool calls" in body
    assert '<a href="?q=b1">b1</a> <a href="?q=b2">b2</a>' in body
    assert "<strong>1</strong> duplicate question" in body
    assert "<strong>1</strong> near-duplicate group" in body
    assert '<a href="?tag=gifts">gifts</a> (1)' in body
    # Polls again when the table changes, not on a timer.
    assert 'hx-trigger="dataset-changed from:body delay:600ms"' in body


def test_the_editor_loads_hints_lazily(curator_client, hinted):
    body = curator_client.get(url("editor", hinted)).content.decode()
    assert 'hx-trigger="load"' in body
    assert "Checking…" in body


def test_questions_in_other_scripts_are_not_all_duplicates(dataset):
    seed(
        dataset,
        [
            item("ja-1", "返品はできますか？"),
            item("ja-2", "送料はいくらですか？"),
            item("ru-1", "Где мой заказ?"),
        ],
    )
    assert selectors.quality_hints(dataset).duplicates == []
