"""ImageBindDC's losses against formulas written here in NumPy (float64), from NCFM's ``CFLossFunc``
and METHODS.md section 5."""

import numpy as np
import pytest
import torch

from trainer.losses.cf import (
    LossWeights,
    cf_terms,
    cfd,
    cfd_sets,
    characteristic,
    condense_loss,
    cross_modal,
    draw_frequencies,
    joint_modal,
)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ncfm_cfd(real, syn, t, alpha, beta):
    """NCFM/NCFM.py CFLossFunc.forward, line by line, in NumPy."""
    def stats(x):
        proj = t @ x.T
        re, im = np.cos(proj).mean(1), np.sin(proj).mean(1)
        return re, im, np.sqrt(re * re + im * im)
    re_s, im_s, n_s = stats(syn)
    re_r, im_r, n_r = stats(real)
    amp = (n_r - n_s) ** 2
    pha = np.maximum(2 * (n_r * n_s - re_s * re_r - im_s * im_r), 1e-12)
    return np.mean(np.sqrt(alpha * amp + beta * pha))


def tensors(*arrays):
    return [torch.from_numpy(a) for a in arrays]


@pytest.fixture
def sets():
    rng = np.random.default_rng(0)
    real = unit(rng.standard_normal((50, 12)))
    syn = unit(rng.standard_normal((7, 12)) + 0.5)
    t = rng.standard_normal((300, 12))
    return real, syn, t


@pytest.mark.parametrize(("alpha", "beta"), [(0.5, 0.5), (0.9, 0.1), (1.0, 0.0)])
def test_cfd_equals_ncfm(sets, alpha, beta):
    real, syn, t = sets
    got = cfd_sets(*tensors(real, syn, t), alpha=alpha, beta=beta)
    assert float(got) == pytest.approx(ncfm_cfd(real, syn, t, alpha, beta), rel=1e-10)


def test_amplitude_plus_phase_is_the_squared_distance_of_the_characteristic_functions(sets):
    real, syn, t = sets
    r, s = (characteristic(x, tt) for x, tt in [tensors(real, t), tensors(syn, t)])
    amp, pha = cf_terms(r, s)
    phi_r = np.exp(1j * (t @ real.T)).mean(1)
    phi_s = np.exp(1j * (t @ syn.T)).mean(1)
    np.testing.assert_allclose((amp + pha)[:, 0].numpy(), np.abs(phi_r - phi_s) ** 2, rtol=1e-9, atol=1e-11)
    # so with alpha = beta the CFD is sqrt(alpha) times the mean modulus of phi_R - phi_S
    got = cfd(r, s, 0.5, 0.5)[0]
    assert float(got) == pytest.approx(np.sqrt(0.5) * np.abs(phi_r - phi_s).mean(), rel=1e-6)


def test_cfd_is_zero_on_identical_sets_and_symmetric(sets):
    real, syn, t = sets
    r, s, tt = tensors(real, syn, t)
    assert float(cfd_sets(r, r, tt)) < 1e-5  # only NCFM's 1e-12 phase floor remains: sqrt(0.5e-12)
    assert float(cfd_sets(r, s, tt)) > 0.05
    assert float(cfd_sets(r, s, tt)) == pytest.approx(float(cfd_sets(s, r, tt)), rel=1e-12)
    # a permutation of a set is the same set
    assert float(cfd_sets(r, r[torch.randperm(len(r))], tt)) < 1e-5


def test_grouped_characteristic_equals_one_set_at_a_time(sets):
    real, _syn, t = sets
    group = np.repeat([0, 1, 2], [10, 25, 15])
    got = characteristic(*tensors(real, t), group=torch.from_numpy(group), groups=3)
    for c in range(3):
        one = characteristic(*tensors(real[group == c], t))
        torch.testing.assert_close(got.real[:, c], one.real[:, 0])
        torch.testing.assert_close(got.imag[:, c], one.imag[:, 0])
    stacked = characteristic(torch.from_numpy(real[:30].reshape(3, 10, 12)), torch.from_numpy(t))
    torch.testing.assert_close(stacked.real[:, 1], characteristic(*tensors(real[10:20], t)).real[:, 0])


def linked(seed=1, classes=3, per=(9, 14, 6), m=4, d=10):
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(classes), per)
    ra, rb = unit(rng.standard_normal((len(group), d))), unit(rng.standard_normal((len(group), d)))
    sa, sb = unit(rng.standard_normal((classes, m, d))), unit(rng.standard_normal((classes, m, d)))
    return group, ra, rb, sa, sb


def cos(u, v):
    return u @ v / np.linalg.norm(u) / np.linalg.norm(v)


def test_cross_modal_term_is_one_minus_the_cosine_of_mean_products():
    group, ra, rb, sa, sb = linked()
    got = cross_modal(*tensors(ra, rb, group, sa, sb)).numpy()
    for c in range(3):
        want = 1 - cos((ra[group == c] * rb[group == c]).mean(0), (sa[c] * sb[c]).mean(0))
        assert got[c] == pytest.approx(want, rel=1e-10)


def test_joint_term_is_one_minus_the_cosine_of_cross_product_matrices():
    group, ra, rb, sa, sb = linked(d=10)
    rb, sb = rb[:, :6], sb[:, :, :6]  # any two dims
    shuffle = np.random.default_rng(3).permutation(len(group))  # rows need not come sorted by class
    got = joint_modal(*tensors(ra[shuffle], rb[shuffle], group[shuffle], sa, sb)).numpy()
    for c in range(3):
        a, b = ra[group == c], rb[group == c]
        want = 1 - cos((a.T @ b / len(a)).ravel(), (sa[c].T @ sb[c] / sa.shape[1]).ravel())
        assert got[c] == pytest.approx(want, rel=1e-10)


def test_the_total_is_uni_plus_weighted_cross_and_joint():
    group, ra, rb, sa, sb = linked()
    t = {"image": np.random.default_rng(5).standard_normal((64, 10)),
         "text": np.random.default_rng(6).standard_normal((64, 10))}
    real = {"image": torch.from_numpy(ra), "text": torch.from_numpy(rb)}
    syn = {"image": torch.from_numpy(sa), "text": torch.from_numpy(sb)}
    freqs = {m: torch.from_numpy(v) for m, v in t.items()}
    w = LossWeights(alpha=0.5, beta=0.5, cross=0.3, joint=2.0)
    terms = condense_loss(real, torch.from_numpy(group), syn, freqs, w)
    for c in range(3):
        uni = ncfm_cfd(ra[group == c], sa[c], t["image"], 0.5, 0.5) + ncfm_cfd(rb[group == c], sb[c], t["text"], 0.5, 0.5)
        assert float(terms.uni[c]) == pytest.approx(uni, rel=1e-10)
        cross = 1 - cos((ra[group == c] * rb[group == c]).mean(0), (sa[c] * sb[c]).mean(0))
        assert float(terms.cross[c]) == pytest.approx(cross, rel=1e-10)
    torch.testing.assert_close(terms.total, terms.uni + 0.3 * terms.cross + 2.0 * terms.joint)
    off = condense_loss(real, torch.from_numpy(group), syn, freqs, LossWeights(cross=0.0, joint=0.0))
    torch.testing.assert_close(off.total, terms.uni)


def test_frequencies_are_gaussian_with_sigma():
    t = draw_frequencies(4000, 50, 0.3, torch.Generator().manual_seed(0))
    assert t.shape == (4000, 50)
    assert float(t.std()) == pytest.approx(0.3, rel=0.02)
    assert abs(float(t.mean())) < 0.01
