"""Chunked decoding of a growing code sequence (e.g. codes arriving from the LM).

X-codec2's decoder is not causal (attention and centred convs see both sides), so no exact
incremental form exists; following community practice (X-Codec-2.0 issues #15, #28) each
chunk is decoded together with up to `left_context` earlier codes and only its own part is
kept. Two additions reduce the seams: `lookahead` codes after the chunk are decoded too (the
audio at the chunk's end then sees its right neighbours; they cost that much latency) and
the first hop of each chunk is cross-faded with the previous window's audio of those same
samples, so consecutive chunks join without a step.
"""

from __future__ import annotations

import numpy as np
import torch

from llasa.codec.configs import as_codes


class StreamingDecoder:
    """`push` codes as they arrive, receive finished audio chunks; `flush` at the end."""

    def __init__(self, codec, *, chunk_tokens: int = 25, left_context: int = 150, lookahead: int = 4, context=None):
        """``codec``: a `llasa.codec.Codec`, taken as given rather than imported, since
        `Codec.stream_decode` builds on this module.
        ``context``: codes that precede every stream (a cloned voice's codes, as :meth:`Synthesizer.decode`
        puts them before each chunk), decoded as left context of the first chunks and never emitted."""
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
        if left_context < 0 or lookahead < 0:
            raise ValueError(f"left_context and lookahead must be >= 0, got {left_context} and {lookahead}")
        self.codec = codec
        self.chunk_tokens = chunk_tokens
        self.left_context = left_context
        self.lookahead = lookahead
        self._fade = np.sin(np.linspace(0, np.pi / 2, codec.hop_length, dtype=np.float32)) ** 2 if lookahead else None
        self._context = np.empty(0, dtype=np.int64)
        if context is not None:
            context = as_codes(np.atleast_1d(np.asarray(context)), codec.codebook_size, what="context codes")
            self._context = context[max(0, len(context) - left_context) :]
        self._reset()

    def _reset(self) -> None:
        self._tokens = self._context.copy()
        self._first = 0  # position in the whole stream (context included) of self._tokens[0]
        self._emitted = len(self._context)  # codes whose audio has been handed out (or never will be)
        self._tail: np.ndarray | None = None  # previous window's audio of the next chunk's first hop

    @property
    def _received(self) -> int:
        return self._first + len(self._tokens)

    def push(self, codes) -> list[np.ndarray]:
        """Add one code or an array of codes; return the audio chunks that are now final."""
        if isinstance(codes, torch.Tensor):
            codes = codes.detach().cpu().numpy()
        codes = np.atleast_1d(np.asarray(codes))
        if codes.size == 0:
            return []
        codes = as_codes(codes, self.codec.codebook_size, what=f"streamed codes after position {self._received}")
        self._tokens = np.concatenate([self._tokens, codes])
        chunks = []
        while self._received - self._emitted >= self.chunk_tokens + self.lookahead:
            chunks.append(self._emit(self._emitted + self.chunk_tokens))
        return chunks

    def flush(self) -> list[np.ndarray]:
        """The audio of every code not yet handed out; the decoder is then ready for a new stream."""
        chunks = [self._emit(self._received)] if self._received > self._emitted else []
        self._reset()
        return chunks

    def _emit(self, end: int) -> np.ndarray:
        hop = self.codec.hop_length
        start = max(0, self._emitted - self.left_context)
        stop = min(self._received, end + self.lookahead)
        window = self._tokens[start - self._first : stop - self._first]
        with torch.inference_mode():
            audio = self.codec._decode_tensor(torch.from_numpy(window)[None, None])[0]
        begin, finish = (self._emitted - start) * hop, (end - start) * hop
        chunk = audio[begin:finish].copy()
        if self._tail is not None:
            chunk[:hop] = self._tail * (1 - self._fade) + chunk[:hop] * self._fade
        self._tail = audio[finish : finish + hop] if self._fade is not None and stop > end else None
        self._emitted = end
        keep_from = max(0, end - self.left_context)
        self._tokens = self._tokens[keep_from - self._first :]
        self._first = keep_from
        return chunk
