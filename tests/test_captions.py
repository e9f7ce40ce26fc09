"""Measured digit attributes and the prompts written from them (chapter 13)."""

import pytest
import torch

from genai_course import captions as C
from genai_course.models.text_encoder import WordTokenizer


def _canvas() -> torch.Tensor:
    return torch.zeros(1, 1, 28, 28)


@pytest.mark.parametrize("w, length", [(1, 10), (3, 20), (4, 7)])
def test_thickness_of_a_rectangle_is_wl_over_l_plus_w(w, length):
    x = _canvas()
    x[0, 0, 2 : 2 + length, 5 : 5 + w] = 1.0
    assert C.stroke_thickness(x).item() == pytest.approx(w * length / (length + w), rel=1e-6)
    assert C.stroke_thickness(x.transpose(2, 3)).item() == pytest.approx(w * length / (length + w))


def test_thickness_grows_with_the_stroke_and_is_zero_without_ink():
    thin, thick = _canvas(), _canvas()
    thin[0, 0, 4:24, 10:12] = 1
    thick[0, 0, 4:24, 10:15] = 1
    t = C.stroke_thickness(torch.cat([thin, thick, _canvas()]))
    assert t[0] < t[1] and t[2] == 0


def test_slant_of_lines_is_their_shift_per_row_upwards():
    right, left, upright = _canvas(), _canvas(), _canvas()
    for r in range(4, 24):
        right[0, 0, r, 24 - r] = 1.0  # the top is further right
        left[0, 0, r, r] = 1.0
        upright[0, 0, r, 14] = 1.0
    s = C.slant(torch.cat([right, left, upright, _canvas()]))
    torch.testing.assert_close(s, torch.tensor([1.0, -1.0, 0.0, 0.0]))
    half = _canvas()
    for r in range(4, 24, 2):  # two rows per column: half a column per row
        half[0, 0, r : r + 2, 20 - (r - 4) // 2] = 1.0
    assert 0.4 < C.slant(half).item() < 0.6


def test_attributes_reject_what_is_not_a_grey_image_batch():
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        C.slant(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        C.stroke_thickness(torch.full((1, 1, 8, 8), 2.0))


def test_tertile_bins_split_each_class_in_thirds():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(300)
    values = torch.randn(900, generator=g) + 10 * labels  # classes on different scales
    cuts = C.class_tertiles(values, labels, classes=3)
    assert cuts.shape == (3, 2) and (cuts[:, 0] < cuts[:, 1]).all()
    bins = C.attribute_bins(values, labels, cuts)
    for k in range(3):
        counts = torch.bincount(bins[labels == k], minlength=3)
        assert counts.tolist() == [100, 100, 100]
    # a larger value never gets a lower bin within a class
    order = torch.argsort(values[:300])
    assert (bins[:300][order].diff() >= 0).all()
    with pytest.raises(ValueError, match="integers in"):
        C.class_tertiles(values, labels.float(), classes=3)
    with pytest.raises(ValueError, match="at least 3"):
        C.class_tertiles(torch.zeros(2), torch.tensor([0, 0]), classes=2)


def test_prompts_name_the_digit_and_only_the_attributes_it_has():
    n = 300
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 10, (n,), generator=g)
    thick = torch.randint(0, 3, (n,), generator=g)
    lean = torch.randint(0, 3, (n,), generator=g)
    prompts = C.describe_digits(labels, thick, lean, variants=2, seed=5)
    assert len(prompts) == 2 * n
    assert prompts == C.describe_digits(labels, thick, lean, variants=2, seed=5)
    tok = WordTokenizer(C.PROMPT_WORDS, max_words=8)
    tok.encode(prompts)  # every word is in the vocabulary
    for i, p in enumerate(prompts):
        words, k = p.split(), int(labels[i % n])
        assert C.NUMBER_WORDS[k] in words or str(k) in words
        assert ("thin" in words) <= (thick[i % n] == 0) and ("thick" in words) <= (
            thick[i % n] == 2
        )
        assert ("upright" in words) <= (lean[i % n] == 0) and ("slanted" in words) <= (
            lean[i % n] == 2
        )
    always = C.describe_digits(labels, thick, lean, p_attribute=1.0)
    assert all(("thick" in p.split()) == (b == 2) for p, b in zip(always, thick.tolist()))
    never = C.describe_digits(labels, thick, lean, p_attribute=0.0)
    assert not any(w in p.split() for p in never for w in ("thin", "thick", "upright", "slanted"))
    with pytest.raises(ValueError, match="bins must be integers"):
        C.describe_digits(labels, thick + 3, lean)
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        C.describe_digits(labels, thick[:5], lean)


def test_plain_prompts():
    assert C.prompt(7) == "a seven"
    assert C.prompt(7, "thick") == "a thick seven"
    assert C.prompt(8) == "an eight" and C.prompt(4, None, "upright") == "an upright four"
    assert C.prompt(4, "thin", "slanted") == "a thin slanted four"
    with pytest.raises(ValueError, match="unknown attribute 'bold'"):
        C.prompt(1, "bold")
    with pytest.raises(ValueError, match="label must be"):
        C.prompt(10)


def test_caption_digits_bins_each_attribute_by_the_tertiles_of_the_digits_given():
    from genai_course import data

    x, y = data.load_mnist("val")
    thick, lean = C.digit_attribute_bins(x, y)
    t = C.stroke_thickness(x)
    assert torch.equal(thick, C.attribute_bins(t, y, C.class_tertiles(t, y)))
    assert abs(torch.bincount(lean, minlength=3).float() / len(y) - 1 / 3).max() < 0.02
    prompts = C.caption_digits(x, y, variants=2, p_attribute=1.0, seed=3)
    assert prompts == C.describe_digits(y, thick, lean, variants=2, p_attribute=1.0, seed=3)
    assert all(("slanted" in p.split()) == (b == 2) for p, b in zip(prompts, lean.tolist()))
