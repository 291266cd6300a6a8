"""Filter stage — benchmark decontamination: flag the rows that share a long n-gram with a benchmark item.

Reads a corpus's `instruction`, `input` (null allowed) and `output`; writes `contaminated_by`, one string per
row naming what it shares, or null:

    output shares 13 morphemes with kobest_copa test item 17: '그는 …'

Recipe `decontaminate: {benchmarks: [kobest, PATH…], kobest_dir: DIR, n: 13, unit: morpheme}`. The rule is
the GPT-3 paper's 13-gram overlap (Brown et al. 2020, appendix C), over Korean morphemes: a row is contaminated
when one of its three fields shares n consecutive units with one text of a benchmark item.

Benchmarks (`benchmarks`):
- `kobest`: every task of KoBEST v1.0 (`kobest.TASKS`) and every split (train, validation, test; SentiNeg's
  test_originated too), from the TSV release in `kobest_dir` (read by `kobest.kobest_rows`) or, without it,
  the hub's `skt/kobest_v1`. An item is one row of the hub schema; its texts are every string field of that
  row, each on its own: BoolQ paragraph, question; COPA premise, question, alternative_1, alternative_2;
  HellaSwag context, ending_1-4; SentiNeg sentence; WiC word, context_1, context_2. (COPA's question,
  원인/결과, and WiC's word are one or two morphemes: they can never make an n-gram, and are listed so the
  rule stays "every text the row carries".) Named `kobest_<task>`, the split by its hub name, the item by
  its 0-based row number in the hub split — lm-eval's doc_id: `kobest_copa test item 17`.
- A path: `.jsonl` (an item per line: every string value in the object, nested lists and objects included,
  each its own text; a line that is a JSON string is one text), `.tsv` (an item per line, every cell a text;
  a header line is read as an item too, harmlessly: column names are far shorter than n), `.txt` (an item
  per line). Named by the path as given, the item by its 1-based line: `mmlu_ko.jsonl line 17`. Blank lines
  are skipped; a missing file, a line that is not UTF-8 or not JSON, or a file with no text is an error
  naming the path (and line).
N-grams never cross two texts, so a COPA premise and its alternative do not join into one.

Normalisation, the same on both sides: Unicode NFKC (full-width Ａ１！ → A1!, compatibility jamo, ㈜ → (주)),
lowercase; then every character that is neither a letter or number (`str.isalnum`: Unicode L*, N*) nor
whitespace is deleted — punctuation P*, symbols S* (emoji, ₩, ~), marks M*, format characters (zero-width
space) and `_`; Python's `[^\\w\\s]|_` — and every run of whitespace (spaces, tabs, line breaks, U+3000) becomes
one space. Deleted, not turned into spaces: brackets and quotes sit on the word they mark (WiC writes its
target as `[정기]를`, Korean quotes as `‘사랑’이라는`), and a space there would change the word Kiwi reads;
the price is that words joined by punctuation alone (`사과,배`) merge, which Korean prose rarely does.
- `unit: morpheme` (default, n = 13): the forms of Kiwi's morphemes (`koquality.kiwi.get_kiwi`; tags left
  out, so `가/VV` and `가/JKS` are one unit). Each word of the normalised text is analysed on its own
  (`Morphemes`): Kiwi's language model reads across words, and in a new context a copied span was analysed
  otherwise often enough to hide it (`다이빙대에` after `스트레칭을 하고` is 다이빙대 + 에, after other words
  다이빙 + 대 + 에); word by word, a copy gives the same morphemes wherever it is pasted, and each distinct
  word is analysed once, which makes KoBEST's index 4× faster to build than analysing whole texts.
- `unit: char` (default n = 20): characters of the normalised text with the spaces removed too, so spacing
  (띄어쓰기) cannot hide a copy. Why 20 and not the 50 characters GPT-4's report used for English: a Korean
  syllable carries about what an English word does. On all of KoBEST the median 13-morpheme span is 19
  characters (the shortest 9), and 50 characters would never see an item of COPA, SentiNeg or WiC (0-0.7%
  of their texts are that long) nor 99.5% of HellaSwag's endings; 20 characters sees about the same texts as
  13 morphemes. On the shared instruction data 3 of 62,168 texts share 20 characters with KoBEST, 12 share 16.

How it stays fast and bounded:
- The benchmark side is an index of 64-bit hashes: a unit's value (blake2b of a morpheme's form, splitmix64 of
  a character's code point) and an n-gram's polynomial hash over them, wrapping mod 2⁶⁴ (`window_hashes`:
  numpy, log₂ n passes), sorted, each with the position of its first occurrence (benchmarks in the order
  given, then split, item and field order). A bit filter in front of the sorted array answers most misses
  without a search. Every hash match is checked unit by unit against that first occurrence, so a hash
  collision cannot make a hit: the index keeps the benchmark's units (8 bytes each; all of KoBEST: 1.2M
  morphemes).
- The corpus is read in batches of `batch_rows` rows; memory depends on the batch, not on the corpus.
- Kiwi analyses only the texts that could hold a shared n-gram. Each benchmark n-gram has a surface: the
  normalised characters its morphemes cover, spaces removed. A text is analysed only if it contains the
  first `min(ANCHOR_CHARS, len)` characters of some surface; a text that shares a morpheme n-gram by copying
  it (up to case, spacing, punctuation and NFKC) contains its surface and so its anchor. This finds the same
  rows as analysing every text, except a text that shares n morphemes without sharing their spelling (했 and
  하였 are both 하 + 었) and shares no anchor elsewhere. Of the shared instruction data's 62,168 texts, 129
  (1.3% of the characters) hold an anchor of KoBEST; analysing every text whole would cost ~5 minutes per
  400K rows on two cores (56M characters at ~180K/s), against ~10 s for the whole pass
  (benchmarks/bench_decontaminate.py).
- The index is cached in koquality's cache folder, keyed by the benchmark files' contents (`BenchmarkIndex.build`).
A word's analysis does not depend on its neighbours, its text or the batch, so no row's result depends on
the others or on their order.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import pyarrow as pa
from pydantic import Field

from .backends import Backend, Settings
from .errors import KoqualityError
from .kiwi import get_kiwi, kiwi_settings, kiwi_version

UNITS = ("morpheme", "char")
DEFAULT_N = {"morpheme": 13, "char": 20}
FIELDS = ("instruction", "input", "output")
FILE_SUFFIXES = (".jsonl", ".tsv", ".txt")
KOBEST_HUB = "skt/kobest_v1"
# Anchor length, characters: with 12, Kiwi reads the texts holding 1.3% of the shared instruction data's
# characters; the 66 (of 652K) 13-morpheme surfaces of KoBEST that are shorter (9-11 characters) are their own
# anchors. 10 sent 3x more words to Kiwi, 16 and 20 gave no gain: more anchor lengths to hash.
ANCHOR_CHARS = 12
NORMALISATION = "nfkc-lower-delete-nonalnum-1"  # names the rule above; part of config() and the keys

_DELETED = re.compile(r"[^\w\s]|_")  # neither a letter or number (str.isalnum) nor whitespace
_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial hash (mod 2**64)
_DELETED_BUT_NUL = re.compile(r"[^\w\s\x00]|_")
_WHITESPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFKC, lowercase, punctuation and symbols deleted, whitespace runs as one space, stripped."""
    return " ".join(_DELETED.sub("", unicodedata.normalize("NFKC", text).lower()).split())


