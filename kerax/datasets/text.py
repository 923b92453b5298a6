"""A character-level text corpus for next-character prediction, present on every machine.

By default the text is the docstrings of a fixed, sorted list of pure-Python modules of
the standard library (English prose with some code examples), so it needs no download
and is the same on every machine with the same Python version. ``path=`` reads a UTF-8
file instead.

Example:
  >>> corpus = kx.datasets.text.load_corpus(max_chars=50_000)
  >>> x, y = corpus.windows(64, stride=3)        # x int32 (n, 64), y int32 (n,)
  >>> corpus.decode(x[0]) + corpus.decode(y[:1]) == corpus.text[:65]
  True
"""

from __future__ import annotations

import ast
import dataclasses
import math
import os
import sysconfig
from pathlib import Path
from typing import Sequence

import numpy as np

from kerax import errors

__all__ = ["Corpus", "STDLIB_MODULES", "load_corpus"]

# Docstring-rich modules that exist, as single files, in CPython 3.10 to 3.13 (sorted;
# read in this order until max_chars). Together over 250,000 characters.
STDLIB_MODULES = ("argparse", "calendar", "codecs", "difflib", "doctest", "fractions",
                  "functools", "heapq", "inspect", "ipaddress", "logging/__init__",
                  "statistics", "textwrap", "threading", "typing")
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _codepoints(s: str) -> np.ndarray:
    return np.frombuffer(s.encode("utf-32-le"), dtype="<u4")


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A text, its sorted character vocabulary, and the text encoded as int32 ids.

    ``Corpus(text)`` builds the vocabulary from the text; ``Corpus(text, vocab)`` uses a
    given one (``split`` does, so both parts share ids).

    Attributes:
      text: the text.
      vocab: the sorted unique characters; id ``i`` is ``vocab[i]``.
      ids: int32 ``(len(text),)``, the encoded text (read-only).
    """

    text: str
    vocab: tuple[str, ...] = None  # type: ignore[assignment]  # None: the text's own
    ids: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)
    _codes: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise errors.DataError(f"a corpus needs a str; received {type(self.text).__name__}")
        if not self.text:
            raise errors.DataError("a corpus needs at least one character; received an empty text")
        vocab = tuple(sorted(set(self.text))) if self.vocab is None else tuple(self.vocab)
        if any(not isinstance(c, str) or len(c) != 1 for c in vocab) or len(set(vocab)) != len(vocab):
            raise errors.DataError(
                f"vocab must be distinct single characters; received {self.vocab!r:.80}")
        codes = _codepoints("".join(vocab))
        order = np.argsort(codes, kind="stable")
        if not np.array_equal(order, np.arange(len(vocab))):
            vocab, codes = tuple(vocab[i] for i in order), codes[order]  # keep vocab sorted
        object.__setattr__(self, "vocab", vocab)
        object.__setattr__(self, "_codes", codes)
        ids = self.encode(self.text)
        ids.flags.writeable = False
        object.__setattr__(self, "ids", ids)

    @property
    def vocab_size(self) -> int:
        """The number of distinct characters."""
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.text)

    def encode(self, s: str) -> np.ndarray:
        """Returns the ids of ``s``'s characters, int32 ``(len(s),)``.

        Raises:
          DataError: a character of ``s`` is not in the vocabulary (it is named).
        """
        cps = _codepoints(s)
        ids = np.searchsorted(self._codes, cps)
        known = ids < len(self._codes)
        known[known] = self._codes[ids[known]] == cps[known]
        if not known.all():
            pos = int(np.flatnonzero(~known)[0])
            raise errors.DataError(
                f"character {s[pos]!r} (U+{ord(s[pos]):04X}) at position {pos} is not in "
                f"the corpus vocabulary of {self.vocab_size} characters")
        return ids.astype(np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Returns the text of a 1-D sequence of ids.

        Raises:
          DataError: an id is outside ``[0, vocab_size)``.
        """
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= self.vocab_size):
            raise errors.DataError(
                f"ids must be integers in [0, {self.vocab_size}); received {ids.dtype} "
                f"values in [{ids.min()}, {ids.max()}]")
        return self._codes[ids.astype(np.intp)].astype("<u4").tobytes().decode("utf-32-le")

    def windows(self, length: int, stride: int = 1, limit: int | None = None):
        """Cuts the text into windows and the character that follows each one.

        Window ``k`` starts at ``k * stride``: ``x[k] = ids[k*stride : k*stride + length]``
        and ``y[k] = ids[k*stride + length]``.

        Args:
          length: characters per window.
          stride: characters between the starts of consecutive windows.
          limit: keep at most this many windows (the first ones).

        Returns:
          ``(x, y)``: int32 ``(n, length)`` and int32 ``(n,)``.

        Raises:
          DataError: a non-positive argument, or a text too short for one window.
        """
        for name, value in (("length", length), ("stride", stride), ("limit", limit)):
            if value is None and name == "limit":
                continue
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise errors.DataError(f"windows: {name} must be a positive int; received {name}={value!r}")
        if len(self.ids) <= length:
            raise errors.DataError(
                f"windows: a text of {len(self.ids)} characters has no window of length {length} "
                f"with a next character; it needs at least {length + 1}")
        n = (len(self.ids) - length - 1) // stride + 1
        n = n if limit is None else min(n, int(limit))
        view = np.lib.stride_tricks.sliding_window_view(self.ids[:-1], length)
        x = np.ascontiguousarray(view[: (n - 1) * stride + 1 : stride])
        y = self.ids[length : length + (n - 1) * stride + 1 : stride].copy()
        return x, y

    def split(self, test_fraction: float = 0.1) -> tuple["Corpus", "Corpus"]:
        """Splits the text in two, the last ``test_fraction`` of it held out, sharing vocab.

        Returns:
          ``(train, test)`` corpora with this corpus's ``vocab``, so their ids agree.

        Raises:
          ConfigError: ``test_fraction`` outside (0, 1) or leaving a part empty.
        """
        if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
            raise errors.ConfigError(f"test_fraction must be in (0, 1); received {test_fraction!r}")
        n_test = math.ceil(test_fraction * len(self.text))
        if n_test >= len(self.text):
            raise errors.ConfigError(
                f"test_fraction={test_fraction!r} of a {len(self.text)}-character text "
                "leaves no training text")
        cut = len(self.text) - n_test
        return Corpus(self.text[:cut], self.vocab), Corpus(self.text[cut:], self.vocab)

    def unigram_entropy(self) -> float:
        """Returns ``-sum p log p`` (nats) of the character frequencies.

        That is the cross-entropy a model ignoring all context reaches at best: a
        next-character model must go below it to have learned anything.
        """
        p = np.bincount(self.ids, minlength=self.vocab_size) / len(self.ids)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())


