"""AV-Digits' plan: which image, motion and voice each clip gets, and how far its label columns depend on each other.

Versions 1 and 2 deal digits, motions and voices by the clip's position (:func:`plan_clips`); in version 2 that ties
the motion to the voice in the train and val splits (both follow the position's parity, and the voice pool alternates
real and synthetic voices), a pairing any cross-modal objective can learn instead of the digit. Version 3 deals each
split's motions and voices so that motion, voice, language, the synthetic flag and the digit are independent
(:func:`plan_independent`); :func:`factor_dependence` measures it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from xkd.datasets.avdigits_render import AVDIGITS_MOTIONS
from xkd.datasets.avdigits_sources import AVDIGITS_VOICES, SPLIT_FRACTIONS, SPLITS, split_images, synthetic_voices

REAL_LANGUAGES = {voice: voice[:2] for voice in AVDIGITS_VOICES}  # en, es, fr, it, ru
SYNTHETIC_SHARE = 8  # versions 2 and 3, train / val splits: each real voice is drawn this many times as often as each
# synthetic voice (8 per language), so half of those clips speak in a real voice
FACTORS = ("digit", "motion", "voice", "language", "synthetic")  # the label columns version 3 keeps independent
# pairs where one column is a function of the other, by what a voice is: not a dependence a plan can remove
DETERMINED_PAIRS = {("voice", "language"), ("voice", "synthetic")}


@dataclass(frozen=True)
class ClipSpec:
    """What one clip shows and says; ``image_index`` (the MNIST row) is also the clip id."""

    image_index: int
    digit: int
    split: str
    motion: str
    voice: str

    @property
    def clip_id(self) -> str:
        return f"avd{self.image_index:04d}"

    @property
    def relpath(self) -> str:
        return f"clips/{self.split}/{self.digit}/{self.clip_id}.mp4"

    @property
    def language(self) -> str:
        return REAL_LANGUAGES.get(self.voice) or synthetic_voices()[self.voice]

    @property
    def synthetic(self) -> bool:
        return self.voice not in AVDIGITS_VOICES


def _split_quotas(num_clips: int) -> list[int]:
    """Clips per split for ``num_clips`` in total (largest remainder of 70/10/20)."""
    exact = np.asarray(SPLIT_FRACTIONS) * num_clips
    quotas = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quotas), kind="stable")[: num_clips - quotas.sum()]:
        quotas[i] += 1
    return quotas.tolist()


def voice_pool(split: str, version: int) -> tuple[str, ...]:
    """The voices a split's clips cycle through: the five real voices for version 1 and every test split; for train /
    val, each real voice :data:`SYNTHETIC_SHARE` times beside each synthetic voice once.

    Version 2 alternates the real voices (in their order) with the synthetic ones (in theirs). Version 3 deals them in
    rounds: round ``k`` holds, language by language, the real voice then the ``k``-th synthetic voice of that language,
    so any run of the pool is balanced in real against synthetic to within one clip and in language to within two.
    """
    if version == 1 or split == "test":
        return AVDIGITS_VOICES
    if version == 2:
        real = AVDIGITS_VOICES * SYNTHETIC_SHARE
        return tuple(voice for pair in zip(real, synthetic_voices()) for voice in pair)
    by_language = {lang: [v for v, vl in synthetic_voices().items() if vl == lang] for lang in REAL_LANGUAGES.values()}
    return tuple(voice for k in range(SYNTHETIC_SHARE) for real, lang in REAL_LANGUAGES.items()
                 for voice in (real, by_language[lang][k]))


def _images(labels: np.ndarray, rng: np.random.Generator, num_clips: int | None) -> list[tuple[str, int, int]]:
    """(split, position in the split, image index) of the clips: all images when ``num_clips`` is None, else that many,
    70/10/20 over the splits. Position ``q = 10 r + j`` of a split shows the next unused image (seed order) of digit
    ``digit_order[j]``, with ``q`` counted across the splits in order, so digits stay balanced in a small build."""
    splits = split_images(labels)
    per_split = [int(np.sum(splits == s)) for s in SPLITS] if num_clips is None else _split_quotas(num_clips)
    digit_order = rng.permutation(10)
    chosen, p = [], 0
    for name, quota in zip(SPLITS, per_split):
        pools = [list(rng.permutation(np.flatnonzero((labels == d) & (splits == name)))) for d in range(10)]
        for q in range(quota):
            chosen.append((name, p, int(pools[int(digit_order[p % 10])].pop())))
            p += 1
    return chosen


def plan_clips(labels: np.ndarray, seed: int, num_clips: int | None = None, version: int = 1) -> list[ClipSpec]:
    """Choose images and assign motions and voices; sorted by image index.

    Versions 1 and 2: clip ``p = 10 r + j`` of the build (counted across the splits in order) gets voice
    ``pool[(j + r) % len(pool)]`` of the split's :func:`voice_pool` and motion ``(j + 13 r) % 8`` (version 1: for one
    digit, r runs through every (voice, motion) pair every 40 rounds). Version 3: :func:`plan_independent`.
    """
    if version >= 3:
        return plan_independent(labels, seed, num_clips)
    rng = np.random.default_rng(seed)
    specs = []
    for name, p, image in _images(labels, rng, num_clips):
        j, r = p % 10, p // 10
        voices = voice_pool(name, version)
        specs.append(ClipSpec(image, int(labels[image]), name, AVDIGITS_MOTIONS[(j + 13 * r) % len(AVDIGITS_MOTIONS)],
                              voices[(j + r) % len(voices)]))
    return sorted(specs, key=lambda s: s.image_index)


def _deal(runs: list[list[int]], values: tuple, rng: np.random.Generator) -> dict[int, object]:
    """Deal ``values`` cyclically, from a random start, over the clips of ``runs`` taken run after run: each run is a
    contiguous stretch of the cycle, so it holds every value ``len(run) // len(values)`` or one more times."""
    start = int(rng.integers(len(values)))
    order = itertools.chain.from_iterable(runs)
    return {clip: values[(start + i) % len(values)] for i, clip in enumerate(order)}


