"""`mediaserver config` writes each setting as the environment would hold it, and reads it back."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import GiB, MiB, Settings, _bool, _list, _size, describe, describe_json, format_value

OPTIONS = Settings.options()


@pytest.mark.parametrize("name,opt", OPTIONS, ids=[opt.env for _, opt in OPTIONS])
def test_every_default_round_trips(name, opt):
    text = format_value(opt.parse, opt.default)
    assert opt.parse(text) == opt.default
    assert "(" not in text and "'" not in text  # no Python reprs such as ('*',)


def test_the_printed_listing_is_an_env_file_that_gives_the_defaults():
    env = {}
    for line in describe().splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        env[name] = value
    assert set(env) == {opt.env for _, opt in OPTIONS}
    assert Settings.from_env(env) == Settings.from_env({})
    assert env["CORS_ORIGINS"] == "*" and env["FILE_SHA256"] == "true" and env["PART_SIZE"] == "8MiB"
    assert env["TUS_MAX_SIZE"] == "50GiB" and env["MIN_BODY_RATE"] == "16KiB" and env["SHUTDOWN_TIMEOUT"] == "90"
    assert env["ALLOWED_TYPES"] == "images,videos,files" and env["S3_BUCKET"] == ""


def test_the_json_form_holds_the_same_values():
    listing = json.loads(describe_json())
    assert [name for name in listing] == [opt.env for _, opt in OPTIONS]
    for _, opt in OPTIONS:
        assert opt.parse(listing[opt.env]["default"]) == opt.default
        assert listing[opt.env]["help"] == opt.help


@given(st.integers(min_value=0, max_value=2**50))
def test_sizes_round_trip_with_the_largest_whole_unit(value):
    text = format_value(_size, value)
    assert _size(text) == value
    if value and value % MiB == 0 and value % GiB:
        assert text.endswith("MiB")


@given(st.floats(allow_nan=False))
def test_floats_round_trip(value):
    assert float(format_value(float, value)) == value


@given(st.integers(min_value=-2**63, max_value=2**63))
def test_ints_round_trip(value):
    assert int(format_value(int, value)) == value


@given(st.booleans())
def test_booleans_round_trip(value):
    assert _bool(format_value(_bool, value)) is value


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters=",", blacklist_categories=("Z", "Cc")), min_size=1), max_size=5))
def test_lists_round_trip(items):
    items = tuple(item.strip() for item in items if item.strip())
    assert _list(format_value(_list, items)) == items
