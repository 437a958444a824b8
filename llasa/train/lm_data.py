"""The LM recipe's batches: code shards -> training examples -> padded batches, in an order
that is a pure function of (seed, step), with the recipe's input corruptions (speech noise,
voice pairs) drawn from (seed, step) too, so that a resumed run reads what an uninterrupted
one did."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from llasa.lm.prompt import training_example
from llasa.lm.vocab import SpeechVocab


def data_dirs(data: str | Path | list) -> list[Path]:
    return [Path(data)] if isinstance(data, (str, Path)) else [Path(d) for d in data]


# what must agree between shard folders trained on together: the same token means the same thing
_SAME_TOKENS = ("codebook_size", "vocab_size", "speech_offset", "frontend", "sample_rate", "hop_length")


def _vocabulary(folder: Path) -> dict | None:
    """The token -> id maps of the tokenizer saved beside a folder's shards (None if none was)."""
    path = folder / "tokenizer" / "tokenizer.json"
    if not path.is_file():
        return None
    made = json.loads(path.read_text())
    return {"model": made.get("model", {}).get("vocab"), "added": {t["content"]: t["id"] for t in made.get("added_tokens", [])}}


def check_data_dirs(dirs: list[Path]) -> None:
    """Several shard folders must have been made with the same codec codebook, tokenizer and
    front-end (their ``tokenize_config.json`` and saved vocabularies agree), or their rows mean
    different things."""
    made = {d: json.loads((d / "tokenize_config.json").read_text()) for d in dirs if (d / "tokenize_config.json").is_file()}
    if len(made) < 2:
        return
    (first, ref), *rest = made.items()
    vocabulary = _vocabulary(first)
    for folder, other in rest:
        differ = [f"{k}: {ref.get(k)!r} in {first} but {other.get(k)!r} in {folder}" for k in _SAME_TOKENS if ref.get(k) != other.get(k)]
        theirs = _vocabulary(folder)
        if vocabulary is not None and theirs is not None and theirs != vocabulary:
            differ.append(f"the tokenizers saved in {first}/tokenizer and {folder}/tokenizer have different vocabularies")
        if differ:
            raise ValueError("shard folders were tokenized differently, so their tokens mean different things: " + "; ".join(differ))


class RowOrder:
    """Which dataset rows step `s` uses: epoch-wise permutations from the seed, consumed in order.

    With ``group`` > 0 and row ``lengths``, every ``group`` consecutive global batches are drawn
    together, sorted by length, cut into batches and visited in a seeded random order: batches
    of similar lengths waste little compute on padding (the corpus' rows vary 2x in length).
    """

    def __init__(self, n_rows: int, seed: int, *, lengths: np.ndarray | None = None, group: int = 0):
        if n_rows == 0:
            raise ValueError("no training rows: the data directory holds no tokenized utterances")
        if group and lengths is None:
            raise ValueError("length grouping needs the rows' lengths")
        self.n_rows, self.seed, self.lengths, self.group, self._cache = n_rows, seed, lengths, group, {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n_rows)}
        return self._cache[epoch]

    def rows(self, start: int, count: int) -> list[int]:
        out = []
        for pos in range(start, start + count):
            epoch, i = divmod(pos, self.n_rows)
            out.append(int(self._perm(epoch)[i]))
        return out

    def batch(self, step: int, size: int) -> list[int]:
        """The rows of global batch ``step`` (``size`` rows)."""
        if not self.group:
            return self.rows(step * size, size)
        block, j = divmod(step, self.group)
        pool = sorted(self.rows(block * self.group * size, self.group * size), key=lambda r: self.lengths[r])
        visit = np.random.default_rng([self.seed, block, 1]).permutation(self.group)
        k = int(visit[j])
        return pool[k * size : (k + 1) * size]


PAD_MULTIPLE = 64


