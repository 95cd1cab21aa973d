"""Canonical JSON follows RFC 8785, so digests can be recomputed by any JCS implementation."""

import math

import pytest

from audits.canonical import CanonicalJSONError, canonical_json, json_digest


def test_keys_sorted_and_no_whitespace():
    assert canonical_json({"b": 1, "a": [True, None, "x"]}) == b'{"a":[true,null,"x"],"b":1}'


def test_keys_sort_by_utf16_code_units():
    # RFC 8785 section 3.2.3: U+10000 (a surrogate pair) sorts before U+FB33.
    value = {"\ufb33": 1, "\U00010000": 2, "a": 3}
    assert canonical_json(value) == '{"a":3,"\U00010000":2,"\ufb33":1}'.encode()


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (0.0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (0.85, "0.85"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (0.000001, "0.000001"),
        (123.456, "123.456"),
        (-2.5, "-2.5"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (333333333.3333333, "333333333.3333333"),
        (1e16 + 2, "10000000000000002"),
    ],
)
def test_numbers_are_written_as_ecmascript_writes_them(number, text):
    assert canonical_json(number) == text.encode()


def test_strings_are_minimally_escaped_utf8():
    assert canonical_json('é\n"\u2028') == '"é\\n\\"\u2028"'.encode()


@pytest.mark.parametrize("bad", [math.nan, math.inf, {1: "x"}, object()])
def test_values_without_a_canonical_form_are_refused(bad):
    with pytest.raises(CanonicalJSONError):
        canonical_json(bad)


def test_digest_is_independent_of_key_order():
    assert json_digest({"a": 1, "b": 2}) == json_digest({"b": 2, "a": 1})
