import numpy as np
import pytest
import torch

from genai_course import data, music
from genai_course.models import GPT, GPTConfig

REEL = """X:1
M:4/4
L:1/8
K:D
A|:d2fd AdfA|B2gB e2ce|dcde fgaf|gefd e2dB:|
|:Adfa b2ab|afdf e2ce|[df]2[ce]2 (3Bcd e>f|gefd d3:|"""


# cleaning and splits


def test_cleaned_tunes_are_split_by_tune_and_offline():
    splits = {split: music.load_tunes(split) for split in data.SPLITS}
    assert min(len(t) for t in splits.values()) > 1000
    seen: set[str] = set()
    for tunes in splits.values():
        assert len(set(tunes)) == len(tunes)
        assert not seen & set(tunes), "a cleaned tune is in two splits"
        seen |= set(tunes)
    assert all(t.startswith(music.TUNE_START) for t in splits["val"])


def test_clean_tune_keeps_music_headers_and_writes_the_default_unit():
    raw = "X:17\nT: A title\nN: a note\nM: 2/4\nK: G\nw: some lyrics\nGABc|d2d2|\nW:more"
    assert music.clean_tune(raw) == "X:1\nM:2/4\nL:1/16\nK:G\nGABc|d2d2|"
    assert "L:1/8" in music.clean_tune("X:1\nM:6/8\nK:D\nDFA|")
    with pytest.raises(ValueError, match="M:"):
        music.clean_tune("X:1\nK:G\nGAB|")
    with pytest.raises(ValueError, match="body"):
        music.clean_tune("X:1\nM:3/4\nK:G\n")


def test_split_tunes_cuts_at_x_lines():
    text = "junk\nX:1\nM:3/4\nK:G\nGAB|\nX:1\nM:2/4\nK:D\nDF|"
    assert music.split_tunes(text) == ["X:1\nM:3/4\nK:G\nGAB|", "X:1\nM:2/4\nK:D\nDF|"]


# checking


def test_tokenize_body_reads_folk_notation():
    kinds = [k for k, _ in music.tokenize_body('"Am"(3ABc {g}A2>B [CEG]2 ^f\'/2 z|1 d:|2 e|]')]
    for kind in ("annotation", "tuplet", "grace_open", "note", "broken", "chord", "rest", "bar"):
        assert kind in kinds
    with pytest.raises(ValueError, match=r"'\$' at column 4"):
        music.tokenize_body("ABc$")


def test_a_real_reel_parses_and_fits_its_metre():
    check = music.check_tune(REEL)
    assert check.parses and check.fits_metre, check
    assert check.metre == "4/4" and check.key == "D"
    assert check.bars >= 8 and check.notes > 50


def test_pickups_are_allowed_but_a_wrong_bar_is_not():
    pickup = "X:1\nM:3/4\nL:1/4\nK:G\nG|ABc|d2B|G2:|\n|:B|cde|d3|G2|]"
    assert music.check_tune(pickup).fits_metre
    wrong = "X:1\nM:3/4\nL:1/4\nK:G\nABc|d2B2|ABc|G3|"
    check = music.check_tune(wrong)
    assert check.parses and not check.fits_metre
    assert check.bars - check.bars_in_metre == 1


@pytest.mark.parametrize(
    "tune, reason",
    [
        ("X:1\nM:3/4\nL:1/8\nK:G\nAB$c|", "unexpected"),
        ("M:3/4\nK:G\nABc|", "X:"),
        ("X:1\nM:3/4\nL:1/8\nABc|", "K:"),
        ("X:1\nM:three\nK:G\nABc|", "metre"),
        ("X:1\nM:3/4\nK:G\n{gAB c|", "grace"),
        ("X:1\nM:3/4\nK:G\n", "body"),
        ("X:1\nM:3/4\nK:G\n|| z2 |", "no notes"),
        ("X:1\nM:3/4\nL:1/8\nK:G\n[CE|", "unexpected"),
    ],
)
def test_invalid_tunes_do_not_parse_and_say_why(tune, reason):
    check = music.check_tune(tune)
    assert not check.parses and not check.fits_metre
    assert reason in check.reason
    with pytest.raises(ValueError, match=reason):
        music.parse_tune(tune)


def test_free_metre_parses_but_cannot_fit():
    check = music.check_tune("X:1\nM:none\nL:1/8\nK:G\nABcd efga|")
    assert check.parses and not check.fits_metre


def test_most_real_tunes_parse_and_fit():
    report = music.check_tunes(music.load_tunes("test")[:60])
    assert report["n"] == 60
    assert report["parse_rate"] >= 0.9 and report["metre_rate"] >= 0.6
    assert report["bar_rate"] >= 0.9


# notes and sound


