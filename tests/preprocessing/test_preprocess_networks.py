"""The median selection networks in preprocess_math.h, checked exhaustively.

0-1 principle: a comparator network selects the k-th smallest of any input
iff it does so for every 0/1 input.  All 2^9 and 2^25 0/1 inputs are run at
once as bit-sliced vectors (min = AND, max = OR).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import REPO

HEADER = REPO / "csrc" / "preprocess" / "preprocess_math.h"


def _network(name: str) -> list[tuple[int, int]]:
    text = HEADER.read_text()
    body = re.search(name + r"\[\w+\]\[2\] = \{(.*?)\};", text, re.S).group(1)
    return [(int(a), int(b)) for a, b in re.findall(r"\{(\d+),\s*(\d+)\}", body)]


@pytest.mark.parametrize("name,k", [("kMedian9", 9), ("kMedian25", 25)])
def test_network_selects_the_median(name, k):
    pairs = _network(name)
    assert len(pairs) == {9: 24, 25: 113}[k]
    combos = np.arange(1 << k, dtype=np.uint32)
    lanes = [np.packbits(((combos >> i) & 1).astype(np.uint8), bitorder="little") for i in range(k)]
    for a, b in pairs:
        assert 0 <= a < b < k
        lo, hi = lanes[a] & lanes[b], lanes[a] | lanes[b]
        lanes[a], lanes[b] = lo, hi
    ones = np.bitwise_count(combos)
    want = np.packbits((ones > k // 2).astype(np.uint8), bitorder="little")
    assert np.array_equal(lanes[k // 2], want)
