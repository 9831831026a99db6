"""Property test: any valid set of config values survives save, then load."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config import load_config, save_config
from app.config_schema import ENDPOINT_SCHEMA, Field, all_fields, endpoint_field

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


def _values(field: Field) -> st.SearchStrategy[Any]:
    if field.type is bool:
        return st.booleans()
    if field.type is str:
        return st.sampled_from(field.choices) if field.choices else _text
    if field.type is list:
        items = st.sampled_from(field.choices) if field.choices else _text
        return st.lists(items, max_size=4)
    lo, hi = field.min, field.max
    if field.type is int:
        return st.integers(int(lo), int(hi))
    return st.floats(lo, hi, allow_nan=False, exclude_min=field.min_exclusive,
                     exclude_max=field.max_exclusive)


_FIELDS = all_fields()
_endpoint_names = st.sampled_from(["lab", "local-1", "Big_Box"])


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(_FIELDS), unique_by=lambda f: f.dotted, max_size=12))
    values = {f.dotted: draw(_values(f)) for f in chosen}
    for name in draw(st.lists(_endpoint_names, unique=True, max_size=2)):
        for key in draw(st.lists(st.sampled_from(list(ENDPOINT_SCHEMA)), unique=True, min_size=1)):
            field = endpoint_field(name, key)
            values[field.dotted] = draw(_values(field))
        port = draw(st.integers(1, 65535))
        values[f"remote.{name}.base_url"] = f"http://127.0.0.1:{port}/v1"  # a required key
    return values


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=configs(), start_from_template=st.booleans())
def test_random_valid_configs_survive_save_then_load(
    values: dict[str, Any], start_from_template: bool
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        config = load_config(path, env={}, create=start_from_template)
        for dotted, value in values.items():
            config.set(dotted, value)
        save_config(config)
        loaded = load_config(path, env={})
        assert loaded.warnings == []
        for dotted, value in values.items():
            assert loaded.get(dotted) == value, dotted
            assert loaded.source(dotted) == "file"
        # and a second round trip changes nothing
        text = path.read_text(encoding="utf-8")
        save_config(loaded)
        assert path.read_text(encoding="utf-8") == text
