"""Test-time generative posterior refinement (TT-GPR, METHOD section 5).

Given the frozen segmentor's logits ``z0`` on the model's grid, for small windows around the
candidates only:

1. **seeds** from the logits ``z`` by ``seeds.rule`` (:func:`mcgenref.flow.seeds.find_seeds`):
   the default ``"logit"`` rule takes the local maxima of ``z`` above ``seeds.min_logit``, at
   most ``seeds.max_per_tile`` per window, NMS in mm; the missed MCs of a near-binary
   segmentor sit far below any probability threshold but stand out in logit space;
2. **projections**: ``k`` samples per window from the **projector**. By default that is the
   generator (:class:`GeneratorProjector`:
   :meth:`mcgenref.models.generator.GeneratorContract.sample_projection`: the generator
   samples the residual to add to the observation, from an SDEdit start at ``t_start``, in
   ``sampler_steps`` Euler steps, by the generator's own contract read from its
   ``model.json``). Any callable with the :class:`Projector` signature may stand in (an
   oracle that knows the truth, in the diagnostics);
3. **surrogates**: the frozen segmentor on each projection, ``s_k`` (logits ``zeta_k``); their
   mean logit ``mu`` and their **agreement** ``a = 1 - 2 std_k(s_k)`` (1 when all agree, 0 at
   the largest possible spread of values in [0, 1]);
4. **refinement** of the window's logits: the minimiser of an energy in which every term is
   a per-pixel quadratic in the logits (so each weight is what it says: the share of a
   pixel's refined logit its target gets, where the terms meet),

   - ``fit``: ``fit_weight * a_i (z_i - mu_i)^2``;
   - ``overlap``: ``overlap_weight * a_i * mean_k [z_i on the wrong side of t_ki]
     (z_i - t_ki)^2``, ``t_ki = +overlap_logit`` where projection ``k``'s mask
     (``s_k >= overlap_threshold``; not the evaluation threshold) holds pixel ``i``, else
     ``-overlap_logit``: a pixel inside the projections' masks is raised to at least
     ``+overlap_logit``, one outside them lowered to at most ``-overlap_logit``, and one
     already on the right side is left to the other terms. This is what lets TT-GPR
     **lower** a candidate the projections do not draw;
   - ``edge``: ``edge_weight * sum_j w_ij (z_i - z_j)^2`` over the 4-neighbours ``j``, ``w_ij =
     exp(-(y_i - y_j)^2 / 2 edge_sigma^2)``: a graph Laplacian, so label edges are cheap
     where the image has an edge;
   - ``proximity``: ``proximity_weight * (z_i - z0_i)^2``, which keeps what no other term
     speaks about where the segmentor put it.

   Setting the gradient to zero gives the sparse linear system ``(D + edge_weight L) z = b``
   (``D`` diagonal, ``L`` the edge Laplacian), symmetric positive definite, solved by
   Jacobi-preconditioned conjugate gradients (``refine_steps`` at most, to a relative
   residual of ``solver_tolerance``); the overlap term's "wrong side" set is updated and the
   system solved again until the set no longer changes (``active_set_rounds`` at most; a
   semismooth Newton method on a convex piecewise-quadratic energy). A tiny proximity
   (``1e-6``) is always there, so a pixel no term speaks about stays exactly at ``z0``;

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

Speed on the CPU (docs/tt_gpr.md, "Cost"): the windows' forwards run on channels-last copies
of both networks and the solve on one thread; neither changes the result beyond float
rounding.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mcgenref.flow.seeds import (
    TT_GPR_SEEDS,
    Seed,
    SeedConfig,
    find_seeds,
    seed_positions,
)
from mcgenref.models.generator import GeneratorContract
from mcgenref.runtime import Autocast

__all__ = ["GeneratorProjector", "ProjectionRequest", "Projector", "RefineConfig", "RefineResult",
           "Refiner", "plan_windows", "solve_refinement"]

#: the proximity every pixel keeps, so that a pixel no term speaks about stays at ``z0``
_BASE_PROXIMITY = 1e-6

#: TT-GPR's default seed rule (docs/tt_gpr.md, "Seeds where the misses are"); defined in
#: :mod:`mcgenref.flow.seeds`, where a generator trained on mined seeds reads it too
DEFAULT_SEEDS = TT_GPR_SEEDS


@dataclass(frozen=True)
class RefineConfig:
    """Settings of TT-GPR (see the module docstring for each term).

    Attributes:
        window_px: window side on the model's grid (a multiple of both networks' size
            multiples); 64 px = 12.8 mm at 0.2 mm, the generator's training patch.
        margin_px: seeds within this distance of a window's edge are left to another window
            (the taper of the merge rises over this margin).
        max_windows: at most this many windows per image, strongest candidates first (a
            bound on the cost; the count left out is recorded in ``windows_dropped``).
            ``None``: no bound. With 9, ``--refine`` costs 1.5-1.9x plain segmentation on
            the CPU on a 70 um full field (109 windows there without a bound: the logit rule
            seeds background maxima down to z = -8) and 2.84-3.02x on a 1024 px film at 0.2 mm
            (24 windows: 6.3x there), timing the segmentation alone on a quiet machine;
            chosen on development data, where it changed no cluster and no patch result that
            a CI resolves, while 8 and 7 lost a cluster at 0.125 false clusters per normal
            (docs/tt_gpr.md, "Cost").
        batch_windows: windows per batch (each expands to ``k`` projections).
        seeds: how candidates become seeds (:func:`mcgenref.flow.seeds.find_seeds`; default
            the logit rule: maxima with ``z >= -8``, at most 8 per 64 px tile).
        k: projections per window and round.
        rounds: seed -> project -> refine rounds.
        t_start: SDEdit start time of the projections' residual (0 = from pure noise; higher
            starts nearer "no change").
        sampler_steps: Euler steps from ``t_start`` to 1.
        guidance: classifier-free guidance scale (1 = the plain conditional velocity).
        seed_keep: each projection is conditioned on its own random subset of the window's
            seeds, each seed kept with this probability (1: every projection sees every
            seed). Below 1 the K projections differ by design: a seed whose MC only appears
            when it is seeded gets surrogates that disagree (issue 14, item 5; the spread is
            measured in docs/tt_gpr.md). The subset of window ``i``, round ``r``, projection
            ``j`` is drawn from its own generator, as the noise.
        use_seeds: condition on the seed map (False: all-zero seed map, the "no seed" ablation).
        context_correction: surrogates relative to the segmentor on the unprojected window.
        fit, overlap, edge, proximity: switch each term of the energy on or off.
        fit_weight, overlap_weight, edge_weight, proximity_weight: their weights, each per
            pixel and per squared logit (module docstring): where fit, overlap and proximity
            all speak, the refined logit is their targets' average with these weights
            (times the agreement for fit and overlap).
        overlap_threshold: a surrogate pixel is in a projection's mask (the ``overlap``
            term's target) where ``s_k >= overlap_threshold``. Deliberately not the
            evaluation threshold: the mask says "the projection drew an MC here", which a
            surrogate at 0.9 does, while the refined logit is what gets thresholded later.
        overlap_logit: the overlap term's target logit: ``+overlap_logit`` inside a
            projection's mask, ``-overlap_logit`` outside (5: p = 0.993 / 0.007).
        edge_sigma: intensity difference (normalised units) at which the edge term's weight
            falls to exp(-1/2).
        refine_steps, solver_tolerance: conjugate-gradient iterations at most per solve
            and the relative residual at which a solve stops.
        active_set_rounds: solves at most per round while the overlap term's "wrong side"
            set changes.
        logit_clip: logits (and surrogates) are kept in [-logit_clip, logit_clip]; 30 keeps
            a saturated segmentor's 20+ as they are, so refined maps keep their ranking at
            the top (a clip at 12 tied every confident candidate, which flattened the FROC's
            low-false-positive end). The quadratic solve needs no clip; non-finite logits do.
        seed: base seed of the projections' noise.
    """

    window_px: int = 64
    margin_px: int = 8
    max_windows: int | None = 9
    batch_windows: int = 16
    seeds: SeedConfig = field(default_factory=lambda: DEFAULT_SEEDS)
    k: int = 4
    rounds: int = 2
    t_start: float = 0.23
    sampler_steps: int = 3
    guidance: float = 1.0
    seed_keep: float = 1.0
    use_seeds: bool = True
    context_correction: bool = True
    fit: bool = True
    overlap: bool = True
    edge: bool = True
    proximity: bool = True
    fit_weight: float = 1.0
    overlap_weight: float = 1.0
    edge_weight: float = 0.1
    proximity_weight: float = 0.1
    edge_sigma: float = 0.05
    overlap_threshold: float = 0.5
    overlap_logit: float = 5.0
    refine_steps: int = 200
    solver_tolerance: float = 1e-4
    active_set_rounds: int = 10
    logit_clip: float = 30.0
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
        for name in ("refine_steps", "active_set_rounds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not self.solver_tolerance > 0:
            raise ValueError("solver_tolerance must be > 0")
        if not self.overlap_logit > 0:
            raise ValueError("overlap_logit must be > 0")
        if not 0.0 <= self.t_start < 1.0:
            raise ValueError(f"t_start must be in [0, 1), got {self.t_start}")
        for name in ("fit_weight", "overlap_weight", "edge_weight", "proximity_weight", "guidance"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not (self.edge_sigma > 0 and self.logit_clip > 0):
            raise ValueError("edge_sigma and logit_clip must be > 0")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if not 0.0 < self.seed_keep <= 1.0:
            raise ValueError(f"seed_keep must be in (0, 1], got {self.seed_keep}")
        if not 0.0 < self.overlap_threshold < 1.0:
            raise ValueError(f"overlap_threshold must be in (0, 1), got {self.overlap_threshold}")


@dataclass(frozen=True)
class RefineResult:
    """Refined logits and the uncertainty map, both float32 [H, W] on the input grid."""

    logits: np.ndarray
    uncertainty: np.ndarray
    info: dict[str, Any]


def plan_windows(
    logits: np.ndarray, region: np.ndarray, spacing_mm: tuple[float, float], config: RefineConfig
) -> tuple[list[tuple[int, int]], int]:
    """Top-left corners of the windows that cover the candidates, and how many were dropped.

    Greedy, strongest candidate first: a window is centred on the strongest seed not yet
    inside another window's inner part (``margin_px`` from its edges), clipped to the image.
    """
    h, w = logits.shape
    size, margin = min(config.window_px, h, w), config.margin_px
    corners: list[tuple[int, int]] = []
    dropped = 0
    for r, c in seed_positions(logits, spacing_mm, config.seeds, region=region):  # strongest first
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


def _edge_weights(y: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """The edge term's weights between vertical and horizontal 4-neighbours of ``y``
    [B, 1, H, W]: ``[B, 1, H-1, W]`` and ``[B, 1, H, W-1]``."""
    wy = torch.exp(-((y[..., 1:, :] - y[..., :-1, :]) ** 2) / (2 * sigma**2))
    wx = torch.exp(-((y[..., :, 1:] - y[..., :, :-1]) ** 2) / (2 * sigma**2))
    return wy, wx


def _laplacian(z: Tensor, wy: Tensor, wx: Tensor) -> Tensor:
    """``(L z)_i = sum_j w_ij (z_i - z_j)`` over the 4-neighbours ``j`` of each pixel."""
    out = torch.zeros_like(z)
    dy = wy * (z[..., 1:, :] - z[..., :-1, :])
    dx = wx * (z[..., :, 1:] - z[..., :, :-1])
    out[..., 1:, :] += dy
    out[..., :-1, :] -= dy
    out[..., :, 1:] += dx
    out[..., :, :-1] -= dx
    return out


def _degree(wy: Tensor, wx: Tensor) -> Tensor:
    """The Laplacian's diagonal: the sum of each pixel's edge weights."""
    b, _, h1, w = wy.shape
    deg = torch.zeros(b, 1, h1 + 1, w, dtype=wy.dtype, device=wy.device)
    deg[..., 1:, :] += wy
    deg[..., :-1, :] += wy
    deg[..., :, 1:] += wx
    deg[..., :, :-1] += wx
    return deg


def _conjugate_gradients(diag: Tensor, rhs: Tensor, edge: float, wy: Tensor, wx: Tensor,
                         x: Tensor, iterations: int, tolerance: float) -> tuple[Tensor, int]:
    """Solve ``(diag + edge L) x = rhs`` per window (Jacobi-preconditioned CG, from ``x``);
    returns the solution and the iterations run."""
    def apply(v: Tensor) -> Tensor:
        return diag * v + (edge * _laplacian(v, wy, wx) if edge > 0 else 0.0)

    precond = 1.0 / (diag + (edge * _degree(wy, wx) if edge > 0 else 0.0))
    dims = (1, 2, 3)
    r = rhs - apply(x)
    zr = precond * r
    d = zr
    rz = (r * zr).sum(dims, keepdim=True)
    stop = tolerance * rhs.pow(2).sum(dims, keepdim=True).sqrt().clamp_min(1e-12)
    n = 0
    for n in range(1, iterations + 1):  # noqa: B007 (n is reported)
        if bool((r.pow(2).sum(dims, keepdim=True).sqrt() <= stop).all()):
            n -= 1
            break
        ad = apply(d)
        alpha = rz / (d * ad).sum(dims, keepdim=True).clamp_min(1e-30)
        x = x + alpha * d
        r = r - alpha * ad
        zr = precond * r
        rz_new = (r * zr).sum(dims, keepdim=True)
        d = zr + (rz_new / rz.clamp_min(1e-30)) * d
        rz = rz_new
    return x, n


def solve_refinement(z0: Tensor, surrogate_logits: Tensor, y: Tensor, config: RefineConfig
                     ) -> tuple[Tensor, dict[str, Any]]:
    """The refined logits of a batch of windows: the minimiser of step 4's energy.

    ``z0``: the initial logits [B, 1, H, W] (clipped); ``surrogate_logits``: the segmentor's
    logits on the ``K`` projections [B, K, H, W] (context-corrected when asked); ``y``: the
    observed windows [B, 1, H, W]. Returns the refined logits (clipped to ``logit_clip``) and
    the solver's record: solves, conjugate-gradient iterations, whether the overlap term's
    active set settled, and ``spread``: the standard deviation over the ``K`` surrogates'
    probabilities [B, 1, H, W] (0 for one), which the agreement weights are made of.
    """
    c = config
    clip = c.logit_clip
    zeta = surrogate_logits.clamp(-clip, clip)
    s = torch.sigmoid(zeta)
    k = s.shape[1]
    sd = s.std(dim=1, keepdim=True, unbiased=False) if k > 1 else torch.zeros_like(z0)
    agree = (1.0 - 2.0 * sd).clamp(0.0, 1.0)
    diag = torch.full_like(z0, _BASE_PROXIMITY + (c.proximity_weight if c.proximity else 0.0))
    rhs = diag * z0
    if c.fit:
        diag = diag + c.fit_weight * agree
        rhs = rhs + c.fit_weight * agree * zeta.mean(dim=1, keepdim=True)
    edge = c.edge_weight if c.edge else 0.0
    wy, wx = _edge_weights(y, c.edge_sigma)
    target = torch.where(s >= c.overlap_threshold, c.overlap_logit, -c.overlap_logit) if c.overlap else None

    inside = s >= c.overlap_threshold if c.overlap else None

    def wrong_side(z: Tensor) -> Tensor:  # below +overlap_logit inside a mask, above - outside
        return torch.where(inside, z < c.overlap_logit, z > -c.overlap_logit)

    z = z0
    solves, iterations, settled = 0, 0, True
    active = wrong_side(z) if target is not None else None
    for _ in range(max(c.active_set_rounds, 1) if target is not None else 1):
        d, b = diag, rhs
        if active is not None and target is not None:
            h = active.to(z0.dtype)
            d = d + c.overlap_weight * agree * h.mean(dim=1, keepdim=True)
            b = b + c.overlap_weight * agree * (h * target).mean(dim=1, keepdim=True)
        z, n = _conjugate_gradients(d, b, edge, wy, wx, z, c.refine_steps, c.solver_tolerance)
        solves, iterations = solves + 1, iterations + n
        if active is None:
            break
        new_active = wrong_side(z)
        settled = bool(torch.equal(new_active, active))
        active = new_active
        if settled:
            break
    return z.clamp(-clip, clip), {"solves": solves, "cg_iterations": iterations, "settled": settled,
                                  "spread": sd}


@dataclass(frozen=True)
class ProjectionRequest:
    """What a projector is asked for: ``k`` projections of each of ``B`` windows.

    Attributes:
        observation: the observed windows, float32 [B, 1, H, W] (normalised intensity).
        seed_map: the seed maps drawn by the generator's contract, [B, 1, H, W] (one per
            window), or [B, K, H, W] (one per projection, with ``seed_keep`` < 1).
        seeds: each window's seeds (pixel positions in the window).
        corners: each window's top-left corner (row, col) in the image being refined.
        noise: standard normal [B, K, H, W], each window's own (deterministic) draw.
    """

    observation: Tensor
    seed_map: Tensor
    seeds: list[list[Seed]]
    corners: list[tuple[int, int]]
    noise: Tensor


#: a projector: ``request -> projections`` float32 [B, K, H, W] (images, like the observation)
Projector = Callable[[ProjectionRequest], Tensor]


class GeneratorProjector:
    """The learnt projector: ``k`` generator samples per window
    (:meth:`~mcgenref.models.generator.GeneratorContract.sample_projection`)."""

    def __init__(self, generator: nn.Module, contract: GeneratorContract, config: RefineConfig,
                 autocast: Autocast) -> None:
        self.generator, self.contract, self.config, self.autocast = generator, contract, config, autocast

    def __call__(self, request: ProjectionRequest) -> Tensor:
        b, k, h, w = request.noise.shape
        c = self.config
        y, seed_map = request.observation, request.seed_map
        x = self.contract.sample_projection(
            self.generator, y.expand(b, k, h, w).reshape(b * k, 1, h, w),
            seed_map.expand(b, k, h, w).reshape(b * k, 1, h, w), request.noise.reshape(b * k, 1, h, w),
            c.t_start, c.sampler_steps, c.guidance, self.autocast,
        )
        return x.reshape(b, k, h, w)


def _for_windows(net: nn.Module, device: torch.device) -> nn.Module:
    """The network as the refinement runs it. On the CPU a channels-last copy: the many
    64 px forwards of the windows run ~1.3-2x faster in that layout there; and, for a
    network in eval mode with batch norms that :mod:`torch.fx` can trace (the shipped
    segmentor), each convolution followed by a batch norm folded into one convolution
    (:func:`_fold_batch_norms`): another 12-16 % off the segmentor's window forwards.
    The same outputs up to float rounding (docs/tt_gpr.md, "Cost"); the
    caller's module is left as it is (the segmentor's full-image pass shares it). Elsewhere
    the network itself."""
    if device.type != "cpu":
        return net
    window_net = copy.deepcopy(net)
    if not net.training and any(isinstance(m, nn.BatchNorm2d) for m in net.modules()):
        window_net = _fold_batch_norms(window_net)
    return window_net.to(memory_format=torch.channels_last)


def _fold_batch_norms(net: nn.Module) -> nn.Module:
    """``net`` (in eval mode) with every ``Conv2d -> BatchNorm2d`` pair folded into one
    convolution (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`), as a
    :class:`torch.fx.GraphModule`, where that is exact: the convolution's output feeds only
    the norm, and each of the two modules is called once (a shared module keeps its other
    uses). ``net`` itself if :func:`torch.fx.symbolic_trace` cannot trace it
    (data-dependent Python control flow). Modifies ``net``'s modules: pass a copy.
    (Not :func:`torch.fx.experimental.optimization.fuse`: importing it warns.)"""
    try:
        traced = torch.fx.symbolic_trace(net)
    except Exception:  # noqa: BLE001 (tracing fails in many ways: TraceError, TypeError, ...)
        return net
    modules = dict(traced.named_modules())
    calls = Counter(node.target for node in traced.graph.nodes if node.op == "call_module")
    for node in list(traced.graph.nodes):
        source = node.args[0] if node.op == "call_module" and node.args else None
        if (not isinstance(modules.get(node.target), nn.BatchNorm2d)
                or not isinstance(source, torch.fx.Node) or source.op != "call_module"
                or not isinstance(modules.get(source.target), nn.Conv2d) or len(source.users) > 1
                or calls[source.target] > 1 or calls[node.target] > 1
                or not modules[node.target].track_running_stats):
            continue
        parent, _, name = source.target.rpartition(".")
        setattr(traced.get_submodule(parent) if parent else traced, name,
                fuse_conv_bn_eval(modules[source.target], modules[node.target]))
        node.replace_all_uses_with(source)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced


@contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one CPU thread inside, the previous count restored after. The solve's
    tensors (a batch of 64 x 64 windows) are too small to share out: on the shared 2-core
    CPU its many small operations ran 3-5x slower on two threads than on one (the same
    results: no reduction there is split between threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Refiner:
    """TT-GPR with a frozen segmentor and generator (both in eval mode, on ``device``).

    ``contract``: the generator's data convention, from its ``model.json``
    (:func:`mcgenref.models.checkpoint.load_generator`); the default is
    :class:`~mcgenref.models.generator.GeneratorContract`'s, that of the shipped generator.
    ``projector``: a :data:`Projector` used instead of the generator (then ``generator``
    may be ``None``); the seed maps are still drawn by ``contract``.
    """

    def __init__(self, segmentor: nn.Module, generator: nn.Module | None, config: RefineConfig,
                 device: torch.device | str = "cpu", autocast: Autocast | None = None,
                 *, contract: GeneratorContract | None = None,
                 projector: Projector | None = None) -> None:
        self.segmentor = segmentor
        self.generator = generator
        self.contract = contract or GeneratorContract()
        self.config = config
        self.device = torch.device(device)
        self.autocast = autocast or Autocast(self.device.type)  # fp32 unless given
        if projector is None:
            if generator is None:
                raise ValueError("a Refiner needs a generator or a projector")
            projector = GeneratorProjector(_for_windows(generator, self.device), self.contract,
                                           config, self.autocast)
        self.projector = projector
        self._window_segmentor = _for_windows(segmentor, self.device)

    @torch.no_grad()
    def _segment(self, x: Tensor) -> Tensor:
        with self.autocast():
            return self._window_segmentor(x).float()

    def _project(self, y: Tensor, seed_map: Tensor, noise: Tensor) -> Tensor:
        """``k`` projections per window by the generator: ``y``, ``seed_map`` [B, 1, H, W],
        noise [B, K, H, W] -> [B * K, 1, H, W]."""
        b, k, h, w = noise.shape
        request = ProjectionRequest(y, seed_map, [[] for _ in range(b)], [(0, 0)] * b, noise)
        return self.projector(request).reshape(b * k, 1, h, w)

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

    def _seed_maps(self, z: Tensor, region: Tensor, spacing_mm: tuple[float, float]
                   ) -> tuple[np.ndarray, list[list[Seed]]]:
        """Seed maps [B, 1, H, W] from the logits ``z`` and each window's seeds."""
        c = self.config
        b, _, h, w = z.shape
        maps = np.zeros((b, 1, h, w), dtype=np.float32)
        seeds: list[list[Seed]] = [[] for _ in range(b)]
        if not c.use_seeds:
            return maps, seeds
        logits = z.cpu().numpy()[:, 0]
        reg = region.cpu().numpy()[:, 0]
        for i in range(b):
            seeds[i] = find_seeds(logits[i], spacing_mm, c.seeds, region=reg[i])
            maps[i, 0] = self.contract.seed_map(seeds[i], (h, w), spacing_mm, c.seeds)
        return maps, seeds

    def _projection_seed_maps(self, seeds: list[list[Seed]], windows: list[int], round_index: int,
                              shape: tuple[int, int], spacing_mm: tuple[float, float]) -> np.ndarray:
        """[B, K, H, W]: projection ``j`` of window ``i`` sees each of its seeds with
        probability ``seed_keep``, drawn from a generator of ``(seed, window, round, j, 1)``."""
        c = self.config
        maps = np.zeros((len(windows), c.k, *shape), dtype=np.float32)
        for i, (w, ws) in enumerate(zip(windows, seeds, strict=True)):
            for j in range(c.k):
                rng = np.random.default_rng([c.seed, w, round_index, j, 1])
                kept = [q for q, u in zip(ws, rng.random(len(ws)), strict=True) if u < c.seed_keep]
                maps[i, j] = self.contract.seed_map(kept, shape, spacing_mm, c.seeds)
        return maps

    def project(self, windows: list[int], corners: list[tuple[int, int]], y: Tensor, z: Tensor,
                z0: Tensor, region: Tensor, spacing_mm: tuple[float, float], round_index: int = 0,
                seg_y: Tensor | None = None, found: tuple[np.ndarray, list[list[Seed]]] | None = None,
                ) -> tuple[list[list[Seed]], Tensor, Tensor]:
        """Steps 1-3 for a batch of windows: their seeds (from ``z``), the ``k`` projections
        [B, K, H, W] and the surrogate logits [B, K, H, W] (context-corrected against ``z0``
        when ``context_correction``; ``seg_y``: the segmentor on ``y``, if already known;
        ``found``: the seed maps and seeds of ``z``, if already found).
        ``windows``: each window's index (its noise and seed subsets)."""
        c = self.config
        b, _, h, w = y.shape
        maps, seeds = found if found is not None else self._seed_maps(z, region, spacing_mm)
        if c.seed_keep < 1.0 and c.use_seeds:
            maps = self._projection_seed_maps(seeds, windows, round_index, (h, w), spacing_mm)
        noise = self._noise(windows, round_index, (h, w))
        request = ProjectionRequest(y, torch.from_numpy(maps).to(self.device), seeds, corners, noise)
        x = self.projector(request).reshape(b, c.k, h, w)
        logits_k = self._segment(x.reshape(b * c.k, 1, h, w)).reshape(b, c.k, h, w)
        if c.context_correction:
            seg_y = self._segment(y) if seg_y is None else seg_y
            logits_k = z0 + (logits_k - seg_y)
        return seeds, x, logits_k

    def _refine_batch(self, index: list[int], corners: list[tuple[int, int]], y: Tensor, z0: Tensor,
                      region: Tensor, spacing_mm: tuple[float, float]) -> tuple[Tensor, Tensor, dict[str, int]]:
        """Rounds of seed -> project -> surrogate -> refine for a batch of windows.

        A later round re-projects only the windows whose seeds moved (appeared, vanished or
        shifted by 0.1 px or more): with the same seeds it would only draw K more samples of
        the same condition. Returns the logits, the surrogate spread and counts (window-rounds
        computed, solves, CG iterations, unsettled solves).
        """
        c = self.config
        z = z0.clone()
        spread = torch.zeros_like(z0)
        seg_y = self._segment(y) if c.context_correction else None
        previous: list[tuple[tuple[float, float], ...]] | None = None
        counts = {"window_rounds": 0, "solves": 0, "cg_iterations": 0, "unsettled": 0}
        for r in range(c.rounds):
            maps, seeds = self._seed_maps(z, region, spacing_mm)
            keys = [tuple(sorted((round(q.row, 1), round(q.col, 1)) for q in ws)) for ws in seeds]
            active = [i for i in range(len(index)) if previous is None or keys[i] != previous[i]]
            previous = keys
            if not active:
                break
            counts["window_rounds"] += len(active)
            act = torch.tensor(active, device=self.device)
            ya, z0a = y[act], z0[act]
            _, _, logits_k = self.project([index[i] for i in active], [corners[i] for i in active], ya,
                                          z[act], z0a, region[act], spacing_mm, r,
                                          None if seg_y is None else seg_y[act],
                                          (maps[active], [seeds[i] for i in active]))
            with _one_thread() if self.device.type == "cpu" else nullcontext():
                za, solver = solve_refinement(z0a, logits_k, ya, c)
            counts["solves"] += solver["solves"]
            counts["cg_iterations"] += solver["cg_iterations"]
            counts["unsettled"] += int(not solver["settled"])
            z = z.clone()
            z[act] = za
            spread = spread.clone()
            spread[act] = solver["spread"]
        return z, spread, counts

    @torch.inference_mode()
    def refine(self, image: np.ndarray, region: np.ndarray, logits: np.ndarray,
               spacing_mm: tuple[float, float]) -> RefineResult:
        """Refine ``logits`` (float32 [H, W], the segmentor's on ``image``'s grid) inside
        ``region``; returns logits and uncertainty on the same grid (module docstring)."""
        c = self.config
        t0 = time.perf_counter()
        clip = c.logit_clip
        z0_full = np.clip(np.nan_to_num(logits, nan=-clip, neginf=-clip, posinf=clip), -clip, clip)
        h, w = image.shape
        size = min(c.window_px, h, w)
        corners, dropped = plan_windows(z0_full, region, spacing_mm, c)
        delta = np.zeros((h, w), dtype=np.float32)
        weight = np.zeros((h, w), dtype=np.float32)
        spread = np.zeros((h, w), dtype=np.float32)
        taper = _taper(size, min(c.margin_px, size // 4))
        counts = {"window_rounds": 0, "solves": 0, "cg_iterations": 0, "unsettled": 0}
        fits = size % 16 == 0
        for b0 in range(0, len(corners), c.batch_windows):
            batch = corners[b0 : b0 + c.batch_windows]
            if not fits:  # an image smaller than a window: nothing sensible to refine
                break
            sl = [(slice(r0, r0 + size), slice(c0, c0 + size)) for r0, c0 in batch]
            y = torch.from_numpy(np.stack([image[s] for s in sl])[:, None].astype(np.float32)).to(self.device)
            z0 = torch.from_numpy(np.stack([z0_full[s] for s in sl])[:, None]).to(self.device)
            reg = torch.from_numpy(np.stack([region[s] for s in sl])[:, None]).to(self.device)
            z, sd, n = self._refine_batch(list(range(b0, b0 + len(batch))), batch, y, z0, reg, spacing_mm)
            counts = {key: counts[key] + n[key] for key in counts}
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
            **counts,
            "window_px": size,
            "refine_s": round(time.perf_counter() - t0, 4),
        }
        return RefineResult(logits=refined, uncertainty=uncertainty, info=info)