def collate(examples: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad un-padded examples to the longest in the batch (not to the 2048 of the rows),
    rounded up to a multiple of 64: a few distinct shapes instead of hundreds, which keeps
    oneDNN's kernel cache and the allocator from growing without bound (seen: 7 to 11 GB in
    4 minutes with exact lengths)."""
    longest = max(len(e["input_ids"]) for e in examples)
    length = -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE
    fill = {"input_ids": pad_id, "labels": -100, "attention_mask": 0}
    batch = {}
    for key, value in fill.items():
        out = torch.full((len(examples), length), value, dtype=torch.long)
        for i, e in enumerate(examples):
            out[i, : len(e[key])] = e[key]
        batch[key] = out
    return batch


def corrupt_speech(input_ids: torch.Tensor, vocab: SpeechVocab, rate: float, levels: list[int] | None,
                   generator: torch.Generator) -> torch.Tensor:  # fmt: skip
    """A copy of ``input_ids`` with a fraction ``rate`` of its speech codes replaced (see
    ``LMTrainConfig.speech_noise``); every other token is left as it is."""
    codes = input_ids - vocab.speech_offset
    speech = (codes >= 0) & (codes < vocab.codebook_size)
    hit = speech & (torch.rand(input_ids.shape, generator=generator) < rate)
    if levels is None:
        new = torch.randint(0, vocab.codebook_size, input_ids.shape, generator=generator)
    else:
        if math.prod(levels) != vocab.codebook_size:
            raise ValueError(f"speech_noise_levels {levels} make {math.prod(levels)} codes, the vocabulary has "
                             f"{vocab.codebook_size}")  # fmt: skip
        shape = (*input_ids.shape, len(levels))
        steps = (torch.rand(shape, generator=generator) < 0.5) * (torch.randint(0, 2, shape, generator=generator) * 2 - 1)
        # a code with no dimension drawn moves on one random dimension: it always changes
        forced = torch.nn.functional.one_hot(torch.randint(0, len(levels), input_ids.shape, generator=generator), len(levels))
        forced = forced * (torch.randint(0, 2, (*input_ids.shape, 1), generator=generator) * 2 - 1)
        steps = torch.where((steps == 0).all(-1, keepdim=True), forced, steps)
        new, basis, rest = torch.zeros_like(codes), 1, codes.clamp(0, vocab.codebook_size - 1)
        for d, n in enumerate(levels):  # FSQ index = digit_0 + n_0 (digit_1 + n_1 (...))
            digit, rest = rest % n, rest // n
            moved = digit + steps[..., d]
            moved = torch.where((moved < 0) | (moved >= n), digit - steps[..., d], moved)  # off the edge: the other way
            new += moved * basis
            basis *= n
    return torch.where(hit, new + vocab.speech_offset, input_ids)


def with_speech_noise(batch: dict[str, torch.Tensor], vocab: SpeechVocab, rate: float, levels: list[int] | None, *,
                      seed: int, step: int, part: int) -> dict[str, torch.Tensor]:  # fmt: skip
    """The micro-batch ``part`` of ``step`` as the model reads it under speech noise: the inputs
    corrupted, the labels (the targets) untouched; the draws are a function of (seed, step, part)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step * 1009 + part)
    return {**batch, "input_ids": corrupt_speech(batch["input_ids"], vocab, rate, levels, generator)}


