"""IdentityMemo: a value computed once per key object while remembered, the least
recently used forgotten first."""

from __future__ import annotations

from dataclasses import dataclass, field

from skit_pipelines.identity_memo import IdentityMemo


@dataclass(frozen=True)
class _Value:
    name: str
    detail: dict[str, int] = field(default_factory=dict)
    """Makes the value unhashable, as a Step's mappings do."""


def test_a_key_is_computed_once_while_remembered() -> None:
    computed: list[str] = []
    memo = IdentityMemo(lambda v: computed.append(v.name) or v.name.upper(), size=4)
    key = _Value("a")

    assert (memo(key), memo(key)) == ("A", "A")
    assert computed == ["a"]


def test_an_equal_key_is_another_key() -> None:
    computed: list[str] = []
    memo = IdentityMemo(lambda v: computed.append(v.name) or object(), size=4)
    key = _Value("a")

    assert memo(_Value("a")) is not memo(key)
    assert computed == ["a", "a"]


def test_the_least_recently_used_key_is_forgotten_first() -> None:
    memo = IdentityMemo(lambda v: object(), size=2)
    a, b, c = _Value("a"), _Value("b"), _Value("c")
    value_a, value_b = memo(a), memo(b)
    memo(a)  # used again: b is now the oldest
    memo(c)

    assert memo(a) is value_a
    assert memo(b) is not value_b
