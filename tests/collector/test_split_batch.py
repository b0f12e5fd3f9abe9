"""split_batch (liveprofile.buffer.ingest): the element-by-element decoding a batch falls back to
when one event is nested deeper than either JSON decoder goes. Property: on any batch body both
decoders accept, it gives exactly what orjson gives; a too-deep element becomes TooDeep holding its
exact bytes (or its decoded structure where the standard library still decodes it), wherever it sits,
and the other elements are decoded exactly; a body that is not a batch object is a ValueError, never a crash."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveprofile.buffer.ingest import TooDeep, split_batch

scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=12)
events = st.lists(st.dictionaries(st.text(max_size=6), values, max_size=4), max_size=6)
extras = st.dictionaries(st.sampled_from(["sentAt", "context", "integrations", "x"]), values, max_size=3)


@settings(max_examples=300, deadline=None)
@given(events=events, extra=extras, batch_first=st.booleans(), deep_at=st.none() | st.integers(0, 6))
def test_split_batch_agrees_with_orjson_and_isolates_too_deep_elements(
    events: list[dict], extra: dict, batch_first: bool, deep_at: int | None
) -> None:
    doc = {"batch": events, **extra} if batch_first else {**extra, "batch": events}
    body = orjson.dumps(doc)
    assert split_batch(body) == orjson.loads(body)
    if deep_at is None:
        return
    deep = b'{"v":' + b"[" * 1100 + b"]" * 1100 + b"}"
    items = [orjson.dumps(e) for e in events]
    at = min(deep_at, len(items))
    items.insert(at, deep)
    head = orjson.dumps({k: v for k, v in doc.items() if k != "batch"})
    body = head[:-1] + (b"," if len(head) > 2 else b"") + b'"batch":[' + b" , ".join(items) + b"]}"
    got = split_batch(body)
    el = got["batch"][at]
    # TooDeep with its exact bytes, or (where the standard library's recursion limit still
    # allowed it) the decoded structure, which prepare() dead-letters as too deep to store
    assert (isinstance(el, TooDeep) and el.raw.strip() == deep) or (isinstance(el, dict) and list(el) == ["v"])
    assert [e for i, e in enumerate(got["batch"]) if i != at] == events


@pytest.mark.parametrize("body", [b"", b"[]", b'{"batch": 3}', b'{"batch": [1, }', b'{"a": [}', b'{"batch": [1]', b'{"batch": [1]}}', b'"x"'])
def test_not_a_batch_object_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError, match="batch"):
        split_batch(body)
