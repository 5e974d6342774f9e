import math

import pytest

from mcgenref.errors import ConfigError
from mcgenref.io import parse_pixel_spacing
from mcgenref.io.spacing import validate_spacing


def test_square_and_pair() -> None:
    assert parse_pixel_spacing("0.1") == (0.1, 0.1)
    assert parse_pixel_spacing(" 0.1 , 0.08 ") == (0.1, 0.08)
    assert parse_pixel_spacing("0.07\\0.05") == (0.07, 0.05)


@pytest.mark.parametrize(
    "text", ["", "abc", "0.1,", ",0.1", "0.1,0.1,0.1", "0", "-0.1", "nan", "inf", "5", "0.001", "1e9"]
)
def test_refused(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_pixel_spacing(text)
    assert "\n" not in str(exc.value)


def test_validate() -> None:
    assert validate_spacing(0.2) == (0.2, 0.2)
    assert validate_spacing((0.1, 0.05)) == (0.1, 0.05)
    for bad in (0.0, -1.0, math.nan, math.inf, 2.0, (0.1,), (0.1, 0.0), True, "x"):
        with pytest.raises(ConfigError):
            validate_spacing(bad)  # type: ignore[arg-type]