def normalise_all(texts: Sequence[str | None]) -> list[str]:
    """`normalise` of each text (None: ""), in three passes over the texts joined by NUL instead of one Python
    call per text. NUL is a starter that composes with nothing (NFKC cannot cross it), not whitespace, and
    lowercase's one contextual rule (final sigma) stops at it, so each piece comes out as `normalise` makes it."""
    texts = [t if isinstance(t, str) else "" for t in texts]
    joined = "\x00".join(texts)
    if joined.count("\x00") != len(texts) - 1:  # a text holds NUL itself
        return [normalise(t) for t in texts]
    joined = _WHITESPACE.sub(" ", _DELETED_BUT_NUL.sub("", unicodedata.normalize("NFKC", joined).lower()))
    return [piece.strip() for piece in joined.split("\x00")] if texts else []


# --- hashing -------------------------------------------------------------------------------------------------

def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@functools.cache
def _char_table() -> np.ndarray:
    """A 64-bit value per Unicode code point (8.9 MB)."""
    return _splitmix64(np.arange(0x110000, dtype=np.uint64))


def char_values(text: str) -> np.ndarray:
    return _char_table()[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]


@functools.lru_cache(maxsize=1 << 18)
def morpheme_value(form: str) -> int:
    return int.from_bytes(hashlib.blake2b(form.encode("utf-8"), digest_size=8).digest(), "little")