def test_tune_notes_times_pitches_ties_and_chords():
    notes = music.tune_notes("X:1\nM:4/4\nL:1/4\nK:C\nCDE-E|[CEG]4|", bpm=120)
    assert [n.pitch for n in notes] == [60, 62, 64, 60, 64, 67]
    assert [n.start for n in notes] == [0.0, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert notes[2].duration == pytest.approx(1.0)  # E-E tied: one note of two beats
    assert notes[3].duration == pytest.approx(2.0)
    sharp_key = music.tune_notes("X:1\nM:4/4\nL:1/4\nK:D\nFc'|", bpm=60)
    assert [n.pitch for n in sharp_key] == [66, 85]  # F# and c#'' in D major
    assert sharp_key[1].start == pytest.approx(1.0)


def test_midi_to_hz_is_equal_temperament():
    assert music.midi_to_hz(69) == pytest.approx(440.0)
    assert music.midi_to_hz(81) == pytest.approx(880.0)
    assert music.midi_to_hz(60) == pytest.approx(261.6256, abs=1e-3)


def test_synthesized_a4_peaks_at_440_hz_without_clipping():
    rate = 16_000
    wave = music.synthesize([(69, 0.0, 1.0)], sample_rate=rate)
    assert wave.dtype == np.float32 and len(wave) == pytest.approx(rate * 1.03, abs=2)
    spectrum = np.abs(np.fft.rfft(wave[:rate]))
    freqs = np.fft.rfftfreq(rate, 1 / rate)
    assert freqs[spectrum.argmax()] == pytest.approx(440.0, abs=1.0)
    second = spectrum[np.abs(freqs - 880).argmin()]
    assert 0.3 < second / spectrum.max() < 0.7  # the second harmonic at half the amplitude
    assert np.abs(wave).max() == pytest.approx(0.9, abs=1e-6)


def test_harmonics_above_nyquist_are_left_out():
    rate = 8_000
    wave = music.synthesize([(105, 0.0, 0.5)], sample_rate=rate)  # A7: 3,520 Hz
    spectrum = np.abs(np.fft.rfft(wave[: rate // 2]))
    freqs = np.fft.rfftfreq(rate // 2, 1 / rate)
    assert freqs[spectrum.argmax()] == pytest.approx(3520, abs=4)
    assert spectrum[freqs < 3000].max() < 0.05 * spectrum.max()  # no aliased 2nd harmonic


def test_render_tune_lasts_as_long_as_the_tune():
    wave = music.render_tune("X:1\nM:4/4\nL:1/4\nK:C\nCDEF|G4|", bpm=120, sample_rate=8000)
    assert len(wave) == pytest.approx(8000 * (4.0 + 0.03), abs=2)
    assert np.abs(wave).max() <= 0.9 + 1e-6


def test_bad_sound_input_is_refused():
    with pytest.raises(ValueError, match="at least one note"):
        music.synthesize([])
    with pytest.raises(ValueError, match="pitch 0..127"):
        music.synthesize([(69, 0.0, 0.0)])
    with pytest.raises(ValueError, match="peak"):
        music.synthesize([(69, 0.0, 1.0)], peak=1.5)
    with pytest.raises(ValueError, match="unexpected"):
        music.render_tune("X:1\nM:4/4\nK:C\nC#DE|")


# a language model of tunes


def test_generate_tunes_returns_tunes_from_a_gpt():
    tok = data.CharTokenizer.from_text(music.tunes_corpus(music.load_tunes("val")[:50]))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok), vocab=tok.vocab, n_layer=1, n_head=2, n_embd=32))
    tunes = music.generate_tunes(model, 5, max_chars=40, generator=torch.Generator().manual_seed(0))
    assert len(tunes) == 5 and all(t.startswith("X:") for t in tunes)
    assert music.check_tunes(tunes)["n"] == 5
    with pytest.raises(ValueError, match="n and max_chars"):
        music.generate_tunes(model, 0)


def test_tunes_corpus_folds_to_the_vocabulary():
    vocab = "X:1\nM2/4L8KGAB|?"
    text = music.tunes_corpus(
        ["X:1\nM:2/4\nL:1/8\nK:G\nGAB|", "X:1\nM:2/4\nL:1/8\nK:G\nGÄc|"], vocab
    )
    assert text.endswith("|\n") and set(text) <= set(vocab)
    assert "GA?|" in text  # Ä folds to A, c (not in the vocabulary) to ?


def test_header_share_matches_counting_random_training_windows():
    tunes = ["X:1\nM:6/8\nL:1/8\nK:G\n" + "dBG AFD|" * n for n in (2, 5, 9, 30)]
    block = 64
    text = music.tunes_corpus(tunes)
    starts = [text.find(t) for t in tunes]
    body = {}  # corpus position of each body character -> its tune's start
    for a, t in zip(starts, tunes):
        first = a + len(t) - len(t.split("\n", 4)[-1])
        body.update({q: a for q in range(first, a + len(t))})
    # every window start over one period of the corpus repeated end to end: each target sits
    # at each position 1 .. block of a window exactly once, so the count is exact
    hits = count = 0
    for s in range(len(text), 2 * len(text)):
        for q in range(s + 1, s + block + 1):  # the targets of the window starting at s
            a = body.get(q % len(text))
            if a is not None:
                count += 1
                hits += s <= a + (q // len(text)) * len(text)
    assert music.header_in_context_share(tunes, block) == pytest.approx(hits / count, rel=1e-9)
    # windows much longer than a tune: nearly every body character sees its header
    assert music.header_in_context_share(tunes[:1], 1000) > 0.95
    with pytest.raises(ValueError, match="block_size"):
        music.header_in_context_share(tunes, 0)
