"""Inference-time search over speech candidates, guided by verifiers (see :mod:`llasa.search.search`).

    from llasa.search import search, Searcher
    result = search(synth, "Hello there.", voice, strategy="best-of-n", n=8, verifiers="wer", seed=0)
    result.audio, result.chunks[0].chosen, result.spent.tokens
    searcher = Searcher("prm-sim+orm-wer", beam_width=2, expand=4, step_tokens=50)  # verifiers load once
    result = searcher(synth, text, voice, seed=0)
"""

from llasa.search.search import (
    STRATEGIES,
    BeamStep,
    Candidate,
    ChunkResult,
    SearchResult,
    Searcher,
    Spent,
    search,
)

__all__ = ["STRATEGIES", "BeamStep", "Candidate", "ChunkResult", "SearchResult", "Searcher", "Spent", "search"]