MAX_CACHED_WORDS = 1 << 19  # ~150 MB of analyses at most; the cache starts over when full


class Morphemes:
    """Kiwi's morphemes of normalised texts, word by word: each word (between spaces) is analysed on its own
    and once (cached), so its morphemes do not depend on its neighbours — a copied span gives the same
    morphemes wherever it is pasted — and a corpus's repeated words cost one analysis."""

    def __init__(self):
        self.words: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
        """(unit values of all texts end to end, offsets of each text's first unit, each unit's start and end
        character in its text)."""
        split = [t.split(" ") if t else [] for t in texts]
        new = list(dict.fromkeys(w for words in split for w in words if w not in self.words))
        if len(self.words) + len(new) > MAX_CACHED_WORDS:
            self.words.clear()
            new = list(dict.fromkeys(w for words in split for w in words))
        for word, tokens in zip(new, get_kiwi().tokenize(new) if new else ()):
            self.words[word] = (tuple(morpheme_value(t.form) for t in tokens), tuple(t.start for t in tokens),
                                tuple(t.end for t in tokens))
        values: list[int] = []
        starts: list[int] = []
        ends: list[int] = []
        offsets = [0]
        for words in split:
            at = 0
            for word in words:
                v, s, e = self.words[word]
                values.extend(v)
                starts.extend(at + x for x in s)
                ends.extend(at + x for x in e)
                at += len(word) + 1
            offsets.append(len(values))
        return np.array(values, np.uint64), np.array(offsets, np.int64), starts, ends


def _powers(size: int) -> np.uint64:
    return np.uint64(pow(int(_P), size, 1 << 64))


def window_hashes(values: np.ndarray, n: int) -> np.ndarray:
    """Σⱼ values[i+j]·P^(n-1-j) mod 2⁶⁴ for every window i of n values: blocks of 2^k values built by
    doubling and appended left to right, so log₂ n numpy passes instead of n."""
    count = len(values) - n + 1
    if count <= 0:
        return np.empty(0, np.uint64)
    result, covered, block, size, bits = None, 0, values.astype(np.uint64, copy=False), 1, n
    with np.errstate(over="ignore"):
        while True:
            if bits & 1:
                part = block[covered:covered + count]
                result = part.copy() if result is None else result * _powers(size) + part
                covered += size
            bits >>= 1
            if not bits:
                return result
            block = block[:-size] * _powers(size) + block[size:]
            size *= 2


def _window_starts(offsets: np.ndarray, n: int) -> np.ndarray:
    """Start positions (in the concatenation) of the windows of n units lying inside one text each."""
    total = int(offsets[-1])
    if total < n:
        return np.empty(0, np.int64)
    text = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))[: total - n + 1]
    starts = np.arange(total - n + 1)
    return starts[starts + n <= offsets[1:][text]]


