"""The JSON provider: orjson's text reads back as what the standard library would write."""

from __future__ import annotations

import json

import numpy as np

from service.io.jsonio import dump


def test_floats_and_order_read_back_as_the_standard_librarys():
    rng = np.random.default_rng(3)
    probabilities = [float(p) for p in rng.dirichlet(np.ones(10)).astype(np.float32)]
    answer = {
        "model": {"name": "fashion_mnist", "version": 1},
        "predictions": [{"label": "Sneaker", "confidence": max(probabilities)}],
        "probabilities": dict(zip("jihgfedcba", probabilities + [1e-300, 5.9e-05], strict=False)),
        "detail": "é,👕",  # non-ASCII stays text
    }
    text = dump(answer)
    assert json.loads(text) == answer == json.loads(json.dumps(answer))
    assert list(json.loads(text)["probabilities"]) == list("jihgfedcba")  # insertion order
    assert b" " not in text and "é,👕".encode() in text  # compact; UTF-8, not escapes


def test_integers_beyond_64_bits_are_written_too():
    assert json.loads(dump({"n": 10**30, "m": [-(2**64)]})) == {"n": 10**30, "m": [-(2**64)]}


def test_a_lone_surrogate_is_written_as_its_escape():
    # Valid JSON a client may send ("id": "\ud800"), with no UTF-8 form: written back escaped.
    value = json.loads('{"id": "\\ud800x", "n": 100000000000000000000}')
    text = dump(value)
    assert text.isascii() and b"\\ud800x" in text
    assert json.loads(text) == value
