"""An X-codec2 whose encoder reads log-mel frames instead of the waveform: cheap to train on CPU.

Why this variant exists (measured here, 2 cores shared with other jobs, torch 2.13 CPU, one
reconstruction step of `llasa.train.codec` -- 7-scale mel loss, AdamW -- on 16 clips x 1 s in
bf16, best of 7): the small `Xcodec2Model` preset (decoder 256 wide x 4 layers, waveform
encoder 8 wide, w2v-BERT 64 wide x 2 layers) took 1.67 s, this model with the same decoder and
FSQ 0.20 s (7.0 M parameters either way). The waveform model spends its step in the BigCodec
encoder, whose anti-aliased SnakeBeta convolutions run at 16 kHz, plus the numpy w2v-BERT
front-end; a log-mel front-end at 50 Hz (hop 320) and three of X-codec2's own ResNet blocks give
the quantizer frames at the codec's rate for an eighth of the cost, so an hour of CPU buys
eight times the updates.

Everything after the encoder is transformers' X-codec2: `Xcodec2Quantizer` (FSQ, fp32), the
Vocos/transformer `Xcodec2Decoder` and its iSTFT head, under the same module names as in
`Xcodec2Model` (`quantizer.*`, `acoustic_decoder.*`). The token interface is identical: codes at
50 Hz in [0, prod(quantization_levels)), `decode(audio_codes)` -> 320 * T samples.

The variant is an `Xcodec2Config` with `encoder_type: "mel"` (saved in config.json) plus
`mel_bins` and `mel_encoder_layers`; `build_codec_model(config)` picks the class.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Xcodec2Config, Xcodec2Model
from transformers import initialization as init
from transformers.audio_utils import mel_filter_bank
from transformers.models.xcodec2.modeling_xcodec2 import (
    Xcodec2Decoder,
    Xcodec2EncoderOutput,
    Xcodec2Output,
    Xcodec2PreTrainedModel,
    Xcodec2Quantizer,
    Xcodec2ResNetBlock,
)
from transformers.utils import can_return_tuple

MEL_ENCODER = "mel"
MEL_DEFAULTS = {"mel_bins": 80, "mel_encoder_layers": 3}


class LogMelSpectrogram(nn.Module):
    """Waveform (B, N) or (B, 1, N) -> log10 mel (B, n_mels, frames), always in fp32.

    `same_padding` pads (n_fft - hop) / 2 zeros on each side instead of centring, so that an
    input of L samples gives exactly L // hop frames -- the codec's frame count.
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        n_mels: int,
        win_length: int | None = None,
        same_padding: bool = False,
    ):
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.win_length = win_length or n_fft
        self.same_padding = same_padding
        filters, window = self.compute_buffers()
        self.filters = nn.Buffer(filters, persistent=False)
        self.window = nn.Buffer(window, persistent=False)

    def compute_buffers(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        filters = mel_filter_bank(
            num_frequency_bins=self.n_fft // 2 + 1,
            num_mel_filters=self.n_mels,
            min_frequency=0.0,
            max_frequency=self.sample_rate / 2,
            sampling_rate=self.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        filters = torch.tensor(filters.T, dtype=torch.float32, device=device)  # (n_mels, freq)
        return filters, torch.hann_window(self.win_length, device=device)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        # torch.stft has no bf16 kernel and log-mel differences are precision-sensitive
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            waveform = waveform.float().reshape(-1, waveform.shape[-1])
            if self.same_padding:
                pad = (self.n_fft - self.hop_length) // 2
                waveform = nn.functional.pad(waveform, (pad, pad))
            spectrum = torch.stft(
                waveform,
                self.n_fft,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window=self.window,
                center=not self.same_padding,
                pad_mode="constant",
                return_complex=True,
            ).abs()
            return torch.matmul(self.filters, spectrum).clamp(min=1e-5).log10()


class Xcodec2MelEncoder(nn.Module):
    """(B, 1, L) waveform -> (B, L // hop, hidden_size): log-mel, a conv, X-codec2 ResNet blocks."""

    def __init__(self, config: Xcodec2Config):
        super().__init__()
        self.features = LogMelSpectrogram(
            sample_rate=config.sampling_rate,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.mel_bins,
            same_padding=True,
        )
        self.embed = nn.Conv1d(config.mel_bins, config.hidden_size, kernel_size=7, padding=3)
        self.blocks = nn.ModuleList(Xcodec2ResNetBlock(config) for _ in range(config.mel_encoder_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=1e-6)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        hidden_states = self.embed(self.features(input_values)).transpose(1, 2)
        for block in self.blocks:
            hidden_states = block(hidden_states)
        return self.norm(hidden_states)


class Xcodec2MelModel(Xcodec2PreTrainedModel):
    """X-codec2 with a log-mel encoder; same encode/decode surface and outputs as `Xcodec2Model`.

    `input_features` (w2v-BERT features) is accepted and ignored, so callers written for
    `Xcodec2Model` work unchanged; they may skip computing it (`uses_semantic_features`).
    """

    uses_semantic_features = False

    def __init__(self, config: Xcodec2Config):
        for field, default in MEL_DEFAULTS.items():
            if not hasattr(config, field):
                setattr(config, field, default)
        config.encoder_type = MEL_ENCODER
        super().__init__(config)
        self.hop_length = config.hop_length
        self.mel_encoder = Xcodec2MelEncoder(config)
        # mirrors Xcodec2Model.fc_encoder so the quantizer sees quantization_dim features
        self.fc_encoder = nn.Linear(config.hidden_size, config.quantization_dim)
        self.quantizer = Xcodec2Quantizer(config)
        self.acoustic_decoder = Xcodec2Decoder(config)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LogMelSpectrogram):
            filters, window = module.compute_buffers(device=module.filters.device)
            init.copy_(module.filters, filters)
            init.copy_(module.window, window)

    @can_return_tuple
    def encode(
        self,
        input_values: torch.Tensor,
        input_features: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        output_latents: bool = False,
        **kwargs,
    ) -> Xcodec2EncoderOutput:
        """input_values (B, 1, L) with L a multiple of the hop -> codes (B, 1, L // hop)."""
        hidden_states = self.fc_encoder(self.mel_encoder(input_values))
        latents, audio_codes = self.quantizer(hidden_states)
        audio_codes = audio_codes.transpose(1, 2)
        audio_codes_mask = None
        if padding_mask is not None:
            token_length = padding_mask.sum(dim=-1, keepdim=True) // self.hop_length
            index = torch.arange(audio_codes.shape[-1], device=padding_mask.device).view(1, -1)
            audio_codes_mask = (index < token_length).to(padding_mask.dtype)
        return Xcodec2EncoderOutput(
            audio_codes=audio_codes,
            latents=latents.transpose(1, 2) if output_latents else None,
            audio_codes_mask=audio_codes_mask,
        )

    decode = Xcodec2Model.decode

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor,
        input_features: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        output_latents: bool = False,
        **kwargs,
    ) -> Xcodec2Output:
        encoded = self.encode(input_values, padding_mask=padding_mask, output_latents=True, return_dict=True)
        audio_values = self.decode(latents=encoded.latents, return_dict=True).audio_values
        return Xcodec2Output(
            audio_values=audio_values[..., : input_values.shape[-1]],
            audio_codes=encoded.audio_codes,
            latents=encoded.latents if output_latents else None,
            audio_codes_mask=encoded.audio_codes_mask,
        )


def is_mel_config(config: Xcodec2Config) -> bool:
    return getattr(config, "encoder_type", None) == MEL_ENCODER


def build_codec_model(config: Xcodec2Config) -> Xcodec2Model | Xcodec2MelModel:
    """The model class a config describes: `Xcodec2MelModel` for `encoder_type: mel`, else Xcodec2Model."""
    return Xcodec2MelModel(config) if is_mel_config(config) else Xcodec2Model(config)
