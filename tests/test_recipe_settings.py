"""The typed recipe settings hold exactly what the dict/tuple settings held before them.

``fixtures/recipe_settings.json`` was written from the last commit with the old shapes
(``genai_course/recipes.py`` at 6e016d1): for every settings function and profile, the
``to_dict()`` of the configs the recipes built from the old dicts.
"""

import dataclasses
import json
from pathlib import Path

import pytest

from genai_course import recipes as R
from genai_course.budget import pick
from genai_course.config import Config
from genai_course.recipes.run import Recipe

OLD = json.loads((Path(__file__).parent / "fixtures" / "recipe_settings.json").read_text())
PROFILES = ("smoke", "cpu", "full")
# settings of recipes added after the fixture was written: no old dict shape to compare with
NEWER_THAN_FIXTURE = {"vae_binary_settings"}
# config fields added after the fixture, at the default that keeps the old behaviour
ADDED_AT_DEFAULT = {"gan_settings": {"model": {"augment": "none"}}}


def _new(key: str) -> Config:
    fn, *args = key.split("/")
    if fn == "robust_classifier":
        steps = pick(smoke=4, cpu=300, full=2000, profile=args[0])
        return R.classifier_config(args[0], steps=steps, monitor="val_robust_acc")
    return getattr(R, fn)(*args)


def _plain(values):
    return json.loads(json.dumps(values))  # tuples -> lists, as the fixture holds them


@pytest.mark.parametrize("key", sorted(OLD))
def test_typed_settings_equal_the_old_dict_settings(key):
    new = _plain(_new(key).to_dict())
    for section, fields in ADDED_AT_DEFAULT.get(key.split("/")[0], {}).items():
        for name, default in fields.items():
            assert new[section].pop(name) == default, (key, section, name)
    assert new == OLD[key]


def test_every_settings_function_and_profile_is_compared():
    functions = {k.split("/")[0] for k in OLD}
    expected = {n for n in R.__all__ if n.endswith("_settings")} - NEWER_THAN_FIXTURE
    assert functions >= expected | {"classifier_config"}
    assert not functions & NEWER_THAN_FIXTURE
    assert {k.rsplit("/", 1)[1] for k in OLD} == set(PROFILES)
    assert all(f"gan_settings/{kind}/cpu" in OLD for kind in R.GAN_KINDS)


def test_settings_are_frozen_records_of_config_objects():
    st = R.gan_settings("dcgan", "cpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.n_critic = 2  # type: ignore[misc]
    quick = dataclasses.replace(st.train, steps=10)
    assert quick.steps == 10 and st.train.steps == 2000
    assert type(st).from_dict(st.to_dict()) == st


def test_a_recipe_ships_only_the_checkpoints_its_record_names():
    vq = R.RECIPES["vqvae"]
    assert vq.checkpoint("vqvae-prior") == "vqvae-prior"
    with pytest.raises(ValueError, match="name the one to ship"):
        vq.checkpoint()
    with pytest.raises(ValueError, match="not 'gan-dcgan-mnist'"):
        R.RECIPES["classifier"].checkpoint("gan-dcgan-mnist")
    with pytest.raises(ValueError, match="must name the checkpoints"):
        Recipe("x", (), "nothing", lambda opts: {})
    names = [c for r in R.RECIPES.values() for c in r.checkpoints]
    assert len(names) == len(set(names)) == 15
    assert all(name == r.name for name, r in R.RECIPES.items())


def test_the_manifest_command_is_unchanged():
    opts = R.RunOptions(profile="full", out="genai_course/pretrained")
    assert opts.command("vqvae") == (
        "genai-course train vqvae --profile full --seed 0 --out genai_course/pretrained"
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_the_binarised_vae_is_the_chapter_03_mlp_with_the_vae_trainer_settings(profile):
    st = R.vae_binary_settings(profile)
    assert type(st).from_dict(st.to_dict()) == st
    assert st.model.arch == "mlp" and st.model.likelihood == "bernoulli" and st.model.beta == 1
    grey = R.vae_settings(profile).train
    assert (
        dataclasses.replace(
            st.train, steps=grey.steps, eval_every=grey.eval_every, warmup_steps=grey.warmup_steps
        )
        == grey
    )
    assert st.train.steps == {"smoke": 4, "cpu": 3000, "full": 30000}[profile]
