import pytest

from console.core.canonical import canonical_json, content_hash
from console.core.diff import diff_contents, line_rows


def test_canonical_json_sorts_keys_and_drops_whitespace():
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == '{"a":[1,{"c":3,"d":2}],"b":1}'


def test_whole_floats_hash_like_integers_so_db_round_trips_do_not_change_identity():
    assert content_hash({"t": 1.0}) == content_hash({"t": 1})
    assert content_hash({"t": 0.5}) != content_hash({"t": 0.6})


def test_canonical_json_keeps_unicode_and_refuses_nan():
    assert canonical_json({"q": "Café"}) == '{"q":"Café"}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_field_level_diff_reports_added_removed_changed_paths():
    old = {"model": "a", "params": {"top_k": 5, "temp": 0.2}, "gone": True}
    new = {"model": "b", "params": {"top_k": 5, "temp": 0.2, "seed": 7}}
    status = {d.path: d.status for d in diff_contents(old, new)}
    assert status == {
        "model": "changed",
        "params.top_k": "same",
        "params.temp": "same",
        "gone": "removed",
        "params.seed": "added",
    }


def test_text_fields_diff_line_by_line_side_by_side():
    rows = line_rows("a\nb\nc", "a\nB\nc\nd")
    assert [(r.tag, r.old_no, r.new_no) for r in rows] == [
        ("equal", 1, 1),
        ("replace", 2, 2),
        ("equal", 3, 3),
        ("insert", None, 4),
    ]
    diff = {d.path: d for d in diff_contents({"system": "a\nb"}, {"system": "a\nc"})}
    assert diff["system"].is_text and diff["system"].status == "changed"
