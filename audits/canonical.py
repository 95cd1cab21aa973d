"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and the digests built on it.

Hashes and signatures are taken over these bytes, so two parties that hold the same data always
produce the same digest. Keys are sorted by UTF-16 code units, no insignificant whitespace,
strings are minimally escaped UTF-8, numbers are written as ECMAScript writes them.
"""

import hashlib
import json
import math
from decimal import Decimal
from typing import Any


class CanonicalJSONError(ValueError):
    pass


def _number(value: float) -> str:
    if not math.isfinite(value):
        raise CanonicalJSONError("NaN and infinity have no JSON form")
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    # repr gives the shortest round-tripping digits; re-lay them out by ECMAScript's rules.
    parts = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, parts.digits)).rstrip("0") or "0"
    # The position of the decimal point in digits (a finite value has an int exponent).
    point = len(parts.digits) + int(parts.exponent)
    sign = "-" if value < 0 else ""
    if 0 < point <= 21:
        whole, frac = digits[:point].ljust(point, "0"), digits[point:]
        return sign + whole + ("." + frac if frac else "")
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    exponent = point - 1
    body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{body}e{'+' if exponent > 0 else '-'}{abs(exponent)}"


def _encode(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(item) for item in value) + "]"
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise CanonicalJSONError("object keys must be strings")
        keys = sorted(value, key=lambda key: key.encode("utf-16-be"))
        return "{" + ",".join(f"{_encode(key)}:{_encode(value[key])}" for key in keys) + "}"
    raise CanonicalJSONError(f"{type(value).__name__} has no canonical JSON form")


def canonical_json(value: Any) -> bytes:
    return _encode(value).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_digest(value: Any) -> str:
    """sha256 (hex) of the canonical JSON of value."""
    return sha256_hex(canonical_json(value))
