import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcgenref.errors import InputError
from mcgenref.io import Normalization, fit_normalization


def test_fit_apply_invert() -> None:
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1000, (64, 64)).astype(np.float32)
    mask = np.zeros_like(img, dtype=bool)
    mask[10:50, 10:50] = True
    img[~mask] = -5000  # outside the mask: ignored
    n = fit_normalization(img, mask)
    assert n.low == pytest.approx(np.percentile(img[mask], 1))
    assert n.high == pytest.approx(np.percentile(img[mask], 99))
    v = n.apply(img)
    assert v.dtype == np.float32 and v.shape == img.shape
    assert np.percentile(v[mask], 1) == pytest.approx(0.0, abs=1e-5)
    assert np.percentile(v[mask], 99) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(n.invert(v)[mask], img[mask], rtol=1e-5, atol=1e-2)
    d = n.to_dict()
    assert Normalization(**d) == n


def test_errors() -> None:
    img = np.ones((8, 8), np.float32)
    with pytest.raises(InputError):
        fit_normalization(img, np.zeros((8, 8), bool))
    with pytest.raises(InputError):
        fit_normalization(img, np.ones((8, 8), bool))
    with pytest.raises(ValueError):
        fit_normalization(img, np.ones((4, 4), bool))
    with pytest.raises(ValueError):
        Normalization(1.0, 1.0)


@settings(max_examples=50, deadline=None)
@given(
    low=st.floats(-1e4, 1e4),
    span=st.floats(1e-2, 1e4),
    x=st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=20),
)
def test_roundtrip(low: float, span: float, x: list[float]) -> None:
    n = Normalization(low, low + span)
    arr = np.array(x, dtype=np.float32)
    np.testing.assert_allclose(n.invert(n.apply(arr)), arr, rtol=1e-3, atol=1e-3 * (abs(low) + span))


def test_large_images_are_fitted_on_a_sub_grid_close_to_the_full_fit() -> None:
    from mcgenref.io.normalize import MAX_FIT_PIXELS

    rng = np.random.default_rng(0)
    rows = int(np.sqrt(MAX_FIT_PIXELS * 2.5)) + 1  # 2.5 x the limit: every 2nd row and column
    image = rng.gamma(4.0, 100.0, (rows, rows)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[:, : rows * 2 // 3] = True
    full = np.percentile(image[mask], [1, 99])
    fit = fit_normalization(image, mask)
    # a 1.4 Mpx sample: percentiles within 0.5 % of the range of the whole image's
    assert abs(fit.low - full[0]) < 0.005 * (full[1] - full[0])
    assert abs(fit.high - full[1]) < 0.005 * (full[1] - full[0])
    # at or under the limit every pixel counts (exactly np.percentile)
    small = image[:1000, :1000]
    exact = fit_normalization(small, mask[:1000, :1000])
    assert (exact.low, exact.high) == tuple(np.percentile(small[mask[:1000, :1000]], [1, 99]))


def test_apply_in_place_overwrites_only_a_float32_input() -> None:
    norm = Normalization(10.0, 30.0)
    x = np.array([[10.0, 20.0], [30.0, 50.0]], dtype=np.float32)
    expect = norm.apply(x)
    assert expect is not x and np.array_equal(x[0], [10.0, 20.0])
    out = norm.apply(x, in_place=True)
    assert out is x and np.array_equal(out, expect)
    ints = np.array([10, 20], dtype=np.uint16)
    assert norm.apply(ints, in_place=True).dtype == np.float32 and ints.tolist() == [10, 20]
