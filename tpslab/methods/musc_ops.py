r"""MuSc's three operations as plain functions on tensors: LNAMD, MSM and RsCIN (Li et al., ICLR 2024).

Each function is the equation of the paper and the behaviour of the reference code
(xrli-U/MuSc, ``models/modules/_LNAMD.py``, ``_MSM.py``, ``_RsCIN.py``, ``models/musc.py``),
written for tpslab; :mod:`tpslab.methods.musc` strings them together.

* :func:`lnamd`: Local Neighbourhood Aggregation with Multiple Degrees. Per image,
  ``LN`` over the whole (C, H, W) feature map, an r x r mean over each patch's neighbours
  (zero padding), and an L2 norm per patch.
* :func:`msm`: Mutual Scoring Module. A patch's score is the mean of the smallest 30% of its
  nearest-neighbour distances to the *other* images of the set:

  .. math:: a_{i,p} = \\operatorname{mean}_{k_0 \\le \\text{rank} < k_1}
            \\{\\min_q \\lVert Z_{i,p} - Z_{j,q} \\rVert_2 : j \\ne i\\}

  with :math:`k_0 = \\lfloor 0 \\cdot (N-1) \\rfloor`, :math:`k_1 = \\lfloor 0.3 (N-1) \\rfloor`.
* :func:`rscin`: Re-scoring with Constrained Image-level Neighbourhood. Min-max-normalised
  image scores, smoothed over each image's k most similar images (cosine of image
  embeddings, itself included), averaged over several k.
* :func:`nearest_distances`: what MSM ranks, for a few images (the baseline notebook's figure).
* :func:`deal_groups`: how a large class is split into groups (the reference's ``sub_datasets``).

Cost of :func:`msm` on N images of L patches of C channels: about ``N^2 L^2 C / 2`` multiply-adds
(each unordered pair of images once, both directions from one block of distances), memory
``N L C`` for the features, one block of ``chunk`` distances and the ``N L N`` nearest distances.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from tpslab.utils import TPSLabError

MSM_INTERVAL = (0.0, 0.3)  # topmin_min, topmin_max (musc.py:211)
HALF_DTYPES = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


def lnamd(tokens: torch.Tensor, r: int, eps: float = 1e-5) -> torch.Tensor:
    """LNAMD for one layer and one aggregation degree ``r``, followed by the per-patch L2 norm.

    Reference: ``LNAMD._embed`` (_LNAMD.py:64-128) then ``features /= features.norm(dim=-1)``
    (musc.py:195). A fresh ``nn.LayerNorm([C, H, W])`` (weight 1, bias 0, eps 1e-5) normalises
    each image's whole feature map jointly; for r > 1, ``Unfold`` with zero padding (r-1)/2 and
    ``adaptive_avg_pool1d`` to C channels average each channel over the r x r window, zeros
    included, which is ``avg_pool2d(count_include_pad=True)``.

    Args:
        tokens: (N, L, C) raw patch tokens of one block (class token dropped), L = H*H.
        r: odd aggregation degree (1 = no aggregation).
        eps: LayerNorm epsilon.

    Returns:
        (N, L, C) unit-length patch features, in the dtype of ``tokens``.

    >>> lnamd(torch.randn(2, 16, 8), r=3).norm(dim=-1).allclose(torch.ones(2, 16))
    True
    """
    n, length, c = tokens.shape
    h = math.isqrt(length)
    if h * h != length:
        raise TPSLabError(f"LNAMD needs a square patch grid, got {length} patches")
    if r < 1 or r % 2 == 0:
        raise TPSLabError(f"LNAMD degree r must be odd and positive, got {r}")
    x = tokens.transpose(1, 2).reshape(n, c, h, h)  # (N, C, H, H)
    x = F.layer_norm(x, (c, h, h), eps=eps)  # one LN over [C, H, W] per image
    if r > 1:
        x = F.avg_pool2d(x, r, stride=1, padding=(r - 1) // 2, count_include_pad=True)  # (N, C, H, H)
    x = x.reshape(n, c, length).transpose(1, 2)  # (N, L, C)
    return x / x.norm(dim=-1, keepdim=True)


def msm_ranks(n_images: int, interval: tuple[float, float] = MSM_INTERVAL) -> tuple[int, int]:
    """Ranks ``[k0, k1)`` of the sorted distances to the other images that MSM averages.

    The reference's rule (_MSM.py:34-41): a bound below 1 is a fraction of the N-1 other
    images, truncated (``int(0.3 * (N - 1))``); a bound of 1 or more is a count.

    Raises:
        TPSLabError: if the interval is empty (N <= 4 with the default ``(0, 0.3)``; the
            reference would average an empty set and return NaN).

    >>> msm_ranks(5), msm_ranks(84), msm_ranks(200)
    ((0, 1), (0, 24), (0, 59))
    """
    others = n_images - 1
    lo, hi = (int(b) if b >= 1 else int(others * b) for b in interval)
    lo, hi = min(lo, hi), max(lo, hi)
    hi = min(hi, others)
    if hi - lo < 1:
        need = next(n for n in range(2, 10_000) if _count(n, interval) >= 1)
        raise TPSLabError(f"MuSc's mutual scoring needs at least {need} images per group (interval {interval} of "
                          f"the other images' distances); got {n_images}")
    return lo, hi


def _count(n_images: int, interval: tuple[float, float]) -> int:
    others = n_images - 1
    lo, hi = sorted(int(b) if b >= 1 else int(others * b) for b in interval)
    return min(hi, others) - lo


def _d2(q: torch.Tensor, ref: torch.Tensor, sq_q: torch.Tensor, sq_ref: torch.Tensor, acc: torch.dtype,
        buf: torch.Tensor) -> torch.Tensor:
    """Squared distances ``|a|^2 + |b|^2 - 2 a.b`` of rows a (R, C) and b (M, C) -> (R, M) in ``acc``.

    One fused ``addmm`` into the front of ``buf`` (reused from block to block: a fresh 10-60 MB
    block per call costs page faults on the CPU) and one in-place add; fp16/bf16 inputs on CUDA
    are multiplied with float32 accumulation and output (no half-precision rounding of the dot
    products). Not clamped at 0 (the minima are clamped afterwards).
    """
    if q.dtype != acc and q.is_cuda:
        try:
            return torch.mm(q, ref.T, out_dtype=acc).mul_(-2).add_(sq_ref).add_(sq_q[:, None])
        except TypeError:  # torch without mm(out_dtype=): multiply in acc (no half-precision rounding either)
            pass
    out = buf[:q.shape[0] * ref.shape[0]].view(q.shape[0], ref.shape[0])  # (R, M)
    return torch.addmm(sq_ref[None, :], q.to(acc), ref.to(acc).T, alpha=-2, out=out).add_(sq_q[:, None])


def _runs(ids: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs ``[a, b)`` of sorted image indices (slices of the feature matrix, no copy)."""
    runs: list[tuple[int, int]] = []
    for j in ids:
        if runs and runs[-1][1] == j:
            runs[-1] = (runs[-1][0], j + 1)
        else:
            runs.append((j, j + 1))
    return runs


