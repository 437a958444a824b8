"""The Llasa language model: vocabulary layout, prompts and training rows, model presets and
loading, and the batched speech-token decoder."""

from llasa.lm.model import CONTEXT_LENGTH, PRESETS, build_model, check_vocabulary, llama_config, load, save
from llasa.lm.prompt import memmap_row, prompt_ids, render_prompt, training_example
from llasa.lm.sampling import SamplingParams, SpeechDecoder, generate_codes
from llasa.lm.vocab import SpeechVocab, build_tokenizer, byte_level_tokenizer

__all__ = [
    "CONTEXT_LENGTH",
    "PRESETS",
    "SamplingParams",
    "SpeechDecoder",
    "SpeechVocab",
    "build_model",
    "build_tokenizer",
    "byte_level_tokenizer",
    "check_vocabulary",
    "generate_codes",
    "llama_config",
    "load",
    "memmap_row",
    "prompt_ids",
    "render_prompt",
    "save",
    "training_example",
]
