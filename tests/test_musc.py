"""MuSc: LNAMD, MSM and RsCIN against brute-force oracles (explicit loops, float64), and the detector."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tpslab.data.dataset import mask_to_tensor
from tpslab.methods import build_method
from tpslab.methods.musc import MuSc, Settings, mutual_maps, upsample_maps
from tpslab.methods.musc_ops import auto_group_size, deal_groups, lnamd, msm, msm_ranks, nearest_distances, rscin
from tpslab.utils import TPSLabError


def tokens(n: int = 5, h: int = 4, c: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, h * h, c, generator=g, dtype=torch.float64) * 3 + 1  # (N, L, C)


# -- oracles: the definitions, one number at a time ------------------------------------------

def lnamd_oracle(x: torch.Tensor, r: int, eps: float = 1e-5) -> torch.Tensor:
    n, length, c = x.shape
    h = math.isqrt(length)
    out = torch.zeros_like(x)
    pad = (r - 1) // 2
    for i in range(n):
        mean, var = x[i].mean(), x[i].var(unbiased=False)  # one LN over all of [C, H, W]
        y = ((x[i] - mean) / torch.sqrt(var + eps)).reshape(h, h, c)  # (H, W, C)
        for py in range(h):
            for px in range(h):
                acc = torch.zeros(c, dtype=x.dtype)
                for dy in range(-pad, pad + 1):
                    for dx in range(-pad, pad + 1):
                        yy, xx = py + dy, px + dx
                        if 0 <= yy < h and 0 <= xx < h:
                            acc += y[yy, xx]
                v = acc / (r * r)  # zero padding counts in the mean
                out[i, py * h + px] = v / v.norm()
    return out


def msm_oracle(z: torch.Tensor, frac: float = 0.3) -> torch.Tensor:
    n, length, _ = z.shape
    k = int((n - 1) * frac)
    out = torch.zeros(n, length, dtype=z.dtype)
    for i in range(n):
        for p in range(length):
            nearest = []
            for j in range(n):
                if j != i:
                    nearest.append(min(float((z[i, p] - z[j, q]).norm()) for q in range(length)))
            out[i, p] = sum(sorted(nearest)[:k]) / k
    return out


def rscin_oracle(a: torch.Tensor, e: torch.Tensor, k_list: list[int]) -> torch.Tensor:
    n = len(a)
    s = [(float(v) - float(a.min())) / (float(a.max()) - float(a.min())) for v in a]
    en = [v / v.norm() for v in e]
    w = [[float(en[i] @ en[j]) for j in range(n)] for i in range(n)]
    result = [0.0] * n
    for k in k_list:
        for i in range(n):
            keep = sorted(range(n), key=lambda j: -w[i][j])[:k]
            total = sum(w[i][j] for j in keep)
            result[i] += sum(w[i][j] * s[j] for j in keep) / total / len(k_list)
    return torch.tensor(result, dtype=torch.float64)


# -- the pure functions ---------------------------------------------------------------------

@pytest.mark.parametrize("r", [1, 3, 5])
def test_lnamd_equals_oracle(r):
    x = tokens(n=3, h=5, c=4)
    assert torch.allclose(lnamd(x, r), lnamd_oracle(x, r), atol=1e-12)


def test_lnamd_rejects_even_degree_and_non_square_grid():
    with pytest.raises(TPSLabError, match="odd"):
        lnamd(tokens(), 2)
    with pytest.raises(TPSLabError, match="square"):
        lnamd(torch.randn(2, 15, 3), 1)


def test_msm_equals_oracle():
    z = lnamd(tokens(n=5, h=3, c=5), 3)
    assert torch.allclose(msm(z), msm_oracle(z), atol=1e-10)


def test_msm_averages_the_smallest_fraction_of_other_images():
    z = lnamd(tokens(n=8, h=2, c=4, seed=3), 1)  # k = int(7 * 0.3) = 2
    assert torch.allclose(msm(z), msm_oracle(z), atol=1e-10)
    assert torch.allclose(msm(z, interval=(0.0, 0.5)), msm_oracle(z, 0.5), atol=1e-10)  # k = 3


@pytest.mark.parametrize("chunk", [1, 5, 17, 64, 300, 2**30])
def test_chunked_msm_equals_unchunked(chunk):
    z = lnamd(tokens(n=7, h=4, c=8, seed=1), 3)  # 7 images x 16 patches
    assert torch.allclose(msm(z, chunk=chunk), msm(z, chunk=2**40), atol=1e-12)


def test_msm_query_subset_equals_full_rows():
    z = lnamd(tokens(n=6, h=3, c=5, seed=6), 1)
    assert torch.allclose(msm(z, query=[4, 1], chunk=20), msm(z)[[4, 1]], atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 40, 2**20])
def test_each_pair_once_gives_both_directions(chunk):
    """Row and column minima of one block per pair: every (i, j) entry equals a direct cdist minimum."""
    z = lnamd(tokens(n=6, h=3, c=5, seed=9), 1)
    for query in (None, [4, 1, 5], [0]):
        images = list(range(6)) if query is None else query
        d = nearest_distances(z, images, chunk=chunk)  # (Q, L, N)
        for a, i in enumerate(images):
            for j in range(6):
                want = torch.full((9,), math.inf, dtype=z.dtype) if i == j else torch.cdist(z[i], z[j]).amin(dim=1)
                assert torch.allclose(d[a, :, j], want, atol=1e-12), (query, i, j)
        assert torch.allclose(msm(z, chunk=chunk, query=query), msm(z)[images], atol=1e-12)
    with pytest.raises(TPSLabError, match="distinct"):
        msm(z, query=[1, 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="half-precision MSM runs on CUDA only")
@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_half_precision_msm_on_cuda_is_close(precision):
    z = lnamd(tokens(n=8, h=6, c=64, seed=10).float(), 3).cuda()
    full = msm(z)
    half = msm(z, precision=precision)
    assert half.dtype == torch.float32 and torch.allclose(half, full, atol=1e-2 if precision == "bfloat16" else 2e-3)


def test_nearest_distances_are_what_msm_ranks():
    z = lnamd(tokens(n=5, h=3, c=4, seed=7), 1)
    d = nearest_distances(z, [2], chunk=7)  # (1, L, N)
    assert d.shape == (1, 9, 5) and torch.isinf(d[0, :, 2]).all()
    assert torch.allclose(d[0, 4, 0], torch.cdist(z[2, 4:5], z[0]).min())
    assert torch.allclose(d[0].sort(dim=1).values[:, :1].mean(1), msm(z)[2])  # k = int(4 * 0.3) = 1


def test_msm_float32_close_to_float64():
    z = lnamd(tokens(n=6, h=4, c=16, seed=2), 1)
    assert msm(z.float()).dtype == torch.float32
    assert torch.allclose(msm(z.float()).double(), msm(z), atol=1e-5)


def test_msm_is_permutation_equivariant():
    z = lnamd(tokens(n=6, h=3, c=4, seed=4), 1)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    assert torch.allclose(msm(z[perm]), msm(z)[perm], atol=1e-12)


def test_msm_interval_bounds_as_counts_and_precision_guard():
    z = lnamd(tokens(n=6, h=2, c=3, seed=8), 1)
    assert msm_ranks(6, (1, 3)) == (1, 3) and msm_ranks(11, (0.1, 0.3)) == (1, 3)
    d = nearest_distances(z, list(range(6))).sort(dim=-1).values  # (N, L, N), inf last
    assert torch.allclose(msm(z, interval=(1, 3)), d[..., 1:3].mean(-1), atol=1e-12)
    assert torch.equal(msm(z.float(), precision="bfloat16"), msm(z.float()))  # half precision: CUDA only
    with pytest.raises(TPSLabError, match="precision"):
        msm(z, precision="int8")


def test_too_few_images_is_a_clear_error():
    assert msm_ranks(5) == (0, 1)
    with pytest.raises(TPSLabError, match="at least 5 images"):
        msm(lnamd(tokens(n=4), 1))
    with pytest.raises(TPSLabError, match="at least 5 images"):
        msm_ranks(4)


@pytest.mark.parametrize("k_list", [[1], [1, 2, 3], [2, 5], [5]])
def test_rscin_equals_oracle(k_list):
    g = torch.Generator().manual_seed(5)
    a = torch.rand(5, generator=g, dtype=torch.float64)
    e = torch.randn(5, 3, generator=g, dtype=torch.float64) + 2  # mostly positive similarities
    assert torch.allclose(rscin(a, e, k_list), rscin_oracle(a, e, k_list), atol=1e-12)


def test_rscin_k1_is_min_max_and_errors():
    a = torch.tensor([2.0, 4.0, 3.0, 6.0, 5.0], dtype=torch.float64)
    e = torch.randn(5, 4)
    assert torch.allclose(rscin(a, e, [1]), (a - 2) / 4)
    assert torch.equal(rscin(a, e, [0]), a)  # k = 0: no re-scoring (reference)
    with pytest.raises(TPSLabError, match="at least 9 images"):
        rscin(a, e, [1, 8, 9])
    with pytest.raises(TPSLabError, match="equal"):
        rscin(torch.ones(5), e, [1, 2])


def test_upsampling_aligns_corners():
    up = upsample_maps(torch.tensor([[0.0, 1.0, 2.0, 4.0]]), 4)[0]  # 2x2 grid -> 4x4, align_corners=True
    assert torch.allclose(up[0], torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))  # grid points at the pixel corners
    assert torch.allclose(up[:, 0], torch.tensor([0.0, 2 / 3, 4 / 3, 2.0])) and up[3, 3] == 4.0


# -- groups ---------------------------------------------------------------------------------

def test_group_dealing_is_deterministic_and_stratified():
    types = ["good"] * 300 + ["crack"] * 90 + ["hole"] * 31 + ["good"] * 100 + ["scratch"] * 7
    groups = deal_groups(types, group_size=200, seed=42)
    assert groups == deal_groups(types, group_size=200, seed=42)
    assert groups != deal_groups(types, group_size=200, seed=0)
    assert len(groups) == math.ceil(len(types) / 200) == 3
    assert sorted(i for g in groups for i in g) == list(range(len(types)))
    for t in set(types):
        counts = [sum(types[i] == t for i in g) for g in groups]
        assert max(counts) - min(counts) <= 1, (t, counts)  # each type spread evenly


def test_group_dealing_follows_the_reference_shuffle():
    import random

    types = ["b"] * 5 + ["a"] * 4
    random.seed(42)  # sub_datasets: seed, then shuffle each type's list in turn, deal round-robin
    ids_b, ids_a = list(range(5)), list(range(5, 9))
    random.shuffle(ids_b)
    random.shuffle(ids_a)
    expected = [ids_b[0::2] + ids_a[0::2], ids_b[1::2] + ids_a[1::2]]
    assert deal_groups(types, group_size=5, seed=42) == expected


def test_auto_group_size():
    assert auto_group_size(1000, None) == 1000
    assert auto_group_size(1001, None) == 200
    assert auto_group_size(50, 20) == 20
    with pytest.raises(TPSLabError):
        auto_group_size(50, 0)


# -- the detector -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_musc() -> MuSc:
    return build_method("musc", backbone="tpslab-tiny", pretrained=None, image_size=None, chunk=4096)


def test_predict_set_shapes_and_extras(tiny_musc):
    x = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = tiny_musc.predict_set(x, "bottle")
    assert out.image_scores.shape == (6,) and out.anomaly_maps.shape == (6, 64, 64)
    assert torch.isfinite(out.anomaly_maps).all() and torch.isfinite(out.image_scores).all()
    assert out.extras["groups"].tolist() == [0] * 6 and out.extras["n_groups"] == 1
    assert tiny_musc.blocks == (1, 2, 3, 4) and tiny_musc.protocol.sigma == 0
    assert tiny_musc.transductive and not tiny_musc.trains
    # the maximum of the upsampled maps, min-max normalised, is RsCIN with k = 1
    k1 = rscin(out.extras["max_scores"].double(), torch.randn(6, 4), [1])
    assert torch.allclose(k1.float(), (out.extras["max_scores"] - out.extras["max_scores"].min())
                          / (out.extras["max_scores"].max() - out.extras["max_scores"].min()), atol=1e-6)


def test_predict_set_groups_and_scores_match_the_pieces(tiny_musc):
    x = torch.randn(10, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    musc = MuSc(Settings.from_dict(dict(backbone="tpslab-tiny", pretrained=None, image_size=None, group_size=5,
                                        r_list=[1, 3])), backbone=tiny_musc.backbone)
    types = ["good"] * 6 + ["crack"] * 4
    out = musc.predict_set(x, "bottle", defect_types=types)
    groups = deal_groups(types, 5, 42)
    assert out.extras["n_groups"] == 2
    for gi, idx in enumerate(groups):
        assert out.extras["groups"][idx].tolist() == [gi] * len(idx)
        emb, toks = musc.features(x[idx])
        maps = upsample_maps(mutual_maps(toks, (1, 3)), 64).float()
        assert torch.allclose(out.anomaly_maps[idx], maps, atol=1e-6)


def test_predict_set_too_few_images(tiny_musc):
    with pytest.raises(TPSLabError, match="at least 5 images"):
        tiny_musc.predict_set(torch.randn(4, 3, 64, 64), "screw")
    with pytest.raises(TPSLabError, match="transductive"):
        tiny_musc.predict(torch.randn(4, 3, 64, 64))


def test_settings_reject_unknown_keys_and_bad_values():
    with pytest.raises(TPSLabError, match="unknown musc setting"):
        build_method("musc", backbone="tpslab-tiny", pretrained=None, topk=3)
    with pytest.raises(TPSLabError, match="masks"):
        Settings(masks="any")
    with pytest.raises(TPSLabError, match="odd"):
        Settings(r_list=(2,))
    s = Settings.from_dict({"k_list": [1, 8, 9], "blocks": [6, 12, 18, 24]})
    assert s.k_list == (1, 8, 9) and s.to_dict()["blocks"] == [6, 12, 18, 24]
    assert Settings().quick_gelu is False and Settings().pos_resize == "bicubic"
    with pytest.raises(TPSLabError, match="pos_resize"):
        Settings(pos_resize="nearest")


def test_reference_position_grid_is_bicubic_without_antialias(tiny_musc):
    import torch.nn.functional as F

    musc = build_method("musc", backbone="tpslab-tiny", pretrained=None, image_size=96)
    native = tiny_musc.backbone.clip.visual.positional_embedding  # (1 + 8*8, W), same seed
    resized = musc.backbone.clip.visual.positional_embedding  # (1 + 12*12, W)
    assert musc.image_size == 96 and resized.shape[0] == 1 + 12 * 12
    assert torch.equal(resized[0], native[0])  # class token's position kept
    grid = native[1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    plain = F.interpolate(grid, size=(12, 12), mode="bicubic", align_corners=False)
    smooth = F.interpolate(grid, size=(12, 12), mode="bicubic", align_corners=False, antialias=True)
    assert torch.allclose(resized[1:], plain.permute(0, 2, 3, 1).reshape(144, -1))
    assert not torch.allclose(plain, smooth, atol=1e-3)  # the antialiased kernel differs even when upsampling
    out = musc.predict_set(torch.randn(5, 3, 96, 96), "x")
    assert out.anomaly_maps.shape == (5, 96, 96)


def test_mask_rules(tiny_data):
    square = np.tile([0.0, 0.5, 0.51, 0.999, 1.0], (5, 1))  # (5, 5), already at its size: only the rule
    assert mask_to_tensor(square, 5)[0].tolist() == [0, 0, 1, 1, 1]
    assert mask_to_tensor(square, 5, "eq_one")[0].tolist() == [0, 0, 0, 0, 1]
    with pytest.raises(TPSLabError, match="mask rule"):
        mask_to_tensor(square, 5, "round")
    # evaluation asks the method: MuSc's "eq_one" setting erodes the masks it is scored against
    from tpslab.data.dataset import AnomalyDataset
    from tpslab.methods import build_method

    musc = build_method("musc", backbone="tpslab-tiny", pretrained=None, image_size=None, masks="eq_one")
    assert musc.mask_rule == "eq_one" and build_method("clip", backbone="tpslab-tiny", pretrained=None,
                                                         image_size=None).mask_rule == "gt_half"
    half = AnomalyDataset(tiny_data["heldout"], 64)
    one = AnomalyDataset(tiny_data["heldout"], 64, mask_rule="eq_one")
    i = next(k for k, s in enumerate(half.samples) if s["mask_path"])
    assert one[i]["mask"].sum() <= half[i]["mask"].sum()
