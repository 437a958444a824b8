"""The two discriminators of the X-codec2 recipe (spec/LLASA.md §4.7), written out by hand.

No installed library provides GAN-vocoder discriminators (vocos, descript-audio-codec and
espnet are not available here), so these follow HiFi-GAN's multi-period discriminator and the
multi-resolution STFT discriminator of UnivNet/Vocos. Every discriminator returns
`(logits, features)`: one logit map per sub-discriminator and, for feature matching, the
activations of each of its layers. Widths are arguments: the official sizes (MPD 16 -> 512,
spec-D 32 -> 512 over 8 resolutions) are far too costly for a CPU run, where narrower ones
still give a useful adversarial signal.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

DiscriminatorOutput = tuple[list[torch.Tensor], list[list[torch.Tensor]]]
LEAKY_SLOPE = 0.1


def _conv_stack(convs: nn.ModuleList, post: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Leaky-ReLU conv layers then the output conv: (flattened logits, every layer's features
    for feature matching), the shared body of both discriminator kinds."""
    features = []
    for conv in convs:
        hidden = nn.functional.leaky_relu(conv(hidden), LEAKY_SLOPE)
        features.append(hidden)
    logits = post(hidden)
    features.append(logits)
    return logits.flatten(1), features


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN sub-discriminator: the waveform folded into (N / period, period) columns."""

    def __init__(
        self,
        period: int,
        *,
        channels: int = 16,
        channel_multiplier: int = 4,
        max_channels: int = 512,
        num_layers: int = 4,
        kernel_size: int = 5,
        stride: int = 3,
    ):
        super().__init__()
        self.period = period
        widths = [1] + [min(channels * channel_multiplier**i, max_channels) for i in range(num_layers)]
        padding = (kernel_size // 2, 0)
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(c_in, c_out, (kernel_size, 1), (stride, 1), padding=padding))
            for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.convs.append(weight_norm(nn.Conv2d(widths[-1], widths[-1], (kernel_size, 1), padding=padding)))
        self.post = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch, _, length = waveform.shape
        if length % self.period:
            waveform = nn.functional.pad(waveform, (0, self.period - length % self.period), mode="reflect")
        hidden = waveform.view(batch, 1, -1, self.period)
        return _conv_stack(self.convs, self.post, hidden)


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), **widths):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, **widths) for p in periods)

    def forward(self, waveform: torch.Tensor) -> DiscriminatorOutput:
        outputs = [d(waveform) for d in self.discriminators]
        return [logits for logits, _ in outputs], [features for _, features in outputs]


class SpecDiscriminator(nn.Module):
    """2-D convolutions over one log-magnitude STFT (time x frequency), downsampling frequency."""

    def __init__(
        self,
        n_fft: int,
        hop_length: int,
        *,
        channels: int = 32,
        max_channels: int = 512,
        kernel_sizes: Sequence[int] = (5, 3),
        downsample: Sequence[int] = (2, 2, 2),
    ):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.window = nn.Buffer(torch.hann_window(n_fft), persistent=False)
        first, last = kernel_sizes
        self.convs = nn.ModuleList([weight_norm(nn.Conv2d(1, channels, first, padding=first // 2))])
        width = channels
        for factor in downsample:
            wider = min(width * 2, max_channels)
            self.convs.append(
                weight_norm(nn.Conv2d(width, wider, first, stride=(1, factor), padding=first // 2))
            )
            width = wider
        self.convs.append(weight_norm(nn.Conv2d(width, width, last, padding=last // 2)))
        self.post = weight_norm(nn.Conv2d(width, 1, last, padding=last // 2))

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.autocast(device_type=waveform.device.type, enabled=False):  # no bf16 STFT
            spectrum = torch.stft(
                waveform.float().flatten(0, 1),
                self.n_fft,
                hop_length=self.hop_length,
                window=self.window,
                return_complex=True,
            )
            # log compresses the dynamic range so quiet bands are judged too
            hidden = torch.log(spectrum.abs().clamp(min=1e-5)).transpose(1, 2).unsqueeze(1)
        return _conv_stack(self.convs, self.post, hidden)


class MultiResolutionSpecDiscriminator(nn.Module):
    def __init__(
        self,
        fft_sizes: Sequence[int] = (78, 126, 206, 334, 542, 876, 1418, 2296),
        hop_sizes: Sequence[int] = (39, 63, 103, 167, 271, 438, 709, 1148),
        **widths,
    ):
        super().__init__()
        if len(fft_sizes) != len(hop_sizes):
            raise ValueError(f"{len(fft_sizes)} STFT sizes but {len(hop_sizes)} hop sizes; give one hop per size")
        self.discriminators = nn.ModuleList(
            SpecDiscriminator(n_fft, hop, **widths) for n_fft, hop in zip(fft_sizes, hop_sizes)
        )

    def forward(self, waveform: torch.Tensor) -> DiscriminatorOutput:
        outputs = [d(waveform) for d in self.discriminators]
        return [logits for logits, _ in outputs], [features for _, features in outputs]
