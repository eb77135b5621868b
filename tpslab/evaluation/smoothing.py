"""Gaussian smoothing of anomaly maps as a separable convolution on the maps' own device.

:func:`gaussian_blur` equals ``scipy.ndimage.gaussian_filter(map, sigma)`` applied to each 2-D
map (``mode="reflect"``, ``truncate=4.0``), to float32 rounding, so the evaluation can smooth a
batch where it was predicted (on the GPU) instead of one map at a time on the CPU.

On CPU tensors it calls scipy itself by default: measured on 60 maps of 518 x 518 with sigma 4
(2 cores), scipy takes about 0.8 s, torch's ``conv2d`` with the 33-tap kernels 3-5 s and an
unfold-and-matmul variant about 2 s. On a GPU the convolution costs milliseconds.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["gaussian_blur", "gaussian_kernel1d", "reflect_indices"]


def gaussian_kernel1d(sigma: float, radius: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The normalised kernel ``exp(-x^2 / (2 sigma^2)) / sum`` for ``x = -radius .. radius`` (scipy's)."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    phi = torch.exp(-0.5 / sigma**2 * x**2)
    return (phi / phi.sum()).to(dtype)


def reflect_indices(n: int, radius: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Source index of each position of a length-``n`` axis padded by ``radius`` on both sides.

    scipy's ``mode="reflect"`` (half-sample symmetric): ``d c b a | a b c d | d c b a``, the
    edge sample repeated, continued periodically with period ``2 n`` for pads longer than the
    axis. (torch's ``"reflect"`` padding omits the edge sample and needs pads shorter than the axis.)
    """
    i = torch.arange(-radius, n + radius, device=device).remainder(2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_blur(maps: torch.Tensor, sigma: float, truncate: float = 4.0, backend: str = "auto") -> torch.Tensor:
    """Smooth each 2-D map with a Gaussian, exactly as ``scipy.ndimage.gaussian_filter(map, sigma)``.

    The kernel is scipy's: ``radius = int(truncate * sigma + 0.5)``, weights
    ``exp(-x^2 / (2 sigma^2))`` normalised to sum 1; borders are extended by half-sample
    symmetric reflection (scipy's ``"reflect"``), also when the map is smaller than the radius.
    The ``"torch"`` backend convolves rows then columns (separable) on ``maps.device`` in
    float32 (float64 for float64 maps); the ``"scipy"`` backend runs ``gaussian_filter`` on each
    map on the host. The result is returned in the input's dtype on the input's device.

    Args:
        maps: (..., H, W) tensor of maps, e.g. (N, H, W); any floating dtype and device.
        sigma: standard deviation in pixels; 0 returns the maps unchanged.
        truncate: the kernel's half width in standard deviations.
        backend: ``"torch"``, ``"scipy"``, or ``"auto"``: scipy for CPU tensors (faster there),
            torch elsewhere.

    Returns:
        A tensor of the same shape, dtype and device.

    Raises:
        ValueError: if ``sigma`` is negative or ``backend`` unknown.

    Memory: two padded float32 copies of the batch, ``(H + 2r)(W + 2r)`` each per map.

    Example:
        >>> blurred = gaussian_blur(torch.zeros(2, 8, 8), sigma=1.0)
        >>> tuple(blurred.shape)
        (2, 8, 8)
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if backend not in ("auto", "torch", "scipy"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'scipy', got {backend!r}")
    radius = int(truncate * float(sigma) + 0.5)
    if sigma == 0 or radius == 0:
        return maps.clone()
    shape, dtype = maps.shape, maps.dtype
    h, w = shape[-2:]
    work = torch.float64 if dtype == torch.float64 else torch.float32
    if backend == "scipy" or (backend == "auto" and maps.device.type == "cpu"):
        from scipy.ndimage import gaussian_filter

        host = maps.detach().reshape(-1, h, w).to("cpu", work).numpy()
        out = np.stack([gaussian_filter(m, float(sigma), mode="reflect", truncate=truncate) for m in host])
        return torch.from_numpy(out).reshape(shape).to(maps.device, dtype)
    x = maps.reshape(-1, 1, h, w).to(work)
    kernel = gaussian_kernel1d(float(sigma), radius, work).to(maps.device)
    x = x.index_select(2, reflect_indices(h, radius, maps.device))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))  # along H
    x = x.index_select(3, reflect_indices(w, radius, maps.device))
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))  # along W
    return x.reshape(shape).to(dtype)