def _nearest_all(features: torch.Tensor, chunk: int, precision: str, query: Sequence[int] | None) -> torch.Tensor:
    """Distances from each query patch to every image's nearest patch, each unordered pair of images once.

    Returns ``d`` (Q, L, N) in the accumulation dtype: ``d[a, p, j] = min_q |Z_{i_a,p} - Z_{j,q}|``
    for the a-th query image i_a, ``inf`` where j is i_a itself. One block of squared distances
    between images i and j gives i's nearest distances to j (its row minima) and j's to i (its
    column minima), so a pair of query images is computed once, by the first of the two in
    query order; a query image against a non-query image is computed once too (one direction
    needed). See :func:`msm` for the blocking and the arithmetic.
    """
    n, length, c = features.shape
    if precision not in HALF_DTYPES:
        raise TPSLabError(f"precision must be one of {sorted(HALF_DTYPES)}, got {precision!r}")
    acc = torch.float64 if features.dtype == torch.float64 else torch.float32
    z = features.reshape(n * length, c).to(acc)  # (N*L, C)
    half = HALF_DTYPES[precision]
    if half is not None and z.is_cuda:
        z = z.to(half)
    sq = torch.linalg.vector_norm(z, dim=-1, dtype=acc).square_()  # (N*L,) squared norms, no (N*L, C) temporary
    images = list(range(n)) if query is None else [int(i) for i in query]
    if len(set(images)) != len(images) or any(not 0 <= i < n for i in images):
        raise TPSLabError(f"query must list distinct images in [0, {n}), got {list(images)}")
    slot = {img: a for a, img in enumerate(images)}  # query image -> its row of the result
    d = torch.full((len(images), length, n), float("inf"), dtype=acc, device=z.device)  # (Q, L, N)
    rows = min(length, max(1, math.isqrt(chunk)))  # query patches per block
    per_block = max(1, chunk // (rows * length))  # reference images per block
    buf = torch.empty(rows * min(per_block, n) * length, dtype=acc, device=z.device)  # one block of distances
    for a, i in enumerate(images):
        zi, sqi = z[i * length:(i + 1) * length], sq[i * length:(i + 1) * length]  # (L, C), (L,)
        others = [j for j in range(n) if j != i and slot.get(j, len(images)) > a]  # pairs not scored yet
        for j0, j1 in (r for run in _runs(others) for r in _split(run, per_block)):
            ref, sq_ref = z[j0 * length:j1 * length], sq[j0 * length:j1 * length]  # (J*L, C), (J*L,)
            col = torch.full((j1 - j0, length), float("inf"), dtype=acc, device=z.device)  # (J, L) j's minima to i
            for r0 in range(0, length, rows):
                r1 = min(length, r0 + rows)
                part = _d2(zi[r0:r1], ref, sqi[r0:r1], sq_ref, acc, buf).view(r1 - r0, j1 - j0, length)  # (R, J, L)
                d[a, r0:r1, j0:j1] = part.amin(dim=-1)  # i's patches to each j's nearest patch
                torch.minimum(col, part.amin(dim=0), out=col)  # each j's patches to i's nearest patch
            for j in range(j0, j1):
                if j in slot:
                    d[slot[j], :, i] = col[j - j0]
    return d.clamp_min_(0).sqrt_()


def _split(run: tuple[int, int], size: int) -> Iterator[tuple[int, int]]:
    """``[a, b)`` in pieces of at most ``size``."""
    for s in range(run[0], run[1], size):
        yield s, min(run[1], s + size)


def nearest_distances(
    features: torch.Tensor, query: Sequence[int], chunk: int = 2**24, precision: str = "float32"
) -> torch.Tensor:
    """For each patch of the query images, the distance to every image's nearest patch (what MSM ranks).

    Args:
        features: (N, L, C) unit-length patch features (:func:`lnamd`).
        query: the images to look at (a few: the result holds ``len(query) * L * N`` numbers).
        chunk: see :func:`msm`.
        precision: see :func:`msm`.

    Returns:
        (Q, L, N) distances; ``inf`` at each image's own column.
    """
    return _nearest_all(features, chunk, precision, query)


def msm(
    features: torch.Tensor,
    interval: tuple[float, float] = MSM_INTERVAL,
    chunk: int = 2**24,
    precision: str = "float32",
    query: Sequence[int] | None = None,
) -> torch.Tensor:
    """Mutual scores of every patch of every image against the other images of the set.

    Reference: ``MSM`` with ``compute_scores_fast`` (_MSM.py:10-59): for image i, patch p and
    each other image j, the distance to j's nearest patch; then the mean of those N-1 values at
    sorted ranks ``[k0, k1)`` (:func:`msm_ranks`; the smallest 30% by default).

    Each unordered pair of images is computed once: one block of squared distances between
    image i's patches and image j's gives i's nearest distances to j (row minima) and j's to i
    (column minima); an image is never compared with itself. Memory-bounded: the N*L x N*L
    distance matrix is never formed. Image i's patches go in blocks of ``rows`` against blocks
    of ``J`` later images, ``rows * J * L <= chunk``, and only the minima are kept. Squared
    distances use ``|a|^2 + |b|^2 - 2 a.b`` (as ``torch.cdist`` does for large inputs), the
    minima are clamped at 0 and their square root is taken last.

    Time: ``N (N - 1) / 2 * L^2 C`` multiply-adds, half the reference's ``N (N - 1) L^2 C``.
    At N = 200, L = 1369, C = 1024 that is 3.8e13 per layer and degree. Memory: ``N L C``
    features, ``chunk`` distances and the ``N x L x N`` nearest distances (N/C of the
    features' size; 220 MB at that size).

    Args:
        features: (N, L, C) unit-length patch features of one layer and degree (:func:`lnamd`).
        interval: ``(topmin_min, topmin_max)``, fractions of N-1 (or counts if >= 1).
        chunk: most distances computed at once (2**24 = 64 MB in float32).
        precision: ``"float32"`` (the reference), or ``"float16"``/``"bfloat16"`` features with
            float32 accumulation of the dot products; half precisions apply on CUDA only
            (on CPU the features stay as they are).
        query: score only these images (still against all the others); None = all N.

    Returns:
        (N, L) scores (or (len(query), L)) in the accumulation dtype (float64 for float64
        input, else float32).
    """
    k0, k1 = msm_ranks(features.shape[0], interval)
    d = _nearest_all(features, chunk, precision, query)  # (Q, L, N), inf at each image's own column
    scores = torch.empty(d.shape[:2], dtype=d.dtype, device=d.device)  # (Q, L)
    for a in range(d.shape[0]):  # one image at a time: the top-k temporary stays (L, k1)
        scores[a] = d[a].topk(k1, dim=1, largest=False, sorted=True).values[:, k0:k1].mean(dim=1)
    return scores


def rscin(scores: torch.Tensor, embeddings: torch.Tensor, k_list: Sequence[int] = (1, 2, 3)) -> torch.Tensor:
    """Re-score images by their constrained image-level neighbourhood (RsCIN).

    Reference: ``RsCIN``/``MMO`` (_RsCIN.py:5-32) on the L2-normalised image embeddings
    (musc.py:175). ``s = (a - min a) / (max a - min a)``; ``W = E E^T``; for each k, keep the
    k largest entries of each row of W (the image itself included) and zero the rest,
    ``P_k = D_k^{-1} W_k`` (row-normalised), ``s_k = P_k s``; result ``mean_k s_k``. k = 1 gives
    ``s`` back. The reference zeroes the N-k smallest entries instead of keeping the k largest:
    the same unless rows have ties at the boundary. With 0 in ``k_list`` (or an empty list) the
    reference returns the scores unchanged, and so does this function.

    Args:
        scores: (N,) image scores (the maximum of each anomaly map).
        embeddings: (N, D) image embeddings, normalised here.
        k_list: neighbourhood sizes ([1, 2, 3]; [1, 8, 9] for VisA).

    Returns:
        (N,) scores in float64: convex combinations of the min-max-normalised scores, so in
        [0, 1], whenever the kept similarities are non-negative (as for CLIP embeddings of one class).

    Raises:
        TPSLabError: if some k exceeds N, or all scores are equal (the reference returns NaN).
    """
    if not k_list or 0 in k_list:
        return scores.double()
    n = scores.shape[0]
    if max(k_list) > n:
        raise TPSLabError(f"RsCIN k_list {list(k_list)} needs at least {max(k_list)} images, got {n}")
    s = scores.double()
    spread = s.max() - s.min()
    if spread == 0:
        raise TPSLabError(f"RsCIN: all {n} image scores are equal; min-max normalisation is undefined")
    s = (s - s.min()) / spread  # (N,)
    e = F.normalize(embeddings.double(), dim=-1)  # (N, D)
    w = e @ e.T  # (N, N) cosine similarities, diagonal 1
    out = torch.zeros_like(s)
    for k in k_list:
        top = w.topk(k, dim=1)  # k most similar images per row
        wk = torch.zeros_like(w).scatter_(1, top.indices, top.values)  # (N, N) W_k
        out += (wk / wk.sum(dim=1, keepdim=True)) @ s  # P_k s
    return out / len(k_list)


def auto_group_size(n_images: int, group_size: int | None, large: int = 1000, default: int = 200) -> int:
    """The group size used for a class of ``n_images`` (docs/baselines.md#decision-8-4).

    ``None`` means the whole class, unless it has more than ``large`` images: then groups of
    ``default``. An explicit ``group_size`` is used as given.

    >>> auto_group_size(167, None), auto_group_size(3000, None), auto_group_size(3000, 500)
    (167, 200, 500)
    """
    if group_size is None:
        return n_images if n_images <= large else default
    if group_size < 1:
        raise TPSLabError(f"group_size must be positive, got {group_size}")
    return group_size


def deal_groups(defect_types: Sequence[str], group_size: int, seed: int = 42) -> list[list[int]]:
    """Split a class into ``ceil(N / group_size)`` groups, stratified by defect type.

    Reference: ``sub_datasets`` (datasets/mvtec.py:73-93) with ``divide_num`` groups: seed
    Python's ``random`` with ``seed``; for each defect type in order of first appearance, shuffle
    its images and deal them round-robin (the image at shuffled position p goes to group
    p mod divide_num). Groups have about ``group_size`` images (up to one more per defect type).

    Args:
        defect_types: the defect type (``specie_name``; ``"good"`` for normal images) of each image.
        group_size: target number of images per group.
        seed: seed of the shuffle (42 in the reference).

    Returns:
        For each group, the indices of its images (each image in exactly one group).

    >>> deal_groups(["good"] * 4 + ["crack"] * 2, group_size=3)
    [[2, 3, 5], [1, 0, 4]]
    """
    n = len(defect_types)
    n_groups = max(1, math.ceil(n / group_size))
    if n_groups == 1:
        return [list(range(n))]
    by_type: dict[str, list[int]] = {}
    for i, t in enumerate(defect_types):
        by_type.setdefault(t, []).append(i)
    rng = random.Random(seed)
    groups: list[list[int]] = [[] for _ in range(n_groups)]
    for ids in by_type.values():
        rng.shuffle(ids)
        for pos, i in enumerate(ids):
            groups[pos % n_groups].append(i)
    return groups