class HashSet:
    """Sorted unique 64-bit hashes (each with a value: a position) behind a bit filter."""

    def __init__(self, hashes: np.ndarray, values: np.ndarray | None = None):
        self.keys, first = np.unique(hashes, return_index=True)  # np.unique: index of each first occurrence
        self.values = values[first] if values is not None else None
        bits = int(min(1 << 30, max(1 << 16, 1 << int(64 * max(len(self.keys), 1) - 1).bit_length())))
        self.shift = np.uint64(64 - (bits.bit_length() - 1))
        self.filter = np.zeros(bits // 8, np.uint8)
        slot = self.keys >> self.shift
        np.bitwise_or.at(self.filter, (slot >> np.uint64(3)).astype(np.int64),
                         (np.uint8(1) << (slot & np.uint64(7)).astype(np.uint8)))

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices into `hashes` that are in the set, their slots in `keys`)."""
        slot = hashes >> self.shift
        maybe = np.flatnonzero((self.filter[(slot >> np.uint64(3)).astype(np.int64)]
                                >> (slot & np.uint64(7)).astype(np.uint8)) & 1)
        if not len(maybe) or not len(self.keys):
            return np.empty(0, np.int64), np.empty(0, np.int64)
        at = np.minimum(np.searchsorted(self.keys, hashes[maybe]), len(self.keys) - 1)
        hit = self.keys[at] == hashes[maybe]
        return maybe[hit], at[hit]


# --- benchmarks ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchmarkItem:
    benchmark: str  # kobest_<task>, or the file's path as given
    split: str | None  # KoBEST's hub split; None for a file
    item: str  # KoBEST: the 0-based row of the split; a file: the 1-based line

    def __str__(self) -> str:
        return f"{self.benchmark} {self.split} item {self.item}" if self.split else f"{self.benchmark} line {self.item}"


def _kobest_splits(kobest_dir: str | None) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    from .kobest import SPLITS, TASKS, kobest_rows

    for task in TASKS:
        for split in SPLITS:
            if split == "test_originated" and task != "sentineg":
                continue
            yield task, split, (kobest_rows(kobest_dir, task, split) if kobest_dir is not None
                                else _kobest_hub_rows(task, split))


def _kobest_hub_rows(task: str, split: str) -> list[dict[str, Any]]:
    from . import hub

    hub.require(datasets=[KOBEST_HUB])
    try:
        import datasets

        return list(datasets.load_dataset(KOBEST_HUB, task, split=split))
    except Exception as e:  # no connection, a cache without it: one line, and what to do
        raise KoqualityError(f"decontaminate: KoBEST from the hub ({KOBEST_HUB} {task} {split}) could not be loaded "
                             f"({type(e).__name__}); pass kobest_dir: DIR (the KoBEST v1.0 TSVs)") from None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _file_items(spec: str) -> Iterator[tuple[BenchmarkItem, list[str]]]:
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise KoqualityError(f"decontaminate: benchmark {spec}: expected kobest or a path ending in "
                             f"{', '.join(FILE_SUFFIXES)}")
    if not path.is_file():
        raise KoqualityError(f"{spec}: no such file (a decontaminate benchmark)")
    found = False
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise KoqualityError(f"{spec} line {number}: not UTF-8 (byte {e.start + 1})") from None
            if number == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            if suffix == ".jsonl":
                try:
                    texts = list(_strings(json.loads(line)))
                except json.JSONDecodeError as e:
                    raise KoqualityError(f"{spec} line {number}: not JSON ({e.msg}, column {e.colno})") from None
            elif suffix == ".tsv":
                texts = line.split("\t")
            else:
                texts = [line]
            found = True
            yield BenchmarkItem(spec, None, str(number)), texts
    if not found:
        raise KoqualityError(f"{spec}: no benchmark text in it (expected one item per line)")


def benchmark_items(benchmarks: Sequence[str], kobest_dir: str | None = None
                    ) -> Iterator[tuple[BenchmarkItem, list[str]]]:
    """Every item of `benchmarks` with its texts, in the order the index ranks them."""
    if isinstance(benchmarks, str):
        benchmarks = [benchmarks]
    if not benchmarks:
        raise KoqualityError("decontaminate.benchmarks: empty (expected kobest and/or paths of .jsonl, .tsv or .txt files)")
    for spec in dict.fromkeys(benchmarks):
        if spec == "kobest":
            for task, split, rows in _kobest_splits(kobest_dir):
                for number, row in enumerate(rows):
                    yield (BenchmarkItem(f"kobest_{task}", split, str(number)),
                           [v for v in row.values() if isinstance(v, str)])
        else:
            yield from _file_items(spec)


# --- the index -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hit:
    text: int  # which of the texts given to `find`
    item: BenchmarkItem
    ngram: str  # the row's own normalised text spanning the shared n-gram (spaces kept)


class _Batch:
    """Texts normalised and laid end to end: characters (spaces removed) as 64-bit values with offsets."""

    def __init__(self, texts: Sequence[str]):
        self.normal = texts
        points = np.frombuffer("\x00".join(texts).replace(" ", "").encode("utf-32-le"), np.uint32)
        separator = points == 0  # a normalised text holds no NUL
        self.char_offsets = np.zeros(len(texts) + 1, np.int64)
        if texts:
            self.char_offsets[1:] = np.append(np.flatnonzero(separator), len(points)) - np.arange(len(texts))
        self.chars = _char_table()[points[~separator]]

    def char_span(self, text: int, start: int, n: int) -> str:
        """The normalised text (spaces kept) covering compact characters start..start+n of `text`."""
        where = [i for i, c in enumerate(self.normal[text]) if c != " "]
        return self.normal[text][where[start]: where[start + n - 1] + 1]


class BenchmarkIndex:
    """The hashed n-grams of the benchmarks, each pointing at its first occurrence (benchmark, split, item).

    `find(texts)` gives, for each text, the first window (left to right) it shares with a benchmark text, or
    None. Build with `BenchmarkIndex.build`."""

    def __init__(self, n: int, unit: str, items: list[BenchmarkItem], text_item: np.ndarray,
                 offsets: np.ndarray, units: np.ndarray, ngrams: HashSet, anchors: HashSet | None,
                 anchor_lengths: tuple[int, ...], texts: int):
        self.n, self.unit, self.items = n, unit, items
        self.text_item, self.offsets, self.units = text_item, offsets, units
        self.ngrams, self.anchors, self.anchor_lengths = ngrams, anchors, anchor_lengths
        self.texts = texts  # distinct normalised benchmark texts
        self.morphemes = Morphemes()

    @classmethod
    def build(cls, benchmarks: Sequence[str] = ("kobest",), kobest_dir: str | None = None, n: int | None = None,
              unit: str = "morpheme", anchor_chars: int = ANCHOR_CHARS, cache: bool = True) -> "BenchmarkIndex":
        """The index of `benchmarks`; with `cache`, kept in koquality's cache folder (`evaluate.cache_dir`) under
        a key of the files' contents, n, unit and Kiwi's version, so the next run loads it (0.1 s for KoBEST)
        instead of analysing the benchmark's words again (13 s on two cores). A damaged cache file is rebuilt;
        an unwritable cache folder only costs the next run the build."""
        if unit not in UNITS:
            raise KoqualityError(f"decontaminate.unit {unit}: expected one of {', '.join(UNITS)}")
        n = DEFAULT_N[unit] if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise KoqualityError(f"decontaminate.n {n}: expected a number at least 1")
        benchmarks = [benchmarks] if isinstance(benchmarks, str) else list(benchmarks)
        path = _cache_path(benchmarks, kobest_dir, n, unit, anchor_chars) if cache else None
        if path is not None and path.is_file():
            try:
                return cls._load(path)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # damaged: build it again
                pass
        index = cls._build(benchmarks, kobest_dir, n, unit, anchor_chars)
        if path is not None:
            try:
                index._save(path)
            except OSError:
                pass
        return index

    @classmethod
    def _build(cls, benchmarks: list[str], kobest_dir: str | None, n: int, unit: str, anchor_chars: int
               ) -> "BenchmarkIndex":
        items: list[BenchmarkItem] = []
        first: dict[str, int] = {}  # normalised text → its first item
        for item, texts in benchmark_items(benchmarks, kobest_dir):
            for text in texts:
                first.setdefault(normalise(text), len(items))
            items.append(item)
        first.pop("", None)
        normal = list(first)
        text_item = np.fromiter(first.values(), np.int64, len(first))
        batch = _Batch(normal)
        if unit == "char":
            offsets, units = batch.char_offsets, batch.chars
            starts = _window_starts(offsets, n)
            ngrams = HashSet(window_hashes(units, n)[starts], starts)
            return cls(n, unit, items, text_item, offsets, units, ngrams, None, (), len(normal))

        analyser = Morphemes()
        units, offsets, starts, ends = analyser(normal)
        windows = _window_starts(offsets, n)
        ngrams = HashSet(window_hashes(units, n)[windows], windows)
        # each window's surface in compact characters: position p of text t ↦ p − spaces before p in t
        text_of = np.searchsorted(offsets, windows, side="right") - 1
        begin = np.array(starts, np.int64)[windows] if len(windows) else np.empty(0, np.int64)
        end = np.array(ends, np.int64)[windows + n - 1] if len(windows) else np.empty(0, np.int64)
        normal_offsets = np.zeros(len(normal) + 1, np.int64)
        np.cumsum([len(t) for t in normal], out=normal_offsets[1:])
        spaces = np.concatenate([[0], np.cumsum(np.frombuffer("".join(normal).encode("utf-32-le"), np.uint32) == 32)])
        begin, end = begin + normal_offsets[text_of], end + normal_offsets[text_of]
        begin, end = begin - spaces[begin], end - spaces[end]  # compact positions in the concatenation
        anchor_start, anchor_length = begin, np.minimum(end - begin, anchor_chars)
        lengths = tuple(int(v) for v in np.unique(anchor_length) if v > 0)
        hashes = [window_hashes(batch.chars, length)[anchor_start[anchor_length == length]] for length in lengths]
        anchors = HashSet(np.concatenate(hashes) if hashes else np.empty(0, np.uint64))
        index = cls(n, unit, items, text_item, offsets, units, ngrams, anchors, lengths, len(normal))
        index.morphemes = analyser  # the benchmark's words, analysed already
        return index

    def _save(self, path: Path) -> None:
        from .tables import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        fields = list(zip(*[(i.benchmark, i.split or "", i.item) for i in self.items])) or [(), (), ()]
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, n=self.n, unit=self.unit, texts=self.texts, text_item=self.text_item, offsets=self.offsets,
                     units=self.units, ngram_keys=self.ngrams.keys, ngram_values=self.ngrams.values,
                     anchor_keys=self.anchors.keys if self.anchors else np.empty(0, np.uint64),
                     anchor_lengths=np.array(self.anchor_lengths, np.int64),
                     benchmark=np.array(fields[0], str), split=np.array(fields[1], str), item=np.array(fields[2], str))

    @classmethod
    def _load(cls, path: Path) -> "BenchmarkIndex":
        with np.load(path, allow_pickle=False) as z:
            unit = str(z["unit"])
            items = [BenchmarkItem(b, s or None, i) for b, s, i in zip(z["benchmark"].tolist(), z["split"].tolist(),
                                                                      z["item"].tolist())]
            return cls(int(z["n"]), unit, items, z["text_item"], z["offsets"], z["units"],
                       HashSet(z["ngram_keys"], z["ngram_values"]),
                       HashSet(z["anchor_keys"]) if unit == "morpheme" else None,
                       tuple(z["anchor_lengths"].tolist()), int(z["texts"]))

    def __repr__(self) -> str:
        return (f"BenchmarkIndex({len(self.items):,} items, {self.texts:,} texts, {len(self.ngrams):,} "
                f"{self.n}-{self.unit} n-grams)")

    def item_of(self, position: int) -> BenchmarkItem:
        text = int(np.searchsorted(self.offsets, position, side="right")) - 1
        return self.items[int(self.text_item[text])]

    def find(self, texts: Sequence[str | None]) -> list[Hit | None]:
        """The first shared n-gram of each text (raw: normalised here), or None."""
        normal = normalise_all(texts)
        batch = _Batch(normal)
        found: list[Hit | None] = [None] * len(texts)
        if self.unit == "char":
            for t, start, position in self._first_matches(batch.chars, batch.char_offsets):
                found[t] = Hit(t, self.item_of(position), batch.char_span(t, start, self.n))
            return found

        candidates = self._anchored(batch)
        units, offsets, starts, ends = self.morphemes([normal[t] for t in candidates])
        for c, start, position in self._first_matches(units, offsets):
            t, first = candidates[c], int(offsets[c]) + start
            found[t] = Hit(t, self.item_of(position), normal[t][starts[first]:ends[first + self.n - 1]])
        return found

    def _anchored(self, batch: _Batch) -> list[int]:
        """The texts holding an anchor: those Kiwi must analyse."""
        offsets, chars = batch.char_offsets, batch.chars
        if not self.anchor_lengths or len(chars) < self.anchor_lengths[0]:
            return []
        text_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        ends = offsets[1:][text_of]
        hits = []
        length = self.anchor_lengths[0]
        hashes = window_hashes(chars, length)
        with np.errstate(over="ignore"):
            while True:
                inside = np.arange(len(hashes)) + length <= ends[: len(hashes)]
                if length in self.anchor_lengths:
                    where, _ = self.anchors.find(hashes)
                    hits.append(text_of[where[inside[where]]])
                if length == self.anchor_lengths[-1] or len(hashes) < 2:
                    break
                hashes = hashes[:-1] * _P + chars[length:]
                length += 1
        return np.unique(np.concatenate(hits)).tolist() if hits else []

    def _first_matches(self, units: np.ndarray, offsets: np.ndarray) -> Iterator[tuple[int, int, int]]:
        """(text, window start within it, benchmark position) of each text's first verified shared window."""
        starts = _window_starts(offsets, self.n)
        if not len(starts):
            return
        where, slots = self.ngrams.find(window_hashes(units, self.n)[starts])
        text_of = np.searchsorted(offsets, starts[where], side="right") - 1
        done = set()
        for t, start, position in zip(text_of.tolist(), starts[where].tolist(), self.ngrams.values[slots].tolist()):
            if t in done or not np.array_equal(units[start:start + self.n], self.units[position:position + self.n]):
                continue  # a later window of a text already hit, or a 64-bit hash collision
            done.add(t)
            yield t, start - int(offsets[t]), position


