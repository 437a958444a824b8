"""Analysis-by-synthesis encoding: tune the codes so that the codec's own decoder reproduces the input.

An encoder gives its codes in one forward pass, and a small one guesses poorly: with the
built-in codec, decoding the encoder's *unquantized* output is no clearer than decoding its
codes, so the loss lies in the guess itself, not in the rounding. Speech codecs of the CELP family have
always encoded by synthesis instead: try codes through the decoder and keep those whose output is
closest to the input. Here the search is by gradient: the quantizer's inputs (one value per FSQ
dimension per frame, after `project_in`) start at the encoder's and are tuned by Adam on the
multi-scale mel distance between the decoder's output and the input (plus, with a
``cepstral_weight``, a cepstral distance: the spectral envelope a recogniser reads, see
`CepstralDistance`), rounding straight-through as in training, the model frozen. Each item keeps
the codes of its best step, so the result is never further from the input (in that distance)
than the encoder's own codes.

The decoder is untouched, so codes an LM samples decode exactly as before; only the codes
given *to* the decoder for a recording change. No library does this for X-codec2 (it is a
loop of a few lines around transformers' own quantizer and decoder), hence written here.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from llasa.codec.losses import CepstralDistance, MultiScaleMelLoss

DEFAULT_LR = 0.05


class SynthesisDistance(nn.Module):
    """What refinement brings down: per-item multi-scale mel distance + ``cepstral_weight`` x
    cepstral distance, of (B, N) waveforms to a fixed ``target`` (B, N)."""

    def __init__(self, sample_rate: int, target: torch.Tensor, cepstral_weight: float):
        super().__init__()
        self.mel = MultiScaleMelLoss(sample_rate).to(target.device)
        self.mel_target = self.mel.target_mels(target)  # once: the target is the same at every step
        self.cepstral_weight = cepstral_weight
        if cepstral_weight:
            self.cepstral = CepstralDistance(sample_rate).to(target.device)
            self.cepstral_target = self.cepstral.target_features(target)

    def forward(self, predicted: torch.Tensor) -> torch.Tensor:
        distance = self.mel.against(predicted, self.mel_target, per_item=True)
        if self.cepstral_weight:
            distance = distance + self.cepstral_weight * self.cepstral.against(predicted, self.cepstral_target, per_item=True)
        return distance


def quantizer_inputs(model: nn.Module, encode) -> torch.Tensor:
    """Run ``encode()`` (a call of ``model.encode``) -> what its quantizer saw, after ``project_in``
    (B, T, dims). A hook rather than a copy of each encoder's forward, so it holds for every
    X-codec2 variant (waveform + w2v-BERT, or log-mel)."""
    seen = []
    hook = model.quantizer.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        encode()
    finally:
        hook.remove()
    return model.quantizer.project_in(seen[0])


def _decode(model: nn.Module, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FSQ inputs (B, T, dims) -> (audio (B, 1, 320 T), codes (B, T)), with straight-through rounding.

    The same path as `Xcodec2Quantizer.forward` (which bounds twice, as the original checkpoint
    does) followed by `decode`, so that step 0 reproduces the encoder's codes and audio exactly.
    """
    quantizer = model.quantizer
    scaled, codes = quantizer.quantizer(quantizer.quantizer.bound(values))
    audio = model.acoustic_decoder(quantizer.project_out(scaled.to(values.dtype)))
    return audio, codes


def refine_codes(
    model: nn.Module, waves: torch.Tensor, start: torch.Tensor, *, steps: int, lr: float = DEFAULT_LR,
    cepstral_weight: float = 0.0, progress: bool = False,
) -> torch.Tensor:  # fmt: skip
    """Tune FSQ inputs ``start`` (B, T, dims) for ``steps`` Adam steps -> codes (B, 1, T).

    ``waves`` (B, 1, 320 T) is what the decoder should reproduce (the padded input); items are
    independent (each loss is its own, summed), so a batch gives the codes of its items alone.
    ``cepstral_weight`` adds that much of the cepstral distance to the mel distance.
    """
    if steps < 0:
        raise ValueError(f"refine_steps must be 0 or more, got {steps}")
    if lr <= 0:
        raise ValueError(f"refine_lr must be positive, got {lr}")
    if cepstral_weight < 0:
        raise ValueError(f"refine_cepstral must be 0 or more, got {cepstral_weight}")
    target = waves[:, 0].float()
    distance = SynthesisDistance(model.config.sampling_rate, target, cepstral_weight)
    values = start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([values], lr=lr)
    best_loss = torch.full((len(waves),), float("inf"), device=waves.device)
    best_codes = None
    with torch.enable_grad(), tqdm(total=steps, desc="refine codes", unit="step", leave=False, disable=not progress) as bar:
        for step in range(steps + 1):
            audio, codes = _decode(model, values)
            per_item = distance(audio[:, 0, : target.shape[-1]].float())
            better = per_item.detach() < best_loss
            best_loss = torch.where(better, per_item.detach(), best_loss)
            best_codes = codes.detach() if best_codes is None else torch.where(better[:, None], codes, best_codes)
            if step == steps:  # the last step only scores
                break
            (values.grad,) = torch.autograd.grad(per_item.sum(), [values])  # the model's own grads untouched
            optimizer.step()
            bar.update()
    return best_codes.long()[:, None]