def plan_independent(labels: np.ndarray, seed: int, num_clips: int | None = None) -> list[ClipSpec]:
    """Version 3's plan, split by split: motions and voices independent of the digit and of each other.

    The split's clips, grouped by digit (digits and clips in random order), are dealt a random order of the eight
    motions in turn, so every digit shows every motion equally often (to within one clip). Then, grouped by motion and
    within a motion by digit (each in its own random order), they are dealt the split's :func:`voice_pool` in turn, so
    every motion, and every digit, hears every voice, language and kind of voice (real or synthetic) equally often to
    within a clip or two. No position, parity or period is shared between two columns.
    """
    rng = np.random.default_rng(seed)
    chosen = _images(labels, rng, num_clips)
    specs = []
    for name in SPLITS:
        clips = [(image, int(labels[image])) for split, _, image in chosen if split == name]
        if not clips:
            continue
        by_digit = {d: [i for i, (_, digit) in enumerate(clips) if digit == d] for d in range(10)}
        digit_runs = [list(rng.permutation(by_digit[d])) for d in rng.permutation(10) if by_digit[d]]
        motions = _deal(digit_runs, tuple(rng.permutation(AVDIGITS_MOTIONS)), rng)
        runs = []
        for motion in rng.permutation(AVDIGITS_MOTIONS):
            for d in rng.permutation(10):
                run = [i for i in by_digit[d] if motions[i] == motion]
                runs.append(list(rng.permutation(run)))
        voices = _deal(runs, voice_pool(name, 3), rng)
        specs += [ClipSpec(image, digit, name, str(motions[i]), voices[i]) for i, (image, digit) in enumerate(clips)]
    return sorted(specs, key=lambda s: s.image_index)


def factor_dependence(specs: list[ClipSpec]) -> dict[str, dict[tuple[str, str], tuple[float, float]]]:
    """How far each pair of :data:`FACTORS` depends, per split: ``{split: {(a, b): (AMI, chi-square p)}}``.

    AMI is the mutual information adjusted for chance (0 for independent columns, 1 when one determines the other);
    p is the chi-square test of independence on the contingency table (1.0 where a column is constant in the split).
    The pairs of :data:`DETERMINED_PAIRS` are left out.
    """
    from scipy.stats import chi2_contingency
    from sklearn.metrics import adjusted_mutual_info_score

    out: dict[str, dict[tuple[str, str], tuple[float, float]]] = {}
    for split in SPLITS:
        rows = [s for s in specs if s.split == split]
        if not rows:
            continue
        columns = {f: [str(getattr(s, f)) for s in rows] for f in FACTORS}
        pairs = {}
        for a, b in itertools.combinations(FACTORS, 2):
            if (a, b) in DETERMINED_PAIRS:
                continue
            ami = float(adjusted_mutual_info_score(columns[a], columns[b]))
            values_a, values_b = sorted(set(columns[a])), sorted(set(columns[b]))
            if len(values_a) < 2 or len(values_b) < 2:
                pairs[a, b] = (ami, 1.0)
                continue
            table = np.zeros((len(values_a), len(values_b)))
            for x, y in zip(columns[a], columns[b]):
                table[values_a.index(x), values_b.index(y)] += 1
            pairs[a, b] = (ami, float(chi2_contingency(table).pvalue))
        out[split] = pairs
    return out