INDEX_FORMAT = "decontaminate-index-1-word-by-word"


def _cache_path(benchmarks: list[str], kobest_dir: str | None, n: int, unit: str, anchor_chars: int) -> Path | None:
    """Where the index of these benchmark files lives in koquality's cache; None for KoBEST from the hub (no
    file to fingerprint)."""
    from .cache import fingerprint
    from .evaluate import cache_dir

    files = benchmark_fingerprint({"benchmarks": benchmarks, "kobest_dir": kobest_dir, "n": n, "unit": unit})
    if any(str(v).startswith("hub:") for v in files["files"].values()):
        return None
    kiwi = (kiwi_version(), kiwi_settings(), anchor_chars) if unit == "morpheme" else None
    return cache_dir() / "decontaminate" / f"{fingerprint(INDEX_FORMAT, files, unit, n, kiwi)}.npz"


# --- the filter ----------------------------------------------------------------------------------------------

class Decontaminator:
    """`score_rows(table)` → {"contaminated_by": [detail or None per row]}; the index is built here."""

    def __init__(self, benchmarks: Sequence[str] = ("kobest",), kobest_dir: str | None = None, n: int | None = None,
                 unit: Literal["morpheme", "char"] = "morpheme", batch_rows: int = 8192):
        self.benchmarks = list(benchmarks) if not isinstance(benchmarks, str) else [benchmarks]
        self.kobest_dir = kobest_dir
        self.unit = unit
        self.batch_rows = batch_rows
        self.index = BenchmarkIndex.build(self.benchmarks, kobest_dir, n, unit)
        self.n = self.index.n

    def config(self) -> dict[str, Any]:
        return {"filter": "decontaminate", "benchmarks": self.benchmarks, "kobest_dir": self.kobest_dir, "n": self.n,
                "unit": self.unit, "normalisation": NORMALISATION,
                "anchor_chars": ANCHOR_CHARS if self.unit == "morpheme" else None,
                "benchmark_files": benchmark_fingerprint({"benchmarks": self.benchmarks, "kobest_dir": self.kobest_dir}),
                "items": len(self.index.items), "ngrams": len(self.index.ngrams),
                **({"kiwipiepy": kiwi_version(), **kiwi_settings()} if self.unit == "morpheme" else {})}

    def describe(self, field: str, hit: Hit) -> str:
        units = "morphemes" if self.unit == "morpheme" else "characters"
        return f"{field} shares {self.n} {units} with {hit.item}: '{hit.ngram}'"

    def score_rows(self, table: pa.Table) -> dict[str, list]:
        out: list[str | None] = []
        for start in range(0, table.num_rows, self.batch_rows):
            batch = table.slice(start, self.batch_rows)
            rows = batch.num_rows
            columns = [batch.column(f).to_pylist() if f in batch.column_names else [None] * rows for f in FIELDS]
            hits = self.index.find([text for column in columns for text in column])  # field after field
            for r in range(rows):  # the first field that shares an n-gram names the row's
                out.append(next((self.describe(field, hits[f * rows + r]) for f, field in enumerate(FIELDS)
                                 if hits[f * rows + r] is not None), None))
        return {"contaminated_by": out}


