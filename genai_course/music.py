"""Folk tunes in ABC notation: cleaned for a language model, checked, and rendered to sound.

ABC is plain text. A tune is a few header lines (``X:`` its number, ``M:`` the metre, ``L:`` the
unit note length, ``K:`` the key) and a body in which ``C D E F G A B`` are the notes from middle
C upwards, ``c``-``b`` the octave above, ``,`` and ``'`` move a note an octave down or up, a
number after a note multiplies its length by the unit and ``/`` divides it, ``^``, ``_`` and
``=`` are sharp, flat and natural, ``|`` is a bar line and ``|:`` ... ``:|`` a repeat.

The module has five parts:

- **cleaning** (:func:`clean_tune`, :func:`load_tunes`): keep only what the music needs (the
  ``M:``, ``L:`` and ``K:`` headers and the body), so that a character model spends its capacity
  on melodies, not on titles and archive numbers;
- **checking** (:func:`check_tune`): does a generated text *parse* as ABC (our lexical grammar
  of the body accepts every character, grace-note braces balance, and music21's ABC parser reads notes
  and bars from it), and do its bars *fit the declared metre*;
- **notes** (:func:`tune_notes`): the parsed tune as (MIDI pitch, start, duration) events in
  seconds;
- **sound** (:func:`synthesize`): a tiny additive synthesiser (a few harmonics of a sine, an
  attack and a decay per note), in numpy, to a waveform that ``IPython.display.Audio`` plays;
- **a language model of tunes** (:func:`tunes_corpus`, :func:`generate_tunes`): the training
  text of a character GPT, and tunes sampled from one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from . import data

__all__ = [
    "DEFAULT_BPM",
    "SAMPLE_RATE",
    "TUNE_START",
    "NoteEvent",
    "TuneCheck",
    "check_tune",
    "check_tunes",
    "clean_tune",
    "load_tunes",
    "midi_to_hz",
    "parse_tune",
    "render_tune",
    "split_tunes",
    "generate_tunes",
    "header_in_context_share",
    "tune_windows",
    "tunes_corpus",
    "synthesize",
    "tokenize_body",
    "tune_notes",
]

TUNE_START = "X:1\n"  # every cleaned tune starts so; a model is prompted with it
SAMPLE_RATE = 22_050  # Hz: a quarter of CD quality, plenty for tunes below 2 kHz
DEFAULT_BPM = 120.0  # quarter notes per minute when a tune sets no tempo (Q:)

# cleaning ------------------------------------------------------------------------------------

_FIELD = re.compile(r"^([A-Za-z]):\s*(.*)$")
_KEPT_HEADERS = ("M", "L", "K")  # what the notes mean; titles, sources, notes are dropped
_BODY_FIELDS = ("M", "L", "K")  # changes of metre, unit or key inside a tune are music too


def _default_unit(metre: str) -> str:
    """The unit note length ABC assumes without ``L:``: 1/16 below a 3/4 bar, else 1/8."""
    if metre in ("C", "C|"):
        return "1/8"
    try:
        value = Fraction(metre)
    except (ValueError, ZeroDivisionError):
        return "1/8"
    return "1/16" if value < Fraction(3, 4) else "1/8"


def clean_tune(tune: str) -> str:
    """A tune reduced to ``X:1``, ``M:``, ``L:`` and ``K:`` headers and its body.

    Header values lose their surrounding spaces (``M: 3/4`` -> ``M:3/4``); a missing ``L:``
    is written out with the default ABC assumes for the metre; body lines that are fields
    other than ``M:``, ``L:``, ``K:`` (lyrics ``w:``, notes) are dropped.

    Raises:
        ValueError: if the tune has no ``M:`` or no ``K:`` header, or no body.
    """
    lines = [ln.rstrip() for ln in tune.strip().splitlines() if ln.strip()]
    headers: dict[str, str] = {}
    body: list[str] = []
    in_body = False
    for line in lines:
        match = _FIELD.match(line)
        if not in_body:
            if match and match.group(1) in _KEPT_HEADERS:
                headers.setdefault(match.group(1), match.group(2).strip())
                in_body = match.group(1) == "K"
            continue
        if match:
            if match.group(1) in _BODY_FIELDS:
                body.append(f"{match.group(1)}:{match.group(2).strip()}")
            continue
        body.append(line)
    missing = [h for h in ("M", "K") if h not in headers]
    if missing:
        raise ValueError(
            f"tune has no {' or '.join(h + ':' for h in missing)} header: {tune[:60]!r}"
        )
    if not body:
        raise ValueError(f"tune has no body after its K: line: {tune[:60]!r}")
    unit = headers.get("L") or _default_unit(headers["M"])
    head = f"{TUNE_START}M:{headers['M']}\nL:{unit}\nK:{headers['K']}\n"
    return head + "\n".join(body)


def load_tunes(split: str = "train", *, collections: Sequence[str] | None = None) -> list[str]:
    """The cleaned tunes of ``split``, still split by tune.

    The tunes of :func:`genai_course.data.load_abc_tunes` (``collections`` goes to it), each
    through :func:`clean_tune`. Cleaning drops titles, so two tunes that differed only there
    become one text: each such text is kept once, in the first of train, val, test that
    has it, so no cleaned tune is in two splits.
    """
    data._check_split(split)
    key = None if collections is None else tuple(collections)
    return list(_cleaned_splits(key)[split])


@functools.lru_cache(maxsize=4)
def _cleaned_splits(collections: tuple[str, ...] | None) -> dict[str, tuple[str, ...]]:
    kwargs = {} if collections is None else {"collections": collections}
    seen: set[str] = set()
    out = {}
    for split in data.SPLITS:
        kept = []
        for tune in map(clean_tune, data.load_abc_tunes(split, **kwargs)):
            if tune not in seen:
                seen.add(tune)
                kept.append(tune)
        out[split] = tuple(kept)
    return out


def split_tunes(text: str) -> list[str]:
    """Cut a generated text into tunes at each line that starts with ``X:``.

    Text before the first ``X:`` line is dropped; so is a last tune with no newline after its
    body only if it has no body (a text cut off mid-tune keeps the bars it has).
    """
    starts = [m.start() for m in re.finditer(r"(?m)^X:", text)]
    tunes = []
    for begin, end in zip(starts, [*starts[1:], len(text)]):
        tune = text[begin:end].strip()
        if tune:
            tunes.append(tune)
    return tunes


# checking ------------------------------------------------------------------------------------

_LENGTH = r"(?:\d+(?:/+\d*)?|/+\d*)?"
_NOTE = r"(?:\^\^|\^|__|_|=)?[A-Ga-g][,']*" + _LENGTH
_TOKENS = [
    ("space", r"[ \t]+"),
    ("continuation", r"\\"),
    ("inline_field", r"\[[KLMQ]:[^\]\n]*\]"),
    ("chord", r"\[(?:" + _NOTE + r"[-]?\s*)+\]" + _LENGTH),
    ("bar", r"(?:\[\|\]|\[\||\|\]|\|\||:*\|+:*|::|:+)(?:\[?\d+(?:[,-]\d+)*)?"),
    ("ending", r"\[\d+(?:[,-]\d+)*"),
    ("note", _NOTE),
    ("rest", r"[zxZ]" + _LENGTH),
    ("tuplet", r"\(\d(?::\d*){0,2}"),
    ("slur_open", r"\("),
    ("slur_close", r"\)"),
    ("grace_open", r"\{/?"),
    ("grace_close", r"\}"),
    ("broken", r"<{1,3}|>{1,3}"),
    ("tie", r"-"),
    ("decoration", r"![^!\n]{1,20}!|\+[^+\n]{1,20}\+|[.~HLMOPSTuv]"),
    ("annotation", r'"[^"\n]*"'),
    ("spacer", r"y"),
]
_TOKEN = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in _TOKENS))


def tokenize_body(line: str) -> list[tuple[str, str]]:
    """Split one line of a tune's body into (kind, text) tokens of ABC's music notation.

    The grammar covers what folk-tune collections use: notes with accidentals, octave marks
    and lengths, rests, chords ``[CEG]``, bar lines and repeats with endings, ties, slurs,
    tuplets ``(3``, grace notes ``{g}``, broken rhythm ``>``, decorations, chord symbols and
    annotations in quotes, inline fields ``[K:D]``.

    Raises:
        ValueError: at the first character no token accepts, naming it and its column.
    """
    tokens, pos = [], 0
    while pos < len(line):
        match = _TOKEN.match(line, pos)
        if match is None:
            raise ValueError(f"unexpected {line[pos]!r} at column {pos + 1} of {line!r}")
        tokens.append((match.lastgroup, match.group()))
        pos = match.end()
    return tokens


@dataclass(frozen=True)
class TuneCheck:
    """What :func:`check_tune` found out about one tune."""

    parses: bool  # headers, body grammar, balanced brackets and music21 all agree
    reason: str  # why it does not parse ("" if it does)
    notes: int = 0
    bars: int = 0  # bars (music21's measures of the first part)
    bars_in_metre: int = 0
    metre: str = ""
    key: str = ""

    @property
    def fits_metre(self) -> bool:
        """Parses, has bars, and every bar lasts what the metre says (pickups are allowed, see
        :func:`check_tune`)."""
        return self.parses and self.bars > 0 and self.bars_in_metre == self.bars


def _headers_and_body(tune: str) -> tuple[dict[str, str], list[str]]:
    lines = [ln for ln in tune.strip().splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("X:"):
        raise ValueError("a tune starts with an X: line")
    headers: dict[str, str] = {}
    for i, line in enumerate(lines[1:], start=1):
        match = _FIELD.match(line)
        if match is None:
            raise ValueError(
                f"header line {i + 1} is not a field (the K: line ends the header): {line!r}"
            )
        headers.setdefault(match.group(1), match.group(2).strip())
        if match.group(1) == "K":
            return headers, lines[i + 1 :]
    raise ValueError("no K: line ends the header")


_METRE = re.compile(r"^(?:C\|?|\d+/\d+|none)$")
_UNIT = re.compile(r"^1/\d+$")


def _check_text(tune: str) -> tuple[dict[str, str], int]:
    """Header and body grammar; returns the headers and the number of body notes."""
    headers, body = _headers_and_body(tune)
    if not _METRE.match(headers.get("M", "")):
        raise ValueError(f"M: must be a metre like 6/8 or C, got {headers.get('M')!r}")
    if "L" in headers and not _UNIT.match(headers["L"]):
        raise ValueError(f"L: must be a unit like 1/8, got {headers['L']!r}")
    if not body:
        raise ValueError("no body after the K: line")
    notes, depth = 0, {"slur": 0, "grace": 0}
    for line in body:
        if _FIELD.match(line):
            if line[0] not in _BODY_FIELDS:
                raise ValueError(f"unexpected field in the body: {line!r}")
            continue
        for kind, _ in tokenize_body(line):
            notes += kind in ("note", "chord")
            for name in depth:
                depth[name] += (kind == f"{name}_open") - (kind == f"{name}_close")
                if depth[name] < 0 or depth[name] > 1 and name == "grace":
                    raise ValueError(f"unbalanced {name} brackets in {line!r}")
    if depth["grace"]:
        raise ValueError("a grace-note group { is never closed")
    if notes == 0:
        raise ValueError("the body has no notes")
    return headers, notes


def parse_tune(tune: str):
    """Parse a tune with music21 after checking it against our grammar.

    Returns:
        a ``music21.stream.Score``.

    Raises:
        ValueError: naming what is wrong (header, body grammar, brackets, music21's parser).
    """
    _check_text(tune)
    return _music21_parse(tune)


def _music21_parse(tune: str):
    from music21 import converter

    try:
        return converter.parse(tune, format="abc")
    except Exception as err:  # music21 raises many types; all mean "not valid ABC"
        raise ValueError(f"music21 cannot parse the tune: {type(err).__name__}: {err}") from None


def _bar_lengths(score) -> tuple[list[Fraction], Fraction]:
    """Quarter-length of each measure of the first part, and of the declared metre's bar.

    The bar is that of the *first* time signature: music21 cuts a bar that is too long into
    two and gives the second a time signature of its own (a 4-beat bar in 3/4 becomes 3/4 +
    1/4), so later signatures, and ``Measure.barDuration``, would call such bars right.
    """
    part = score.parts[0] if score.parts else score
    measures = list(part.getElementsByClass("Measure"))
    signature = next(iter(part.recurse().getElementsByClass("TimeSignature")), None)
    if not measures or signature is None:
        return [], Fraction(0)
    bar = Fraction(signature.barDuration.quarterLength).limit_denominator(96)
    return [Fraction(m.duration.quarterLength).limit_denominator(96) for m in measures], bar


def check_tune(tune: str) -> TuneCheck:
    """Does ``tune`` parse as ABC, and do its bars fit its metre?

    *Parses*: an ``X:`` line, header fields up to ``K:`` with a metre like ``6/8`` or ``C``,
    a body that our ABC grammar (:func:`tokenize_body`) reads to the end with grace-note
    brackets balanced and at least one note, and music21's parser reading it without error.
    *Fits the metre*: every bar lasts what ``M:`` declares, as music21 measures it (tuplets,
    broken rhythm and chords included), except where tunes legitimately have short bars: a
    pickup first bar, a short last bar, and a short bar before a repeat or section that the
    next short bar completes. Free metre (``M:none``) parses but cannot fit.
    """
    try:
        headers, notes = _check_text(tune)
        score = _music21_parse(tune)
    except ValueError as err:
        return TuneCheck(False, str(err))
    if not list(score.recurse().notes):
        return TuneCheck(False, "music21 read no notes", metre=headers["M"], key=headers["K"])
    lengths, bar = _bar_lengths(score)
    return TuneCheck(
        True,
        "",
        notes=notes,
        bars=len(lengths),
        bars_in_metre=_bars_in_metre(lengths, bar),
        metre=headers["M"],
        key=headers["K"],
    )


def _bars_in_metre(lengths: Sequence[Fraction], bar: Fraction) -> int:
    """How many bars fit the metre: full bars; a short first bar (a pickup) and a short last
    bar; and two short bars in a row that together make one (a section's pickup before a
    repeat, and the bar it completes)."""
    fits = [length == bar for length in lengths]
    for i in range(len(lengths) - 1):
        if lengths[i] < bar and lengths[i + 1] < bar and lengths[i] + lengths[i + 1] == bar:
            fits[i] = fits[i + 1] = True
    for i in {0, len(lengths) - 1} if lengths else ():
        fits[i] = fits[i] or 0 < lengths[i] <= bar
    return sum(fits)


def check_tunes(tunes: Iterable[str]) -> dict[str, float]:
    """Share of ``tunes`` that parse and that fit their metre (see :func:`check_tune`).

    Returns:
        dict with ``n``, ``parse_rate``, ``metre_rate`` (share of all tunes), ``bar_rate``
        (share of the checked bars of parsing tunes that fit) and ``mean_notes``.
    """
    checks = [check_tune(t) for t in tunes]
    if not checks:
        raise ValueError("check_tunes needs at least one tune")
    parsed = [c for c in checks if c.parses]
    bars = sum(c.bars for c in parsed)
    return {
        "n": len(checks),
        "parse_rate": len(parsed) / len(checks),
        "metre_rate": sum(c.fits_metre for c in checks) / len(checks),
        "bar_rate": sum(c.bars_in_metre for c in parsed) / bars if bars else float("nan"),
        "mean_notes": float(np.mean([c.notes for c in parsed])) if parsed else 0.0,
    }


# notes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteEvent:
    """One sounding note: MIDI pitch (69 = A4 = 440 Hz), start and duration in seconds."""

    pitch: int
    start: float
    duration: float


def tune_notes(tune: str, bpm: float | None = None) -> list[NoteEvent]:
    """The notes of a tune, in time order, as :class:`NoteEvent` (chords give one per pitch).

    Ties are merged into one long note; grace notes (no duration in music21) are dropped.
    Repeats are played as written, once.

    Args:
        bpm: quarter notes per minute; ``None`` uses the tune's ``Q:`` if music21 finds one,
            else :data:`DEFAULT_BPM`.
    """
    score = parse_tune(tune)
    if bpm is None:
        marks = list(score.recurse().getElementsByClass("MetronomeMark"))
        bpm = marks[0].getQuarterBPM() if marks and marks[0].number else DEFAULT_BPM
    if not bpm or bpm <= 0:
        raise ValueError(f"bpm must be > 0, got {bpm}")
    seconds = 60.0 / bpm  # per quarter note
    events = []
    for element in score.stripTies().flatten().notes:
        duration = float(element.quarterLength)
        if duration <= 0:
            continue
        for pitch in element.pitches:
            events.append(
                NoteEvent(int(pitch.midi), float(element.offset) * seconds, duration * seconds)
            )
    events.sort(key=lambda e: (e.start, e.pitch))
    return events


# sound -----------------------------------------------------------------------------------------


def midi_to_hz(pitch: float | np.ndarray) -> float | np.ndarray:
    """Equal temperament: f = 440 Hz * 2 ** ((pitch - 69) / 12)."""
    return 440.0 * 2.0 ** ((np.asarray(pitch, dtype=np.float64) - 69.0) / 12.0)


def synthesize(
    notes: Sequence[NoteEvent | tuple[int, float, float]],
    *,
    sample_rate: int = SAMPLE_RATE,
    harmonics: Sequence[float] = (1.0, 0.5, 0.25, 0.12),
    attack: float = 0.01,
    decay: float = 0.6,
    release: float = 0.03,
    peak: float = 0.9,
) -> np.ndarray:
    """Additive synthesis: each note is a sum of harmonics of its frequency times an envelope.

    For a note of frequency f starting at t0 and held for d seconds,
    ``x(t) = env(t - t0) * sum_k h_k sin(2 pi k f (t - t0))`` with ``env`` rising linearly over
    ``attack``, decaying as ``exp(-t / decay)`` while held and falling linearly to 0 over
    ``release`` after ``d``. Harmonics above the Nyquist frequency are left out (no aliasing).
    The mix is scaled so that its largest absolute value is ``peak`` (< 1: no clipping).

    Returns:
        float32 waveform (n,) with n = sample_rate * (end of the last note + release).
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    if not 0 < peak <= 1:
        raise ValueError(f"peak must be in (0, 1], got {peak}")
    if not harmonics or attack < 0 or decay <= 0 or release < 0:
        raise ValueError("need at least one harmonic, attack >= 0, decay > 0 and release >= 0")
    events = [n if isinstance(n, NoteEvent) else NoteEvent(*n) for n in notes]
    if not events:
        raise ValueError("synthesize needs at least one note")
    for e in events:
        if e.duration <= 0 or e.start < 0 or not 0 <= e.pitch <= 127:
            raise ValueError(f"a note needs pitch 0..127, start >= 0, duration > 0; got {e}")
    end = max(e.start + e.duration for e in events) + release
    out = np.zeros(int(np.ceil(end * sample_rate)) + 1, dtype=np.float64)
    for e in events:
        n = int(round((e.duration + release) * sample_rate))
        t = np.arange(n) / sample_rate
        env = np.exp(-t / decay)
        if attack > 0:
            env *= np.minimum(1.0, t / attack)
        if release > 0:
            env *= np.clip((e.duration + release - t) / release, 0.0, 1.0)
        f = float(midi_to_hz(e.pitch))
        tone = sum(
            h * np.sin(2 * np.pi * k * f * t)
            for k, h in enumerate(harmonics, start=1)
            if k * f < sample_rate / 2
        )
        begin = int(round(e.start * sample_rate))
        out[begin : begin + n] += env * tone
    top = np.abs(out).max()
    if top > 0:
        out *= peak / top
    return out.astype(np.float32)


def render_tune(tune: str, *, bpm: float | None = None, **kwargs) -> np.ndarray:
    """Parse ``tune`` and synthesise it: :func:`tune_notes` then :func:`synthesize` (kwargs)."""
    return synthesize(tune_notes(tune, bpm=bpm), **kwargs)


# a language model of tunes ---------------------------------------------------------------------


def tunes_corpus(tunes: Sequence[str], vocab: str | None = None) -> str:
    """One training text: the tunes one after another (each starts with ``X:1``), with any
    character outside ``vocab`` (if given) folded to one inside (:func:`data.fold_to_vocab`)."""
    text = "\n".join(tunes) + "\n"
    return data.fold_to_vocab(text, vocab) if vocab is not None else text


def tune_windows(
    tok: data.CharTokenizer, block_size: int, batch_size: int, seed: int = 0
) -> dict[str, data.TokenWindows]:
    """Split -> windows of the cleaned tunes (:func:`load_tunes`) encoded with ``tok``, the
    training stream of the tune GPT (:func:`~genai_course.data.char_windows`)."""
    return data.char_windows(
        tok,
        lambda split: tunes_corpus(load_tunes(split), tok.vocab),
        block_size,
        batch_size,
        seed,
    )


def header_in_context_share(tunes: Sequence[str], block_size: int) -> float:
    """Share of the next-character predictions on tune bodies whose context holds the tune's
    whole header, when training windows of ``block_size`` characters start at uniformly random
    offsets of :func:`tunes_corpus` (as :class:`~genai_course.data.TokenWindows` draws them).

    A window starting at ``s`` predicts the character at ``q`` from ``x[s:q]``, for ``q - s`` in
    ``1 .. block_size``; over random starts, ``q - s`` is uniform there. A body character ``d``
    characters after its tune's first one (``d`` at least the header's length) therefore has the
    tune's start in its context with probability ``max(0, block_size - d + 1) / block_size``.
    The share is that probability averaged over all body characters (each is a target equally
    often), up to edge effects at the two ends of the corpus. Every cleaned tune has a header
    of four lines (``X:``, ``M:``, ``L:``, ``K:``).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    seen, total = 0.0, 0
    for tune in tunes:
        body_start = len(tune) - len(tune.split("\n", 4)[-1])  # offset of the first body char
        d = np.arange(body_start, len(tune))  # body characters' offsets in their tune
        seen += float(np.clip(block_size - d + 1, 0, None).sum()) / block_size
        total += len(d)
    if total == 0:
        raise ValueError("the tunes have no body characters (expected cleaned tunes)")
    return seen / total


def generate_tunes(
    model,
    n: int,
    *,
    max_chars: int = 500,
    batch_size: int = 100,
    generator=None,
    **sampling,
) -> list[str]:
    """Sample ``n`` tunes from a character language model (a :class:`~genai_course.models.GPT`).

    Each sample starts from :data:`TUNE_START` and runs ``max_chars`` characters; the first
    tune in it (up to the next ``X:`` line) is kept, so a tune longer than ``max_chars`` is
    cut off where it stands. ``sampling`` goes to ``model.generate`` (``temperature``,
    ``top_k``, ``top_p``).
    """
    if n < 1 or max_chars < 1:
        raise ValueError(f"n and max_chars must be >= 1, got {n} and {max_chars}")
    tok = model.tokenizer
    device = next(model.parameters()).device
    prompt = tok.encode(TUNE_START).to(device)
    tunes: list[str] = []
    while len(tunes) < n:
        rows = min(batch_size, n - len(tunes))
        idx = prompt.expand(rows, -1).contiguous()
        with torch.no_grad():
            out = model.generate(idx, max_new=max_chars, generator=generator, **sampling).cpu()
        for row in out:
            found = split_tunes(tok.decode(row))
            tunes.append(found[0] if found else TUNE_START.strip())
    return tunes
