from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from mcgenref.config import from_dict, load_config, to_dict
from mcgenref.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    low_high: tuple[float, float] = (0.1, 1.0)
    kind: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    n: int = 3
    scale: float | None = None
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("n must be >= 0")


def test_round_trip_and_partial() -> None:
    cfg = Outer(n=5, scale=2.0, inner=Inner((0.2, 0.3), "b"))
    assert from_dict(Outer, to_dict(cfg)) == cfg
    partial = from_dict(Outer, {"inner": {"kind": "b"}})
    assert partial == Outer(inner=Inner(kind="b"))
    assert from_dict(Outer, {"n": 2}).scale is None


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"nn": 1}, "unknown key"),
        ({"n": "3"}, "expected an integer"),
        ({"n": True}, "expected an integer"),
        ({"inner": {"kind": "c"}}, "not one of"),
        ({"inner": {"low_high": [1.0]}}, "expected 2 values"),
        ({"n": -1}, "n must be"),
    ],
)
def test_bad_values_are_config_errors(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        from_dict(Outer, data)


def test_load_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(Outer, bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"n": 7}))
    assert load_config(Outer, good).n == 7