# --- the backend ---------------------------------------------------------------------------------------------

_DIGESTS: dict[tuple[str, int, int], str] = {}


def _digest(path: Path) -> str:
    from .tables import file_digest

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digest(path)
    return _DIGESTS[key]


def benchmark_fingerprint(settings: dict[str, Any]) -> dict[str, Any]:
    """What the benchmarks hold, for the cache key: a digest of every file read (KoBEST's TSVs included), so a
    changed benchmark file recomputes the filter; and n as it will run."""
    from .kobest import FOLDERS, SPLITS

    files: dict[str, str] = {}
    for spec in settings.get("benchmarks") or ["kobest"]:
        if spec == "kobest" and settings.get("kobest_dir") is None:
            files[spec] = f"hub:{KOBEST_HUB}"
            continue
        paths = ([Path(settings["kobest_dir"]) / folder / f"{name}.tsv" for folder in FOLDERS.values()
                  for name in sorted(set(SPLITS.values()))] if spec == "kobest" else [Path(spec)])
        for path in paths:
            if not path.is_file():
                raise KoqualityError(f"{path}: no such file (a decontaminate benchmark)")
            files[str(path)] = _digest(path)
    unit = settings.get("unit") or "morpheme"
    return {"files": files, "n": settings.get("n") or DEFAULT_N.get(unit), "normalisation": NORMALISATION}


class DecontaminateSettings(Settings):
    benchmarks: list[str] = ["kobest"]
    kobest_dir: str | None = None
    n: int | None = Field(None, ge=1)  # None: 13 morphemes, 20 characters
    unit: Literal["morpheme", "char"] = "morpheme"


BACKENDS = (Backend("filter", "decontaminate", "koquality.decontaminate:Decontaminator", DecontaminateSettings,
                    writes=("contaminated_by",), reads=FIELDS,
                    help="flag rows sharing an n-gram (13 Kiwi morphemes, or 20 characters) with a benchmark item",
                    library="kiwipiepy", modules=("kiwipiepy",), resolve=benchmark_fingerprint,
                    key_parts=lambda: (INDEX_FORMAT, ANCHOR_CHARS, kiwi_settings())),)
