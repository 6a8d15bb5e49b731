"""Texts to model inputs with the bundle's ``tokenizer.json`` and the manifest's settings.

The result equals a Hugging Face fast tokenizer called with ``truncation=True,
max_length=manifest.tokenizer.max_length, padding=True`` (pad right to the longest text of the
batch), token for token.

The truncation and padding stored inside ``tokenizer.json`` are ignored on purpose: exported
tokenizers often carry ``Fixed(128)`` padding or another max length. Truncation is set explicitly
from the manifest, and padding is done here in numpy with the manifest's ``pad_id`` (attention mask 0,
token type 0), which is what ``padding=True`` does. Splitting the two steps lets the Reranker tokenize
a chunk once, sort it by length and pad each batch only to its own longest text.

Long texts are cut before the tokenizer sees them, so the work and memory per text are bounded
whatever its length (a tokenizer builds tokens and offsets for the whole text before it truncates):
a text longer than ``max_length * CHARS_PER_TOKEN`` characters keeps that many, moved back to the
last whitespace within ``_WORD_BACKOFF`` characters so no word is split. The model reads only the
first ``max_length`` tokens, and a WordPiece token covers at most 100 characters of a word
(``max_input_chars_per_word``; BPE and Unigram pieces are shorter), so for ordinary text the cut
never reaches a token the model reads: the token ids are the same as for the whole text. Only a text
whose first ``max_length`` tokens span more characters -- long runs of whitespace, or one word longer
than the WordPiece limit, which becomes a single ``[UNK]`` -- can tokenize differently.

Shortcut: only right padding and single texts (no text pairs) -- what a classifier and a sentence
embedder of this project need (a decoder-only classifier's graph finds each row's last real token
from the attention mask, so right padding serves it too).

With a bundle's tokenizer.json (the examples here are not run as doctests: they need a bundle):

>>> tok = BundleTokenizer("bundle/tokenizer.json", manifest.tokenizer)  # doctest: +SKIP
>>> tok(["hi", "hello there"])["attention_mask"]  # doctest: +SKIP
array([[1, 1, 1, 0],
       [1, 1, 1, 1]])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .errors import BundleError, InputError
from .io import unicode_problem

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
CHARS_PER_TOKEN = 128  # characters kept per token the model reads (see the module docstring)
_WORD_BACKOFF = 256  # how far a cut moves back to find whitespace


@dataclass(frozen=True)
class Tokens:
    """One text after tokenization and truncation, before padding; ``text``: the text itself, kept
    so that a model with a tokenizer of its own (the embedder beside a decoder-only classifier)
    can tokenize the rows it needs."""

    ids: tuple[int, ...]
    type_ids: tuple[int, ...]
    text: str | None = field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.ids)


class BundleTokenizer:
    """A ``tokenizers.Tokenizer`` configured from the manifest; thread-safe (never reconfigured after init)."""

    def __init__(self, path: str | os.PathLike, settings) -> None:
        from tokenizers import Tokenizer  # imported here so `import lrsl_rt` stays light

        self.path = str(path)
        self.settings = settings
        try:
            tok = Tokenizer.from_file(self.path)
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            raise BundleError(f"{self.path}: not a valid `tokenizers` file: {e}") from e
        if settings.max_length < 2:
            raise BundleError(f"{self.path}: tokenizer.max_length must be >= 2, got {settings.max_length}")
        token_id = tok.token_to_id(settings.pad_token)
        if token_id != settings.pad_id:
            raise BundleError(
                f"{self.path}: pad token {settings.pad_token!r} has id {token_id} in the vocabulary, "
                f"manifest expects pad_id {settings.pad_id}"
            )
        tok.no_padding()
        tok.enable_truncation(settings.max_length, stride=0, strategy="longest_first", direction="right")
        self._tok = tok

    @property
    def max_length(self) -> int:
        return self.settings.max_length

    @property
    def max_chars(self) -> int:
        """Characters of a text the tokenizer sees; the rest cannot reach the model (module docstring)."""
        return self.settings.max_length * CHARS_PER_TOKEN

    def tokenize(self, texts: list[str], hold_gil: bool = False) -> list[Tokens]:
        """Token ids (special tokens added, truncated to max_length) of each text, unpadded.

        ``hold_gil``: encode text by text without releasing Python's GIL. ``encode_batch`` releases it,
        which lets other threads run during a long batch but makes the caller wait for the GIL to come
        back (up to Python's switch interval, while another thread runs Python code): for a few short
        texts on an event loop, holding it is quicker. The ids are the same either way.
        """
        if not texts:
            return []
        cut = [cut_text(t, self.max_chars) if isinstance(t, str) else t for t in texts]
        try:
            if hold_gil:
                encodings = [self._tok.encode(t, add_special_tokens=True) for t in cut]
            else:
                encodings = self._tok.encode_batch(cut, add_special_tokens=True)
        except TypeError as e:  # tokenizers refuses a str it cannot encode as UTF-8 (a lone surrogate)
            raise InputError(_bad_text(cut) or f"the tokenizer refused a text: {e}") from e
        return [Tokens(tuple(e.ids), tuple(e.type_ids), t) for e, t in zip(encodings, texts, strict=True)]

    def pad(self, rows: list[Tokens]) -> dict[str, np.ndarray]:
        """int64 arrays ``input_ids``, ``attention_mask``, ``token_type_ids`` padded right to the longest row.

        With ``tok`` of the module's example (skipped: it needs a bundle's tokenizer.json):

        >>> tok.pad([Tokens((2, 7, 3), (0, 0, 0)), Tokens((2, 3), (0, 0))])["input_ids"]  # doctest: +SKIP
        array([[2, 7, 3],
               [2, 3, 0]])
        """
        n = len(rows)
        width = max((len(r) for r in rows), default=0)
        ids = np.full((n, width), self.settings.pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        for i, r in enumerate(rows):
            m = len(r)
            ids[i, :m] = r.ids
            mask[i, :m] = 1
            types[i, :m] = r.type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def feeds(self, rows: list[Tokens]) -> dict[str, np.ndarray]:
        """:meth:`pad`'s arrays of the inputs the manifest lists for this tokenizer's graphs, no others."""
        arrays = self.pad(rows)
        return {name: arrays[name] for name in self.settings.model_input_names}

    def retokenize(self, rows: list[Tokens]) -> list[Tokens]:
        """This tokenizer's rows for rows another tokenizer made (from the texts they keep)."""
        if any(r.text is None for r in rows):
            raise InputError("these token rows carry no text; tokenize the texts with the bundle's tokenizer")
        return self.tokenize([r.text for r in rows])

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Tokenize and pad one batch: the same ids as HF ``tok(texts, truncation=True, max_length=..., padding=True)``."""
        return self.pad(self.tokenize(texts))


def cut_text(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters, at whitespace when one is near the cut.

    >>> cut_text("one two three", 9)
    'one two'
    """
    if len(text) <= max_chars:
        return text
    for i in range(max_chars, max(max_chars - _WORD_BACKOFF, 0), -1):
        if text[i].isspace():
            return text[:i]
    return text[:max_chars]


def _bad_text(texts: list) -> str | None:
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            return f"text #{i} of the batch: expected a string, got {type(t).__name__}"
        problem = unicode_problem(t)
        if problem:
            return f"text #{i} of the batch: {problem}"
    return None
