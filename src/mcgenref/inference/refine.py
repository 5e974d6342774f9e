"""Test-time generative posterior refinement (TT-GPR, METHOD section 5).

Given the frozen segmentor's logits ``z0`` on the model's grid, for small windows around the
candidates only:

1. **seeds** from ``sigmoid(z)``: local maxima >= ``seeds.min_prob`` (weaker candidates
   included, which is where missed MCs are recovered), NMS in mm
   (:func:`mcgenref.flow.seeds.seeds_from_probability`);
2. **projections**: ``k`` samples of the generator conditioned on the seed map and the
   observed window (:meth:`mcgenref.models.generator.GeneratorContract.sample_projection`:
   the generator samples the residual to add to the observation, from an SDEdit start at
   ``t_start``, in ``sampler_steps`` Euler steps, by the generator's own contract read from
   its ``model.json``); the generator restores the seeded MCs the observation supports and
   keeps the background (:mod:`mcgenref.training.generator`);
3. **surrogates**: the frozen segmentor on each projection, ``s_k``; their mean ``m`` and their
   **agreement** ``a = 1 - 2 std_k(s_k)`` (1 when all agree, 0 at the largest possible
   spread of values in [0, 1]);
4. **refinement** of the window's logits ``z`` (initialised with the current ones) by
   ``refine_steps`` Adam steps on

   - ``fit``: the agreement-weighted binary cross-entropy of ``sigmoid(z)`` against ``m``;
   - ``overlap``: the mean over projections of ``1 - soft Dice(sigmoid(z), [s_k >= tau])``
     (``tau``: ``overlap_threshold``),
     so the refined mask overlaps every projection's *mask* consistently: it grows where the
     projections draw an MC and shrinks where none does (smoothed by one pixel, so an empty
     window agreeing with empty projections costs nothing). Against the soft ``s_k`` the
     optimum would instead inflate every weak candidate;
   - ``edge``: edge-aware smoothness, ``sum |p_i - p_j| exp(-(y_i - y_j)^2 / 2 edge_sigma^2)``
     over 4-neighbours: label edges cost little where the image has an edge;
   - ``proximity``: ``mean((z - z0)^2) / proximity_scale^2``, which keeps what no other term
     speaks about where the segmentor put it;

5. rounds 1-4 repeat ``rounds`` times (the seeds of a later round come from the refined map;
   a window whose seeds did not change is not projected again).

Windows are merged back by blending the *change* ``z - z0`` with a taper that is 1 inside a
margin and falls to 0 at the window's edge, so the refined map has no seams and is exactly
``z0`` away from candidates. Uncertainty: the standard deviation of the surrogates over the
``k`` projections of the last round, blended the same way (0 away from candidates).

Context correction (``context_correction``). The segmentor sees a 64-pixel window here and a
256-pixel one in the full-image pass; near a window's edge the two differ even on the same
pixels. The surrogates are therefore taken relative to the segmentor on the *unprojected*
window: ``s_k = sigmoid(z0 + logit(seg(x_k)) - logit(seg(y)))``: what the projection changed,
applied to the full-context logits. Switch it off for the paper's plain ``seg(x_k)``.

Every term has a switch and a weight in :class:`RefineConfig`; ``k = 1``, ``rounds = 1`` and
``use_seeds = False`` (the generator's unconditional velocity: a projection with an all-zero
seed map) are the remaining ablations. Deterministic given ``seed``: the noise of window
``i``, round ``r``, projection ``j`` is drawn from a CPU generator seeded by
``(seed, i, r, j)``, so neither the batch size nor the device changes which noise a window
gets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mcgenref.flow.seeds import SeedConfig, seeds_from_probability
from mcgenref.models.generator import GeneratorContract
from mcgenref.runtime import Autocast

__all__ = ["RefineConfig", "RefineResult", "Refiner", "plan_windows"]


@dataclass(frozen=True)
class RefineConfig:
    """Settings of TT-GPR (see the module docstring for each term).

    Attributes:
        window_px: window side on the model's grid (a multiple of both networks' size
            multiples); 64 px = 12.8 mm at 0.2 mm, the generator's training patch.
        margin_px: seeds within this distance of a window's edge are left to another window
            (the taper of the merge rises over this margin).
        max_windows: at most this many windows per image, strongest candidates first (a
            bound on the cost; the count left out is recorded). ``None``: no bound.
        batch_windows: windows per batch (each expands to ``k`` projections).
        seeds: how candidates become seeds (``min_prob``: the weakest candidate refined).
        k: projections per window and round.
        rounds: seed -> project -> refine rounds.
        t_start: SDEdit start time of the projections' residual (0 = from pure noise; higher
            starts nearer "no change").
        sampler_steps: Euler steps from ``t_start`` to 1.
        guidance: classifier-free guidance scale (1 = the plain conditional velocity).
        use_seeds: condition on the seed map (False: all-zero seed map, the "no seed" ablation).
        context_correction: surrogates relative to the segmentor on the unprojected window.
        fit, overlap, edge, proximity: switch each term of the objective on or off.
        fit_weight, overlap_weight, edge_weight, proximity_weight: their weights.
        overlap_threshold: a surrogate pixel counts as MC in a projection's mask (the
            ``overlap`` term's target) where ``s_k >= overlap_threshold``. The default is the
            shipped segmentor's operating point: set it to your model's decision threshold.

    The defaults of the weights, ``overlap_threshold``, ``seeds.min_prob``, ``t_start`` and
    ``guidance`` were tuned with ``recipes/tune_tt_gpr.py`` (Optuna, development data:
    synthetic patches on the training women's normals) for recall gained without Dice lost,
    and rounded (docs/tt_gpr.md).
        edge_sigma: intensity difference (normalised units) at which the edge term's weight
            falls to exp(-1/2).
        proximity_scale: logit difference that costs ``proximity_weight``.
        refine_steps, lr: Adam steps and step size on the logits per round.
        logit_clip: logits are kept in [-logit_clip, logit_clip] (a saturated segmentor
            gives |z| of 20+, which no loss of bounded gradient could move).
        seed: base seed of the projections' noise.
    """

    window_px: int = 64
    margin_px: int = 8
    max_windows: int | None = 512
    batch_windows: int = 16
    seeds: SeedConfig = field(default_factory=lambda: SeedConfig(min_prob=0.84))
    k: int = 4
    rounds: int = 2
    t_start: float = 0.23
    sampler_steps: int = 3
    guidance: float = 1.0
    use_seeds: bool = True
    context_correction: bool = True
    fit: bool = True
    overlap: bool = True
    edge: bool = True
    proximity: bool = True
    fit_weight: float = 1.7
    overlap_weight: float = 1.2
    edge_weight: float = 0.2
    proximity_weight: float = 0.16
    edge_sigma: float = 0.05
    proximity_scale: float = 4.0
    overlap_threshold: float = 0.98
    refine_steps: int = 20
    lr: float = 0.3
    logit_clip: float = 12.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.window_px < 16 or self.window_px % 16:
            raise ValueError(f"window_px must be a multiple of 16, >= 16, got {self.window_px}")
        if not 0 <= 2 * self.margin_px < self.window_px:
            raise ValueError("margin_px must be >= 0 and less than half of window_px")
        if self.max_windows is not None and self.max_windows < 1:
            raise ValueError("max_windows must be >= 1 (or null)")
        for name in ("batch_windows", "k", "rounds", "sampler_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.refine_steps < 0:
            raise ValueError("refine_steps must be >= 0")
        if not 0.0 <= self.t_start < 1.0:
            raise ValueError(f"t_start must be in [0, 1), got {self.t_start}")
        for name in ("fit_weight", "overlap_weight", "edge_weight", "proximity_weight", "guidance"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not (self.edge_sigma > 0 and self.proximity_scale > 0 and self.lr > 0 and self.logit_clip > 0):
            raise ValueError("edge_sigma, proximity_scale, lr and logit_clip must be > 0")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if not 0.0 < self.overlap_threshold < 1.0:
            raise ValueError(f"overlap_threshold must be in (0, 1), got {self.overlap_threshold}")


@dataclass(frozen=True)
class RefineResult:
    """Refined logits and the uncertainty map, both float32 [H, W] on the input grid."""

    logits: np.ndarray
    uncertainty: np.ndarray
    info: dict[str, Any]


def plan_windows(
    prob: np.ndarray, region: np.ndarray, spacing_mm: tuple[float, float], config: RefineConfig
) -> tuple[list[tuple[int, int]], int]:
    """Top-left corners of the windows that cover the candidates, and how many were dropped.

    Greedy, strongest candidate first: a window is centred on the strongest seed not yet
    inside another window's inner part (``margin_px`` from its edges), clipped to the image.
    """
    h, w = prob.shape
    size, margin = min(config.window_px, h, w), config.margin_px
    seeds = seeds_from_probability(prob, spacing_mm, config.seeds, region=region)
    corners: list[tuple[int, int]] = []
    dropped = 0
    for seed in seeds:  # strongest first
        r, c = seed.row, seed.col
        if any(r0 + margin <= r < r0 + size - margin and c0 + margin <= c < c0 + size - margin
               for r0, c0 in corners):
            continue
        if config.max_windows is not None and len(corners) >= config.max_windows:
            dropped += 1
            continue
        r0 = int(min(max(round(r) - size // 2, 0), h - size))
        c0 = int(min(max(round(c) - size // 2, 0), w - size))
        corners.append((r0, c0))
    return corners, dropped


def _taper(size: int, margin: int) -> np.ndarray:
    """1 inside, a raised-cosine ramp to 0 over ``margin`` pixels at each edge."""
    ramp = np.ones(size, dtype=np.float32)
    if margin > 0:
        x = (np.arange(margin, dtype=np.float32) + 0.5) / margin
        ramp[:margin] = 0.5 - 0.5 * np.cos(np.pi * x)
        ramp[size - margin:] = ramp[:margin][::-1]
    return np.outer(ramp, ramp)


def _soft_dice_loss(p: Tensor, s: Tensor) -> Tensor:
    """``1 - soft Dice`` per window, ``p`` [B, 1, H, W] vs each ``s`` [B, K, H, W]; smoothed
    by 1 pixel so empty vs empty costs 0. Returns [B]."""
    inter = (p * s).sum(dim=(2, 3))
    total = p.sum(dim=(2, 3)) + s.sum(dim=(2, 3))
    return (1.0 - (2.0 * inter + 1.0) / (total + 1.0)).mean(dim=1)


def _edge_loss(p: Tensor, y: Tensor, sigma: float) -> Tensor:
    """Edge-aware total variation per window ([B]): label jumps are cheap across image edges."""
    wy = torch.exp(-((y[..., 1:, :] - y[..., :-1, :]) ** 2) / (2 * sigma**2))
    wx = torch.exp(-((y[..., :, 1:] - y[..., :, :-1]) ** 2) / (2 * sigma**2))
    dy = (p[..., 1:, :] - p[..., :-1, :]).abs() * wy
    dx = (p[..., :, 1:] - p[..., :, :-1]).abs() * wx
    return dy.mean(dim=(1, 2, 3)) + dx.mean(dim=(1, 2, 3))


class Refiner:
    """TT-GPR with a frozen segmentor and generator (both in eval mode, on ``device``).

    ``contract``: the generator's data convention, from its ``model.json``
    (:func:`mcgenref.models.checkpoint.load_generator`); the default is
    :class:`~mcgenref.models.generator.GeneratorContract`'s, that of the shipped generator.
    """

    def __init__(self, segmentor: nn.Module, generator: nn.Module, config: RefineConfig,
                 device: torch.device | str = "cpu", autocast: Autocast | None = None,
                 *, contract: GeneratorContract | None = None) -> None:
        self.segmentor = segmentor
        self.generator = generator
        self.contract = contract or GeneratorContract()
        self.config = config
        self.device = torch.device(device)
        self.autocast = autocast or Autocast(self.device.type)  # fp32 unless given

    @torch.no_grad()
    def _segment(self, x: Tensor) -> Tensor:
        with self.autocast():
            return self.segmentor(x).float()

    def _project(self, y: Tensor, seed_map: Tensor, noise: Tensor) -> Tensor:
        """``k`` projections per window: ``y``, ``seed_map`` [B, 1, H, W], noise [B, K, H, W]."""
        b, k, h, w = noise.shape
        c = self.config
        return self.contract.sample_projection(
            self.generator, y.expand(b, k, h, w).reshape(b * k, 1, h, w),
            seed_map.expand(b, k, h, w).reshape(b * k, 1, h, w), noise.reshape(b * k, 1, h, w),
            c.t_start, c.sampler_steps, c.guidance, self.autocast,
        )

    def _noise(self, windows: list[int], round_index: int, shape: tuple[int, int]) -> Tensor:
        c = self.config
        out = torch.empty(len(windows), c.k, *shape)
        for i, w in enumerate(windows):
            for j in range(c.k):
                g = torch.Generator().manual_seed(
                    int(np.random.SeedSequence([c.seed, w, round_index, j]).generate_state(1)[0])
                )
                out[i, j] = torch.randn(shape, generator=g)
        return out.to(self.device)

    def _objective(self, z: Tensor, z0: Tensor, m: Tensor, agree: Tensor, s: Tensor,
                   y: Tensor) -> Tensor:
        c = self.config
        p = torch.sigmoid(z)
        loss = z.new_zeros(z.shape[0])
        if c.fit:
            bce = F.binary_cross_entropy_with_logits(z, m, reduction="none")
            loss = loss + c.fit_weight * (agree * bce).mean(dim=(1, 2, 3))
        if c.overlap:
            loss = loss + c.overlap_weight * _soft_dice_loss(p, (s >= c.overlap_threshold).to(p.dtype))
        if c.edge:
            loss = loss + c.edge_weight * _edge_loss(p, y, c.edge_sigma)
        if c.proximity:
            loss = loss + c.proximity_weight * ((z - z0) / c.proximity_scale).pow(2).mean(dim=(1, 2, 3))
        return loss.sum()  # windows are independent: the sum keeps each one's gradient its own

    def _seed_maps(self, z: Tensor, region: Tensor, spacing_mm: tuple[float, float]
                   ) -> tuple[np.ndarray, list[tuple[tuple[float, float], ...]]]:
        """Seed maps [B, 1, H, W] from ``sigmoid(z)`` and each window's seed positions."""
        c = self.config
        b, _, h, w = z.shape
        maps = np.zeros((b, 1, h, w), dtype=np.float32)
        keys: list[tuple[tuple[float, float], ...]] = [() for _ in range(b)]
        if not c.use_seeds:
            return maps, keys
        prob = torch.sigmoid(z).cpu().numpy()[:, 0]
        reg = region.cpu().numpy()[:, 0]
        for i in range(b):
            seeds = seeds_from_probability(prob[i], spacing_mm, c.seeds, region=reg[i])
            maps[i, 0] = self.contract.seed_map(seeds, (h, w), spacing_mm, c.seeds)
            keys[i] = tuple(sorted((round(s.row, 1), round(s.col, 1)) for s in seeds))
        return maps, keys

    def _refine_batch(self, index: list[int], y: Tensor, z0: Tensor, region: Tensor,
                      spacing_mm: tuple[float, float]) -> tuple[Tensor, Tensor, int]:
        """Rounds of seed -> project -> surrogate -> refine for a batch of windows.

        A later round re-projects only the windows whose seeds moved (appeared, vanished or
        shifted by 0.1 px or more): with the same seeds it would only draw K more samples of
        the same condition. Returns the logits, the surrogate spread and the number of
        window-rounds computed.
        """
        c = self.config
        z = z0.clone()
        spread = torch.zeros_like(z0)
        seg_y = self._segment(y) if c.context_correction else None
        previous: list[tuple[tuple[float, float], ...]] | None = None
        computed = 0
        for r in range(c.rounds):
            maps, keys = self._seed_maps(z, region, spacing_mm)
            active = [i for i in range(len(index)) if previous is None or keys[i] != previous[i]]
            previous = keys
            if not active:
                break
            computed += len(active)
            act = torch.tensor(active, device=self.device)
            ya, z0a = y[act], z0[act]
            h, w = ya.shape[2:]
            noise = self._noise([index[i] for i in active], r, (h, w))
            x = self._project(ya, torch.from_numpy(maps[active]).to(self.device), noise)
            logits_k = self._segment(x).reshape(len(active), c.k, h, w)
            if seg_y is not None:
                logits_k = z0a + (logits_k - seg_y[act])
            s = torch.sigmoid(logits_k.clamp(-c.logit_clip, c.logit_clip))
            m = s.mean(dim=1, keepdim=True)
            sd = s.std(dim=1, keepdim=True, unbiased=False) if c.k > 1 else torch.zeros_like(m)
            agree = (1.0 - 2.0 * sd).clamp(0.0, 1.0)
            za = z[act].detach().requires_grad_(True)
            optimizer = torch.optim.Adam([za], lr=c.lr)
            for _ in range(c.refine_steps):
                optimizer.zero_grad(set_to_none=True)
                self._objective(za, z0a, m, agree, s, ya).backward()
                optimizer.step()
                with torch.no_grad():
                    za.clamp_(-c.logit_clip, c.logit_clip)
            z = z.clone()
            z[act] = za.detach()
            spread = spread.clone()
            spread[act] = sd
        return z, spread, computed

    def refine(self, image: np.ndarray, region: np.ndarray, logits: np.ndarray,
               spacing_mm: tuple[float, float]) -> RefineResult:
        """Refine ``logits`` (float32 [H, W], the segmentor's on ``image``'s grid) inside
        ``region``; returns logits and uncertainty on the same grid (module docstring)."""
        c = self.config
        t0 = time.perf_counter()
        clip = c.logit_clip
        z0_full = np.clip(np.nan_to_num(logits, nan=-clip, neginf=-clip, posinf=clip), -clip, clip)
        prob = 1.0 / (1.0 + np.exp(-z0_full))
        h, w = image.shape
        size = min(c.window_px, h, w)
        corners, dropped = plan_windows(prob, region, spacing_mm, c)
        delta = np.zeros((h, w), dtype=np.float32)
        weight = np.zeros((h, w), dtype=np.float32)
        spread = np.zeros((h, w), dtype=np.float32)
        taper = _taper(size, min(c.margin_px, size // 4))
        window_rounds = 0
        fits = size % 16 == 0
        for b0 in range(0, len(corners), c.batch_windows):
            batch = corners[b0 : b0 + c.batch_windows]
            if not fits:  # an image smaller than a window: nothing sensible to refine
                break
            sl = [(slice(r0, r0 + size), slice(c0, c0 + size)) for r0, c0 in batch]
            y = torch.from_numpy(np.stack([image[s] for s in sl])[:, None].astype(np.float32)).to(self.device)
            z0 = torch.from_numpy(np.stack([z0_full[s] for s in sl])[:, None]).to(self.device)
            reg = torch.from_numpy(np.stack([region[s] for s in sl])[:, None]).to(self.device)
            z, sd, n = self._refine_batch(list(range(b0, b0 + len(batch))), y, z0, reg, spacing_mm)
            window_rounds += n
            z_np, z0_np, sd_np = z.cpu().numpy()[:, 0], z0.cpu().numpy()[:, 0], sd.cpu().numpy()[:, 0]
            for i, s in enumerate(sl):
                delta[s] += taper * (z_np[i] - z0_np[i])
                spread[s] += taper * sd_np[i]
                weight[s] += taper
        norm = np.maximum(weight, 1.0)
        refined = np.where(region, z0_full + delta / norm, z0_full).astype(np.float32)
        uncertainty = np.where(region, spread / norm, 0.0).astype(np.float32)
        info = {
            "windows": len(corners) if fits else 0,
            "windows_dropped": dropped,
            "window_rounds": window_rounds,
            "window_px": size,
            "refine_s": round(time.perf_counter() - t0, 4),
        }
        return RefineResult(logits=refined, uncertainty=uncertainty, info=info)