def _docstrings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    nodes = sorted((n for n in ast.walk(tree) if isinstance(n, _DOC_NODES)),
                   key=lambda n: getattr(n, "lineno", 0))  # source order; the module first
    return [doc for doc in map(ast.get_docstring, nodes) if doc]


def stdlib_text(max_chars: int | None = 200_000) -> str:
    """Returns the docstrings of ``STDLIB_MODULES``, in order, cut at ``max_chars``.

    Raises:
      DatasetNotFoundError: none of the modules' sources is on this machine.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for module in STDLIB_MODULES:
        path = root / f"{module}.py"
        if not path.is_file():
            continue  # a trimmed Python install; the rest still gives a corpus
        for doc in _docstrings(path):
            parts.append(doc)
            size += len(doc) + 2
        if max_chars is not None and size >= max_chars:
            break
    if not parts:
        raise errors.DatasetNotFoundError(
            f"the default corpus reads the standard library's sources from {root}, but none of "
            f"{[m + '.py' for m in STDLIB_MODULES]} is there; pass load_corpus(path=...) instead")
    text = "\n\n".join(parts)
    return text if max_chars is None else text[:max_chars]


def _read_file(path: Path) -> str:
    if not path.exists():
        raise errors.DatasetNotFoundError(f"load_corpus: path={str(path)!r} does not exist")
    if not path.is_file():
        raise errors.DataError(f"load_corpus: path={str(path)!r} is not a file; expected a UTF-8 text file")
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: drop a leading BOM
    except UnicodeDecodeError as e:
        raise errors.DataError(
            f"load_corpus: {path} is not UTF-8 text: byte 0x{e.object[e.start]:02x} at "
            f"offset {e.start} cannot be decoded") from None


def load_corpus(path: str | os.PathLike | None = None,
                max_chars: int | None = 200_000) -> Corpus:
    """Loads a character-level corpus: a UTF-8 file, or by default standard-library docs.

    Args:
      path: a UTF-8 text file; ``None`` reads the docstrings of ``STDLIB_MODULES``.
      max_chars: keep the first ``max_chars`` characters; ``None`` keeps everything.

    Returns:
      A ``Corpus`` (``text``, ``vocab``, ``ids``, ``windows``, ``split``, ...).

    Raises:
      DataError: an empty or non-UTF-8 file, or a non-positive ``max_chars``.
      DatasetNotFoundError: ``path`` does not exist.
    """
    if max_chars is not None and (not isinstance(max_chars, (int, np.integer))
                                  or isinstance(max_chars, bool) or max_chars < 1):
        raise errors.DataError(f"load_corpus: max_chars must be a positive int or None; "
                               f"received max_chars={max_chars!r}")
    if path is None:
        return Corpus(stdlib_text(max_chars))
    path = Path(path).expanduser()
    text = _read_file(path)
    if not text:
        raise errors.DataError(f"load_corpus: {path} is empty; a corpus needs at least one character")
    return Corpus(text if max_chars is None else text[:max_chars])