class Examples:
    """Rows of a shard dataset rendered into training examples on demand; with ``voice_pairs``,
    :meth:`example` sometimes joins a row after another of the same speaker."""

    def __init__(self, dataset, tokenizer, max_length: int, indices: np.ndarray, *, voice_pairs: float = 0.0,
                 seed: int = 0):  # fmt: skip
        self.dataset, self.tokenizer, self.max_length, self.indices = dataset, tokenizer, max_length, indices
        self.voice_pairs, self.seed = voice_pairs, seed
        if voice_pairs:
            speakers = []
            for i in indices:
                try:
                    speakers.append(dataset.metadata(int(i))["speaker"])
                except (ValueError, KeyError) as err:
                    raise ValueError(f"voice_pairs needs the speaker of every training row (the shard index "
                                     f"written by `llasa data tokenize`): row {int(i)}: {err}") from None  # fmt: skip
            _, self._voice = np.unique(speakers, return_inverse=True)
            self._same_voice = [np.flatnonzero(self._voice == v) for v in range(self._voice.max() + 1)]
            self._vocab = SpeechVocab.from_tokenizer(tokenizer)
            self._space = tokenizer(" ", add_special_tokens=False)["input_ids"]

    def example(self, i: int, step: int) -> dict[str, torch.Tensor]:
        """Example ``i`` as training step ``step`` reads it: under ``voice_pairs``, joined after
        another utterance of its speaker in that fraction of the steps (a whole batch or none of
        it, so the single rows are not padded to the length of the joined ones). The draws are a
        function of (seed, step, i), so resumed runs read the same."""
        if self.voice_pairs and np.random.default_rng((self.seed, step)).random() < self.voice_pairs:
            others = self._same_voice[self._voice[i]]
            if len(others) > 1:
                j = int(np.random.default_rng((self.seed, step, int(i))).choice(others[others != i]))
                joined = self._joined(np.asarray(self.dataset[int(self.indices[j])]), np.asarray(self.dataset[int(self.indices[i])]))
                if joined is not None:
                    return training_example(self.tokenizer, joined, max_length=self.max_length, pad=False)
        return self[i]

    def _joined(self, first: np.ndarray, second: np.ndarray) -> np.ndarray | None:
        """``TUS text1 ␣ text2 TUE SGS codes1 codes2 SGE``: what a prompt cloned from ``first``
        reads, then the speech for ``second``. Token ids are joined, not the strings re-tokenized:
        exact for the byte-level tokenizer, a near neighbour of the joined string's tokens for a
        BPE one. None when a row is truncated or the pair would not fit ``max_length``."""
        parts = []
        for row in (first, second):
            sgs, sge = np.flatnonzero(row == self._vocab.sgs_id), np.flatnonzero(row == self._vocab.sge_id)
            if not sgs.size or not sge.size:
                return None
            parts.append((row[: sgs[0]], row[sgs[0] : sge[0] + 1]))
        (text1, speech1), (text2, speech2) = parts
        joined = np.concatenate([text1[:-1], self._space, text2[1:], speech1[:-1], speech2[1:]])
        return joined if len(joined) <= self.max_length else None

    def __len__(self) -> int:
        return len(self.indices)

    def lengths(self) -> np.ndarray:
        """Non-padding tokens of each row (a proxy for its example's length)."""
        pad = self.tokenizer.pad_token_id
        return np.array([int((np.asarray(self.dataset[int(i)]) != pad).sum()) for i in self.indices])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = np.asarray(self.dataset[int(self.indices[i])])
        return training_example(self.tokenizer, row, max_length=self.max_length, pad=False)


class SwappedText(Examples):
    """Each row's speech after another row's text (the row half the set away, or the next one
    whose text differs): the loss a model gets without reading the text it was given."""

    def __init__(self, examples: Examples):
        super().__init__(examples.dataset, examples.tokenizer, examples.max_length, examples.indices)
        self._sgs = SpeechVocab.from_tokenizer(self.tokenizer).sgs_id

    def _split(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        row = np.asarray(self.dataset[int(self.indices[i])])
        start = int(np.flatnonzero(row == self._sgs)[0])
        return row[:start], row[start:]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n = len(self)
        text, speech = self._split(i)
        for k in range(n - 1):
            other, _ = self._split((i + n // 2 + k) % n)
            if not np.array_equal(other, text):
                text = other
                break
        return training_example(self.tokenizer, np.concatenate([text, speech]), max_length=self.max_length, pad=False)


def split(data: str | list, eval_data: str | None, eval_rows: int, tokenizer, max_length: int, *,
          voice_pairs: float = 0.0, seed: int = 0) -> tuple[Examples, Examples]:  # fmt: skip
    """(training, held-out) examples: ``eval_data``'s rows, or else the last ``eval_rows`` (at most
    a tenth) of ``data``. Held-out rows stay single utterances: a loss comparable across runs."""
    from llasa.data.tokenize import CodeShardDataset

    dataset = CodeShardDataset(data_dirs(data))
    n = len(dataset)
    if eval_data:
        held_out = CodeShardDataset(eval_data)
        return (
            Examples(dataset, tokenizer, max_length, np.arange(n), voice_pairs=voice_pairs, seed=seed),
            Examples(held_out, tokenizer, max_length, np.arange(len(held_out))),
        )
    n_eval = min(eval_rows, n // 10)
    return (
        Examples(dataset, tokenizer, max_length, np.arange(n - n_eval), voice_pairs=voice_pairs, seed=seed),
        Examples(dataset, tokenizer, max_length, np.arange(n - n_eval, n)),
    )
