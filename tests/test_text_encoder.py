"""The tiny text encoder and the text-conditioned U-Net of chapter 13."""

import json

import pytest
import torch

from genai_course.models.diffusion import Diffusion, DiffusionConfig
from genai_course.models.text_encoder import (
    TextConditionedUNet,
    TextEncoder,
    TextEncoderConfig,
    WordTokenizer,
)

WORDS = ("a", "thick", "thin", "slanted", "seven", "zero", "7")


def _text(**kw) -> TextEncoderConfig:
    return TextEncoderConfig(
        **{**dict(vocabulary=WORDS, max_words=4, width=16, layers=1, heads=2, out_dim=8), **kw}
    )


@pytest.fixture
def text_unet(tiny_unet):
    return TextConditionedUNet(tiny_unet(cond_dim=8), TextEncoder(_text())).eval()


# ----------------------------------------------------------------------------------------------
# tokenizer


def test_tokenizer_ids_are_word_positions_plus_one_padded_with_zero():
    tok = WordTokenizer(WORDS, max_words=4)
    ids = tok.encode(["A thick, 7!", "zero", ""])
    assert ids.dtype == torch.long and ids.shape == (3, 4)
    assert ids.tolist() == [[1, 2, 7, 0], [6, 0, 0, 0], [0, 0, 0, 0]]
    assert tok.decode(ids) == ["a thick 7", "zero", ""]
    assert tok.vocab_size == len(WORDS) + 1
    assert tok.encode("seven").shape == (1, 4)


def test_tokenizer_rejects_unknown_and_long_prompts_naming_what_it_knows():
    tok = WordTokenizer(WORDS, max_words=2)
    with pytest.raises(ValueError, match=r"unknown word\(s\) \['blue'\].*known words: a, thick"):
        tok.encode("a blue seven")
    with pytest.raises(ValueError, match="has 3 words; at most 2"):
        tok.encode("a thick seven")
    with pytest.raises(TypeError, match="must be a str"):
        tok.encode([7])
    with pytest.raises(ValueError, match="repeated"):
        WordTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="bad: \\['Seven'\\]"):
        WordTokenizer(["a", "Seven"])
    with pytest.raises(ValueError, match="shape \\(B, L\\)"):
        tok.decode(torch.zeros(3, dtype=torch.long))


# ----------------------------------------------------------------------------------------------
# encoder


def test_encoder_maps_prompts_to_vectors_that_depend_on_the_words_and_their_order():
    enc = TextEncoder(_text()).eval()
    with torch.no_grad():
        out = enc.encode(["a thick seven", "a seven", "thick a seven", ""])
    assert out.shape == (4, 8) and torch.isfinite(out).all()
    assert (out[0] - out[1]).abs().max() > 1e-4  # another word
    assert (out[0] - out[2]).abs().max() > 1e-4  # another order (positions)


def test_padding_is_masked_so_its_embedding_changes_nothing():
    enc = TextEncoder(_text()).eval()
    ids = enc.tokenizer.encode(["a thick seven", "zero", ""])
    with torch.no_grad():
        before = enc(ids)
        enc.token_emb.weight[0].normal_()
        after = enc(ids)
    torch.testing.assert_close(before, after)


def test_encoder_rejects_bad_ids_and_configs():
    enc = TextEncoder(_text())
    with pytest.raises(ValueError, match=r"shape \(B, 4\)"):
        enc(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        enc(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"must be in \[0, 8\)"):
        enc(torch.full((1, 4), 8))
    with pytest.raises(ValueError, match="must divide width"):
        _text(width=10, heads=4)
    with pytest.raises(ValueError, match="layers must be >= 1"):
        _text(layers=0)


# ----------------------------------------------------------------------------------------------
# text-conditioned U-Net inside Diffusion


def test_no_prompt_is_the_empty_prompt(text_unet):
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 5, 9])
    empty = text_unet.tokenize(["", "", ""])
    with torch.no_grad():
        torch.testing.assert_close(text_unet(x, t), text_unet(x, t, cond=empty))
        assert (
            text_unet(x, t, cond=text_unet.tokenize(["a seven"] * 3)) - text_unet(x, t)
        ).abs().max() > 1e-5


def test_the_unet_and_encoder_widths_must_agree(tiny_unet):
    with pytest.raises(
        ValueError, match=r"cond_dim \(5\) must equal the text encoder's out_dim \(8\)"
    ):
        TextConditionedUNet(tiny_unet(cond_dim=5), TextEncoder(_text()))


def test_diffusion_takes_token_ids_as_its_condition_and_guides_with_the_empty_prompt(text_unet):
    d = Diffusion(text_unet, DiffusionConfig(timesteps=20, image_shape=(1, 8, 8))).eval()
    assert d.cond_dim == 4 and d.num_classes == 0 and d.is_conditional
    assert d.config.text == text_unet.encoder.config and d.config.unet == text_unet.unet.config
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 17])
    ids = text_unet.tokenize(["a thick seven", "zero"])
    with torch.no_grad():
        uncond, cond = d.eps(x, t), d.eps(x, t, cond=ids)
        torch.testing.assert_close(d.eps(x, t, cond=ids, guidance=0.0), uncond)
        torch.testing.assert_close(d.eps(x, t, cond=ids, guidance=1.0), cond)
        torch.testing.assert_close(
            d.eps(x, t, cond=ids, guidance=2.5),
            uncond + 2.5 * (cond - uncond),
            atol=1e-5,
            rtol=1e-5,
        )
    # one prompt (L,) for every sample keeps its integer dtype
    out = d.ddim_sample(3, steps=2, cond=ids[0], guidance=2.0)
    assert out.shape == (3, 1, 8, 8) and 0 <= out.min() and out.max() <= 1


def test_prompt_dropout_trains_the_empty_prompt(text_unet):
    """With p_uncond near 1 every prompt is dropped: the loss is the unconditional one."""
    d = Diffusion(
        text_unet.train(), DiffusionConfig(timesteps=20, image_shape=(1, 8, 8), p_uncond=0.999)
    )
    x = torch.rand(4, 1, 8, 8)
    ids = text_unet.tokenize(["a seven"] * 4)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    dropped, _ = d.loss((x, ids), generator=g1)
    empty, _ = d.loss((x, torch.zeros_like(ids)), generator=g2)
    torch.testing.assert_close(dropped, empty)
    dropped.backward()
    grad = text_unet.encoder.token_emb.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # trained jointly


def test_text_diffusion_rebuilds_from_its_json_config_and_the_pretrained_folder(
    tmp_path, text_unet
):
    from genai_course.pretrained import load_pretrained, save_pretrained

    d = Diffusion(text_unet, DiffusionConfig(timesteps=20, image_shape=(1, 8, 8)))
    config = DiffusionConfig(**json.loads(json.dumps(d.config.to_dict())))
    assert config == d.config
    assert isinstance(Diffusion.from_config(config).unet, TextConditionedUNet)
    save_pretrained(d, "tiny-text", tmp_path, command="test", metrics={})
    loaded = load_pretrained("tiny-text", folder=tmp_path)
    ids = text_unet.tokenize(["a thick seven"] * 2)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    torch.testing.assert_close(
        d.ddim_sample(2, steps=3, cond=ids, generator=g1),
        loaded.ddim_sample(2, steps=3, cond=ids, generator=g2),
    )
    with pytest.raises(ValueError, match="text must be a TextEncoderConfig"):
        DiffusionConfig(text="words")
    with pytest.raises(ValueError, match="differ from the configs"):
        Diffusion(
            text_unet, DiffusionConfig(unet=text_unet.unet.config, text=_text(width=32, out_dim=8))
        )
