"""The per-worker memos' bound: at most `most` entries, the oldest leaving first."""

from __future__ import annotations

from gateway.bounded import remember


def test_the_oldest_entry_goes_when_the_memo_is_full_and_a_known_key_evicts_nothing() -> None:
    cache: dict[str, int] = {}
    for n in range(3):
        remember(cache, f"k{n}", n, 3)
    remember(cache, "k1", 10, 3)  # known: replaced in place, nothing leaves
    assert cache == {"k0": 0, "k1": 10, "k2": 2}
    remember(cache, "k3", 3, 3)  # new: k0, the oldest, leaves
    assert list(cache) == ["k1", "k2", "k3"]
