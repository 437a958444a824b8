"""Corpora: manifests from common layouts, an offline synthetic corpus, and code shards."""

from llasa.data.manifest import ManifestError, check_items, load_corpus, read_jsonl, write_jsonl
from llasa.data.synth import synthesize_corpus
from llasa.data.tokenize import CodeShardDataset, tokenize_manifest

__all__ = ["CodeShardDataset", "ManifestError", "check_items", "load_corpus", "read_jsonl", "synthesize_corpus",
           "tokenize_manifest", "write_jsonl"]
