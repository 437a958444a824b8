"""X-codec2 speech codec on transformers' `Xcodec2Model`: presets, checkpoint loading in both
layouts, the w2v-BERT front-end without torchaudio, batched and streaming encode/decode, and
encoding by synthesis (`Codec.encode(..., refine_steps=N)`, `llasa.codec.refine`)."""

from llasa.codec.codec import Codec
from llasa.codec.configs import PRESETS, get_config
from llasa.codec.loading import CheckpointError

__all__ = ["Codec", "CheckpointError", "PRESETS", "get_config"]
