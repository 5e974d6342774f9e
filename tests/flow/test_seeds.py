"""Seeds checked against answers known by hand: blob moments, NMS in mm, disc sizes.

A Gaussian sampled at the integer pixel centres with sigma >= 1 px keeps its continuous
mean and variance to far better than 1e-3 px (the sampling error falls like
exp(-2 pi^2 sigma^2)); truncation at 4 sigma removes 0.1 % of the variance. So the
centroid and second moments of a rendered blob are the seed's sub-pixel centre and sigma.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcgenref.flow.seeds import (
    Seed,
    SeedConfig,
    find_seeds,
    render_seed_map,
    seed_positions,
    seeds_from_logits,
    seeds_from_probability,
    seeds_from_records,
)

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def moments(image: np.ndarray) -> tuple[float, float, float, float]:
    """Centroid (row, col) and standard deviation (row, col) of a non-negative image."""
    rows, cols = np.indices(image.shape, dtype=np.float64)
    total = image.sum(dtype=np.float64)
    mr, mc = (rows * image).sum() / total, (cols * image).sum() / total
    vr = (((rows - mr) ** 2) * image).sum() / total
    vc = (((cols - mc) ** 2) * image).sum() / total
    return float(mr), float(mc), math.sqrt(vr), math.sqrt(vc)


def disc(
    shape: tuple[int, int],
    centre: tuple[float, float],
    radius_mm: float,
    spacing: tuple[float, float],
) -> np.ndarray:
    rows, cols = np.indices(shape, dtype=np.float64)
    d2 = ((rows - centre[0]) * spacing[0]) ** 2 + ((cols - centre[1]) * spacing[1]) ** 2
    return (d2 <= radius_mm**2).astype(np.float64)


def test_one_seed_is_a_gaussian_with_the_right_centre_amplitude_and_sigma_per_axis() -> None:
    spacing = (0.1, 0.05)  # rows twice as coarse as columns
    config = SeedConfig(blob_sigma_scale=0.5)
    seed = Seed(row=30.3, col=41.7, size_mm=0.6, strength=0.8)
    seed_map = render_seed_map([seed], (64, 96), spacing, config)
    assert seed_map.dtype == np.float32 and seed_map.shape == (64, 96)

    mr, mc, sr, sc = moments(seed_map)
    assert abs(mr - seed.row) < 0.05 and abs(mc - seed.col) < 0.05
    sigma_mm = 0.6 * 0.5
    assert sr == pytest.approx(sigma_mm / spacing[0], rel=0.01)  # 3 px
    assert sc == pytest.approx(sigma_mm / spacing[1], rel=0.01)  # 6 px
    assert np.unravel_index(seed_map.argmax(), seed_map.shape) == (30, 42)

    # on a pixel centre the peak is the strength exactly
    on_pixel = render_seed_map([Seed(20.0, 30.0, 0.6, 0.8)], (64, 96), spacing, config)
    assert on_pixel[20, 30] == pytest.approx(0.8, abs=1e-7)
    assert on_pixel.max() == on_pixel[20, 30]


def test_tiny_seeds_get_the_minimum_sigma_and_blobs_overlap_by_max() -> None:
    config = SeedConfig(min_sigma_mm=0.2)
    spacing = (0.1, 0.1)
    tiny = render_seed_map([Seed(20.0, 20.0, 0.05, 1.0)], (40, 40), spacing, config)
    assert moments(tiny)[2] == pytest.approx(2.0, rel=0.01)
    # two blobs on top of each other: max, not sum, so the stronger one's strength wins
    both = render_seed_map(
        [Seed(20.0, 20.0, 0.5, 0.4), Seed(20.0, 20.0, 0.5, 0.7)], (40, 40), spacing, config
    )
    assert both.max() == pytest.approx(0.7, abs=1e-7)
    # a seed outside the image draws only its tail inside, or nothing
    assert render_seed_map([Seed(-200.0, 5.0, 0.5, 1.0)], (40, 40), spacing, config).max() == 0


def test_nms_merges_maxima_closer_than_the_radius_in_mm() -> None:
    spacing = (0.1, 0.05)
    config = SeedConfig(nms_radius_mm=0.5, min_prob=0.3)

    def two_peaks(offset: tuple[int, int]) -> list[Seed]:
        prob = np.zeros((80, 80))
        prob[40, 30] = 0.9
        prob[40 + offset[0], 30 + offset[1]] = 0.7
        return seeds_from_probability(prob, spacing, config)

    # 0.3 mm apart: 6 columns (0.05 mm) or 3 rows (0.1 mm): one seed, the stronger
    for offset in [(0, 6), (3, 0)]:
        seeds = two_peaks(offset)
        assert [(s.row, s.col, s.strength) for s in seeds] == [(40.0, 30.0, 0.9)]
    # 1 mm apart: 20 columns or 10 rows: two seeds, strongest first
    for offset in [(0, 20), (10, 0)]:
        seeds = two_peaks(offset)
        assert [(s.row, s.col) for s in seeds] == [
            (40.0, 30.0),
            (40.0 + offset[0], 30.0 + offset[1]),
        ]
        assert [s.strength for s in seeds] == [0.9, 0.7]
    # 8 px apart is 0.4 mm along the columns (merged) but 0.8 mm along the rows (kept)
    assert len(two_peaks((0, 8))) == 1 and len(two_peaks((8, 0))) == 2


def test_min_prob_drops_weak_maxima_and_keeps_weak_but_sufficient_ones() -> None:
    prob = np.zeros((40, 60))
    prob[10, 10], prob[10, 40], prob[30, 30] = 0.9, 0.35, 0.2
    seeds = seeds_from_probability(prob, (0.1, 0.1), SeedConfig(min_prob=0.3))
    assert [(s.row, s.col, s.strength) for s in seeds] == [(10.0, 10.0, 0.9), (10.0, 40.0, 0.35)]
    assert seeds_from_probability(prob, (0.1, 0.1), SeedConfig(min_prob=0.95)) == []


def test_order_is_strongest_first_then_raster_and_region_filters() -> None:
    prob = np.zeros((40, 40))
    prob[30, 5] = prob[5, 30] = prob[20, 20] = 0.6
    prob[35, 35] = 0.9
    seeds = seeds_from_probability(prob, (0.1, 0.1), SeedConfig())
    assert [(s.row, s.col) for s in seeds] == [(35, 35), (5, 30), (20, 20), (30, 5)]
    region = np.zeros((40, 40), dtype=bool)
    region[:25, :] = True
    seeds = seeds_from_probability(prob, (0.1, 0.1), SeedConfig(), region=region)
    assert [(s.row, s.col) for s in seeds] == [(5, 30), (20, 20)]


@pytest.mark.parametrize("spacing", [(0.05, 0.05), (0.1, 0.05)])
@pytest.mark.parametrize("diameter_mm", [0.3, 0.6, 0.9])
def test_size_of_a_disc_is_its_diameter_within_a_pixel(
    spacing: tuple[float, float], diameter_mm: float
) -> None:
    centre = (40.4, 50.6)
    prob = 0.9 * disc((80, 100), centre, diameter_mm / 2, spacing)
    seeds = seeds_from_probability(prob, spacing, SeedConfig())
    assert len(seeds) == 1  # a plateau is one candidate, at its centroid
    (seed,) = seeds
    assert seed.size_mm == pytest.approx(diameter_mm, abs=min(spacing))
    assert seed.strength == pytest.approx(0.9)
    assert abs(seed.row - centre[0]) <= 0.5 and abs(seed.col - centre[1]) <= 0.5


def test_sizes_of_touching_discs_are_split_between_their_seeds() -> None:
    # two 0.6 mm discs, 0.8 mm apart, joined by a bridge above half the peak: each seed
    # keeps only its own half (Voronoi split), not the union
    spacing = (0.05, 0.05)
    prob = 0.9 * np.maximum(
        disc((60, 100), (30, 34), 0.3, spacing), disc((60, 100), (30, 50), 0.3, spacing)
    )
    prob[30, 40:45] = np.maximum(prob[30, 40:45], 0.6)  # lower than the discs: no maximum
    seeds = seeds_from_probability(prob, spacing, SeedConfig())
    assert len(seeds) == 2
    for seed in seeds:
        assert seed.size_mm == pytest.approx(0.6, abs=0.05)


def test_records_to_seeds_to_map_and_back() -> None:
    spacing = (0.08, 0.06)
    records = [
        {"x_px": 20.3, "y_px": 15.6, "size_mm": 0.5, "visible": True, "cnr": 4.0},
        {"x_px": 60.0, "y_px": 40.2, "size_mm": 0.3, "visible": True, "cnr": 6.0},
        {"x_px": 40.0, "y_px": 30.0, "size_mm": 0.4, "visible": False, "cnr": 1.0},
    ]
    seeds = seeds_from_records(records)
    assert seeds == [Seed(15.6, 20.3, 0.5, 1.0), Seed(40.2, 60.0, 0.3, 1.0)]
    assert len(seeds_from_records(records, only_visible=False)) == 3

    config = SeedConfig()
    seed_map = render_seed_map(seeds, (64, 96), spacing, config)
    back = seeds_from_probability(seed_map, spacing, config)
    assert len(back) == 2
    back = sorted(back, key=lambda s: s.col)
    for original, found in zip(seeds, back, strict=True):
        # parabolic sub-pixel refinement of a sampled Gaussian's peak: well inside 0.2 px
        assert abs(found.row - original.row) < 0.2 and abs(found.col - original.col) < 0.2
        assert found.strength == pytest.approx(1.0, abs=0.05)
        # the half-peak diameter of a round Gaussian blob is its FWHM = 2.355 sigma
        fwhm = FWHM_PER_SIGMA * original.size_mm * config.blob_sigma_scale
        assert found.size_mm == pytest.approx(fwhm, abs=max(spacing))


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        SeedConfig(min_prob=0.0)
    with pytest.raises(ValueError):
        Seed(1.0, 1.0, 0.5, 1.5)
    with pytest.raises(ValueError):
        seeds_from_probability(np.zeros((4, 4, 1)), (0.1, 0.1), SeedConfig())
    with pytest.raises(ValueError):
        render_seed_map([], (4, 4), (0.1, 0.0), SeedConfig())
    assert seeds_from_probability(np.zeros((8, 8)), (0.1, 0.1), SeedConfig()) == []


def _bumps(values: list[tuple[int, int, float]], shape=(128, 128), floor: float = -20.0) -> np.ndarray:
    """A logit map at ``floor`` with a Gaussian bump of peak logit ``z`` at each (row, col)."""
    rows, cols = np.indices(shape, dtype=np.float64)
    z = np.full(shape, floor)
    for r, c, peak in values:
        z = np.maximum(z, floor + (peak - floor) * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 1.5**2)))
    return z


def test_the_logit_rule_finds_candidates_a_probability_threshold_cannot() -> None:
    """Three weak candidates (logits -5, -7, -9) on a background at -20: no probability rule
    above 0.01 sees any; the logit rule at -8 keeps the two above it, strongest first, with
    strength sigmoid(peak); find_seeds dispatches on the rule."""
    z = _bumps([(20, 20, -5.0), (60, 70, -7.0), (100, 100, -9.0)])
    spacing = (0.2, 0.2)
    prob_rule = SeedConfig(min_prob=0.01)
    assert find_seeds(z, spacing, prob_rule) == []
    rule = SeedConfig(rule="logit", min_logit=-8.0, max_per_tile=None)
    seeds = seeds_from_logits(z, spacing, rule)
    assert [(round(s.row), round(s.col)) for s in seeds] == [(20, 20), (60, 70)]
    assert seeds[0].strength == pytest.approx(1 / (1 + math.exp(5.0)), rel=1e-6)
    assert find_seeds(z, spacing, rule) == seeds
    # a probability rule and the same map as probabilities: find_seeds takes the logits
    strong = _bumps([(30, 30, 3.0)])
    assert [(round(s.row), round(s.col)) for s in find_seeds(strong, spacing, SeedConfig(min_prob=0.9))] == [(30, 30)]


def test_the_logit_rule_keeps_at_most_n_per_tile_strongest_first() -> None:
    # four candidates in the top-left 64 px tile, one in the tile to its right
    z = _bumps([(10, 10, -1.0), (10, 40, -2.0), (40, 10, -3.0), (40, 40, -4.0), (10, 100, -6.0)])
    spacing = (0.2, 0.2)
    config = SeedConfig(rule="logit", min_logit=-8.0, max_per_tile=2, tile_px=64)
    seeds = seeds_from_logits(z, spacing, config)
    assert [(round(s.row), round(s.col)) for s in seeds] == [(10, 10), (10, 40), (10, 100)]
    # inside a region only
    region = np.zeros(z.shape, bool)
    region[:, 64:] = True
    assert [(round(s.row), round(s.col)) for s in seeds_from_logits(z, spacing, config, region)] == [(10, 100)]


@pytest.mark.parametrize("rule", [SeedConfig(rule="logit", min_logit=-8.0, max_per_tile=2, tile_px=32),
                                  SeedConfig(min_prob=0.2, nms_radius_mm=1.0)])
def test_seed_positions_are_find_seeds_positions_in_its_order(rule: SeedConfig) -> None:
    """The planner's cheap positions: those of find_seeds, in the same order, for either rule,
    with and without a region (a rough map with many maxima, a plateau and a tile cap)."""
    rng = np.random.default_rng(3)
    z = 4.0 * rng.standard_normal((96, 80)) - 4.0
    z[40:43, 50:53] = 30.0  # a saturated plateau
    region = np.zeros(z.shape, bool)
    region[10:90, 5:70] = True
    spacing = (0.2, 0.25)
    for reg in (None, region):
        seeds = find_seeds(z, spacing, rule, region=reg)
        assert len(seeds) > 10
        assert seed_positions(z, spacing, rule, region=reg) == [(s.row, s.col) for s in seeds]


def test_seed_config_checks_the_logit_rule() -> None:
    with pytest.raises(ValueError, match="rule"):
        SeedConfig(rule="dog")
    with pytest.raises(ValueError, match="max_per_tile"):
        SeedConfig(max_per_tile=0)
    with pytest.raises(ValueError, match="min_logit"):
        SeedConfig(min_logit=float("nan"))
