"""The batched speech decoder: cache correctness, row selection, sampling controls, stopping."""

from copy import deepcopy

import numpy as np
import pytest
import torch

import llasa.hardware
from llasa.lm.model import build_model, prefill_copy
from llasa.lm.prompt import prompt_ids
from llasa.lm.sampling import Sampler, SamplingParams, SpeechDecoder, generate_codes, sample_from
from llasa.lm.vocab import SpeechVocab, build_tokenizer

GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def setup():
    tokenizer = build_tokenizer(None, 64)
    model = build_model("tiny", tokenizer, seed=0)
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    return model, vocab, prompt_ids(tokenizer, "Hello there.")


def restricted_argmax(model, vocab, ids):
    """Reference: a full forward pass without cache, argmax over speech tokens + SGE."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    allowed = torch.full_like(logits, float("-inf"))
    allowed[vocab.speech_offset :] = 0
    allowed[vocab.sge_id] = 0
    return int((logits + allowed).argmax())


def test_greedy_matches_uncached_forward(setup):
    model, vocab, prompt = setup
    codes = generate_codes(model, vocab, prompt, params=GREEDY, max_new_tokens=12)[0]
    assert len(codes) == 12
    ids = list(prompt)
    for code in codes:
        assert restricted_argmax(model, vocab, ids) == code + vocab.speech_offset
        ids.append(code + vocab.speech_offset)


def test_greedy_matches_generate_with_text_suppressed(setup):
    model, vocab, prompt = setup
    ours = generate_codes(model, vocab, prompt, params=GREEDY, max_new_tokens=20)[0]
    forbidden = [i for i in range(vocab.speech_offset) if i != vocab.sge_id]
    out = model.generate(
        torch.tensor([prompt]), do_sample=False, max_new_tokens=20, suppress_tokens=forbidden,
        eos_token_id=vocab.sge_id, pad_token_id=vocab.pad_id,
    )  # fmt: skip
    theirs = out[0, len(prompt) :].numpy() - vocab.speech_offset
    np.testing.assert_array_equal(ours, theirs)


def test_rows_share_one_prefill_and_decode_together(setup):
    model, vocab, prompt = setup
    dec = SpeechDecoder(model, vocab, prompt, n=5, params=GREEDY, max_new_tokens=8)
    assert dec.cache.layers[0].keys.shape[0] == 5
    assert dec.cache.get_seq_length() == len(prompt)
    codes = dec.run()
    # greedy rows from one prompt are identical
    assert all(np.array_equal(c, codes[0]) for c in codes)


def test_sampler_follows_the_distribution():
    probs = torch.tensor([[0.0, 0.5, 0.3, 0.2, 0.0]]).repeat(20_000, 1)
    choice, logp = sample_from(probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(choice, minlength=5).float() / len(choice)
    assert freq[0] == 0 and freq[4] == 0  # cut tokens are never drawn
    assert torch.allclose(freq, probs[0], atol=0.015)
    assert torch.allclose(logp, probs[0][choice].log())


def test_top_k_zero_is_off_and_undoes_a_models_top_k():
    assert SamplingParams(top_k=0).top_k is None
    assert SamplingParams(top_k=25).but(top_k=0) == SamplingParams()
    assert SamplingParams(top_k=25).but(top_k=None).top_k == 25  # a flag not given keeps it


def test_repetition_aware_sampling_redraws_repeats_from_the_untruncated_distribution():
    """Row 0's top-1 draw (code 0) fills 1 of its last 10 codes: with threshold 0.1 it is drawn
    again from the whole distribution (at the temperature); row 1 has not said it, so keeps it.
    With threshold 0.2 one occurrence is not enough."""
    rows = 20_000
    scores = torch.tensor([[2.0, 1.0, 0.0, 0.0]]).repeat(rows, 1)
    history = torch.tensor([[3, 2, 0], [3, 2, 1]]).repeat(rows // 2, 1)
    params = SamplingParams(temperature=0.5, top_k=1, ras_window=10, ras_threshold=0.1)
    choice, logp = Sampler(params)(scores, history, torch.Generator().manual_seed(0))
    assert (choice[1::2] == 0).all() and (logp[1::2] == 0).all()  # top-1: probability 1
    full = torch.softmax(scores[0] / 0.5, dim=-1)
    freq = torch.bincount(choice[0::2], minlength=4).float() / (rows // 2)
    assert torch.allclose(freq, full, atol=0.015)
    assert torch.allclose(logp[0::2], full[choice[0::2]].log())
    relaxed = Sampler(SamplingParams(temperature=0.5, top_k=1, ras_window=10, ras_threshold=0.2))
    assert (relaxed(scores, history, torch.Generator().manual_seed(0))[0] == 0).all()
    # greedy ignores it; window 0 is off
    assert (Sampler(SamplingParams(temperature=0, ras_window=10))(scores, history, None)[0] == 0).all()
    assert (Sampler(SamplingParams(temperature=0.5, top_k=1))(scores, history, torch.Generator())[0] == 0).all()


def test_repetition_aware_decoding_breaks_loops(setup):
    """top-k 1 on a random model loops over a few codes; with RAS (window 10, threshold 0.1) every
    code that the top-1 draw would repeat within the window is drawn again, and rows stay nested."""
    model, vocab, prompt = setup
    plain = generate_codes(model, vocab, prompt, params=SamplingParams(temperature=1.0, top_k=1), seed=0, max_new_tokens=40)[0]
    assert len(set(plain.tolist())) < len(plain)  # it repeats itself
    ras = SamplingParams(temperature=1.0, top_k=1, ras_window=10)
    rows = generate_codes(model, vocab, prompt, n=3, params=ras, seed=0, max_new_tokens=40)
    np.testing.assert_array_equal(rows[0], generate_codes(model, vocab, prompt, params=ras, seed=0, max_new_tokens=40)[0])
    codes = rows[0].tolist()
    redrawn = 0
    for t, code in enumerate(codes):
        top1 = restricted_argmax(model, vocab, list(prompt) + [c + vocab.speech_offset for c in codes[:t]]) - vocab.speech_offset
        if top1 in codes[max(0, t - 10) : t]:
            redrawn += 1
        else:
            assert code == top1  # a draw that repeats nothing is kept
    assert redrawn > 0 and codes != plain.tolist()


def sampled(setup, n: int, seed: int) -> list[np.ndarray]:
    """``n`` rows of 30 codes sampled at temperature 1 with ``seed``."""
    model, vocab, prompt = setup
    return generate_codes(model, vocab, prompt, n=n, params=SamplingParams(temperature=1.0), seed=seed, max_new_tokens=30)


def test_seeded_sampling_is_deterministic_and_rows_differ(setup):
    a, b, c = sampled(setup, 4, seed=7), sampled(setup, 4, seed=7), sampled(setup, 4, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert len({tuple(x) for x in a}) > 1


def test_rows_are_nested_across_n(setup):
    """Row r draws from its own stream: best-of-2's candidates are the first two of best-of-5."""
    five, two, one = sampled(setup, 5, seed=11), sampled(setup, 2, seed=11), sampled(setup, 1, seed=11)
    for small, big in zip(two, five):
        np.testing.assert_array_equal(small, big)
    np.testing.assert_array_equal(one[0], five[0])
    assert len({tuple(x) for x in five}) == 5


def test_never_emits_text_tokens(setup):
    model, vocab, prompt = setup
    for codes in generate_codes(model, vocab, prompt, n=4, params=SamplingParams(temperature=5.0), seed=0, max_new_tokens=50):
        assert ((codes >= 0) & (codes < vocab.codebook_size)).all()


def test_top_k_one_is_greedy(setup):
    model, vocab, prompt = setup
    greedy = generate_codes(model, vocab, prompt, params=GREEDY, max_new_tokens=15)[0]
    top1 = generate_codes(model, vocab, prompt, params=SamplingParams(temperature=1.0, top_k=1), seed=3, max_new_tokens=15)[0]
    np.testing.assert_array_equal(greedy, top1)


def test_repetition_penalty_discourages_repeats(setup):
    model, vocab, prompt = setup
    plain = generate_codes(model, vocab, prompt, params=GREEDY, max_new_tokens=40)[0]
    penalised = generate_codes(model, vocab, prompt, params=SamplingParams(temperature=0, repetition_penalty=50.0), max_new_tokens=40)[0]
    assert len(set(penalised.tolist())) > len(set(plain.tolist()))
    # a huge penalty forbids every repeat (the row may end early: SGE is never penalised)
    assert len(set(penalised.tolist())) == len(penalised)


def test_select_copies_rows_and_their_cache(setup):
    model, vocab, prompt = setup
    params = SamplingParams(temperature=1.0)
    dec = SpeechDecoder(model, vocab, prompt, n=3, params=params, seed=1, max_new_tokens=20)
    dec.step(5)
    before = dec.codes()
    dec.select([2, 2, 0])
    after = dec.codes()
    np.testing.assert_array_equal(after[0], before[2])
    np.testing.assert_array_equal(after[2], before[0])
    assert dec.cache.layers[0].keys.shape[0] == 3
    assert dec.cache.get_seq_length() == len(prompt) + 5  # every sampled token is fed at once
    # the two copies of row 2 draw from different streams from here on
    dec.step(10)
    assert not np.array_equal(dec.codes()[0], dec.codes()[1])

    # a selected row continues exactly like the reference (greedy from its prefix, uncached)
    greedy = SpeechDecoder(model, vocab, prompt, n=2, params=params, seed=1, max_new_tokens=20)
    greedy.step(4)
    greedy.select([1])
    greedy.params = GREEDY
    prefix = greedy.codes()[0].tolist()
    greedy.step(3)
    ids = list(prompt) + [c + vocab.speech_offset for c in prefix]
    for code in greedy.codes()[0][len(prefix) :]:
        assert restricted_argmax(model, vocab, ids) == code + vocab.speech_offset
        ids.append(int(code) + vocab.speech_offset)


def test_budget_and_context_limits(setup):
    model, vocab, prompt = setup
    dec = SpeechDecoder(model, vocab, prompt, n=2, params=GREEDY, max_new_tokens=6)
    codes = dec.run()
    assert [len(c) for c in codes] == [6, 6]
    assert [r.stop_reason for r in dec.rows] == ["length", "length"]
    assert dec.done and dec.step(3) == 0
    # the context caps the budget
    short = SpeechDecoder(model, vocab, prompt, params=GREEDY, context_length=len(prompt) + 4)
    assert short.max_new_tokens == 4
    with pytest.raises(ValueError, match="no room"):
        SpeechDecoder(model, vocab, prompt, context_length=len(prompt))


def test_rows_that_end_leave_the_batch(setup):
    model, vocab, prompt = setup
    dec = SpeechDecoder(model, vocab, prompt, n=3, params=GREEDY, max_new_tokens=30)
    # force row 1 to end now: its entry leaves the cache, the others go on
    dec.rows[1].finished, dec.rows[1].stop_reason = True, "end"
    dec._live = [0, 2]
    dec._take([0, 2])
    dec.step(2)
    assert dec.cache.layers[0].keys.shape[0] == 2
    assert [len(c) for c in dec.codes()] == [2, 0, 2]
    dec.select([1, 0])  # a finished row can be selected; it stays finished and out of the cache
    assert dec.rows[0].finished and not dec.rows[1].finished
    assert dec.cache.layers[0].keys.shape[0] == 1
    dec.run()
    assert [len(c) for c in dec.codes()] == [0, 30]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-1), "temperature"),
        (dict(top_p=0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(repetition_penalty=0), "repetition_penalty"),
        (dict(ras_window=-1), "ras_window"),
        (dict(ras_window=2.5), "ras_window"),
        (dict(ras_threshold=0), "ras_threshold"),
        (dict(ras_threshold=1.5), "ras_threshold"),
    ],
)
def test_bad_sampling_params(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_bad_n_and_select(setup):
    model, vocab, prompt = setup
    with pytest.raises(ValueError, match="n "):
        SpeechDecoder(model, vocab, prompt, n=0)
    dec = SpeechDecoder(model, vocab, prompt, n=2, max_new_tokens=3)
    with pytest.raises(IndexError, match="out of range"):
        dec.select([2])


def test_min_new_tokens_holds_back_the_end_token(monkeypatch):
    """A model that wants to stop at once still says at least min_new_tokens codes."""
    tokenizer = build_tokenizer(None, 16)
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    model = build_model("tiny", tokenizer, seed=0)
    logits = SpeechDecoder._logits

    def eager_to_end(self, hidden):
        scores = logits(self, hidden)
        scores[:, vocab.codebook_size] += 100.0  # the end token dominates every step
        return scores

    monkeypatch.setattr(SpeechDecoder, "_logits", eager_to_end)
    prompt = tokenizer("hello", add_special_tokens=False)["input_ids"] + [vocab.sgs_id]
    assert [len(c) for c in SpeechDecoder(model, vocab, prompt, n=3, seed=0).run()] == [0, 0, 0]
    held = SpeechDecoder(model, vocab, prompt, n=3, seed=0, min_new_tokens=7, max_new_tokens=20)
    assert [len(c) for c in held.run()] == [7, 7, 7] and all(r.stop_reason == "end" for r in held.rows)


def test_prefill_copy_only_where_bf16_is_emulated_and_the_copy_is_small(setup, monkeypatch):
    model, vocab, prompt = setup
    assert prefill_copy(model) is None  # fp32 already
    half = build_model("tiny", build_tokenizer(None, 64), seed=0).to(torch.bfloat16)
    monkeypatch.setattr(llasa.hardware, "fast_bf16", lambda device: True)
    assert prefill_copy(half) is None  # AMX / AVX512-BF16: bf16 is fast as it is
    monkeypatch.setattr(llasa.hardware, "fast_bf16", lambda device: False)
    wide = prefill_copy(half)
    assert wide is not None and wide.dtype == torch.float32 and half.dtype == torch.bfloat16
    for (name, a), (_, b) in zip(half.named_parameters(), wide.named_parameters()):
        assert torch.equal(a.float(), b), name
    assert prefill_copy(half, limit=1000) is None  # too big to keep twice


def test_fp32_prefill_then_bf16_decoding(setup):
    """The prompt runs through the fp32 copy; the decoding stays in bf16 (its cache is fp32, as
    a CPU attends), and the first step is as close to the fp32 model's as bf16 decoding allows."""
    model, vocab, prompt = setup
    wide = build_model("tiny", build_tokenizer(None, 64), seed=0).to(torch.bfloat16).float()  # bf16 weights, in fp32
    half = deepcopy(wide).to(torch.bfloat16)
    mixed = SpeechDecoder(half, vocab, prompt, params=GREEDY, max_new_tokens=12, prefill_model=wide)
    assert mixed.cache.layers[0].keys.dtype == torch.float32 and mixed._hidden.dtype == torch.bfloat16
    reference = SpeechDecoder(wide, vocab, prompt, params=GREEDY, max_new_tokens=12)
    np.testing.assert_allclose(mixed._hidden.float().numpy(), reference._hidden.numpy(), rtol=0.02, atol=0.02)
    codes = mixed.run()[0]
    assert len(codes) > 0 and ((codes >= 0) & (codes < vocab.codebook_size)).all()


def test_the_decoding_copy_decodes_as_the_model_and_follows_its_changes(setup, monkeypatch):
    """Decoding reads a copy of the model that shares its parameters, with packed matrices: the
    same greedy codes as the model itself; remade when a weight changes in place; beyond the size
    limit nothing is packed and the copy only attends differently."""
    from llasa.lm import sampling

    _, vocab, prompt = setup
    model = build_model("tiny", build_tokenizer(None, 64), seed=0)
    copied = sampling.decoding_copy(model, vocab)
    assert copied.speech is not None and sampling.decoding_copy(model, vocab) is copied  # made once
    assert copied.body.embed_tokens.weight is model.model.embed_tokens.weight  # shared, not copied
    assert model.config._attn_implementation == "sdpa"  # the model itself is left as it was

    def greedy_is_the_models_argmax():
        ids = list(prompt)
        for code in generate_codes(model, vocab, prompt, params=GREEDY, max_new_tokens=12)[0]:
            assert restricted_argmax(model, vocab, ids) == code + vocab.speech_offset
            ids.append(int(code) + vocab.speech_offset)

    attention, mlp = copied.body.layers[0].self_attn, copied.body.layers[0].mlp
    assert all(isinstance(m, sampling.FusedPart) for m in (attention.q_proj, attention.k_proj, mlp.up_proj))
    greedy_is_the_models_argmax()
    for weight in (model.model.layers[0].mlp.down_proj.weight, model.model.layers[1].self_attn.k_proj.weight):
        with torch.no_grad():
            weight.mul_(3.0)
        assert sampling.decoding_copy(model, vocab) is not copied
        copied = sampling.decoding_copy(model, vocab)
        greedy_is_the_models_argmax()
    monkeypatch.setattr(sampling, "PACKED_COPY_LIMIT", 1000)
    unpacked = sampling.decoding_copy(model, vocab)
    assert unpacked.speech is None
    assert unpacked.body.layers[0].mlp.down_proj.weight is model.model.layers[0].mlp.down_proj.weight
    greedy_is_the_models_argmax()


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize(
    "overrides",
    [{}, {"attention_bias": True, "mlp_bias": True,  # biased products are not fused: the separate layers concatenated
          "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}],  # as Llama-3.2
    ids=["plain", "bias-llama3-rope"],
)  # fmt: skip
def test_the_decoding_step_equals_the_models_own_forward(setup, rows, overrides):
    """The decoding copy's own step (the Llama layers called without transformers' forward)
    gives the hidden states the body's forward gives, step after step, cache included."""
    from llasa.lm import sampling

    _, vocab, prompt = setup
    model = build_model("tiny", build_tokenizer(None, 64), seed=0, **overrides)
    with torch.no_grad():
        for layer in model.model.layers if overrides else []:
            for linear in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.mlp.up_proj):
                linear.bias.normal_()
    copied = sampling.decoding_copy(model, vocab)
    assert copied.layers is not None
    dec = SpeechDecoder(model, vocab, prompt, n=rows, max_new_tokens=6, seed=0)
    twin = SpeechDecoder(model, vocab, prompt, n=rows, max_new_tokens=6, seed=0)
    with torch.inference_mode():
        for step in range(5):
            ids = torch.arange(rows)[:, None] * 7 + step + vocab.speech_offset
            ours = copied.forward(ids, dec.cache)
            theirs = copied.body(input_ids=ids, cache=twin.cache, use_cache=True).last_hidden_state[:, -1]
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert dec.cache.get_seq_length() == twin.cache.get_seq_length() == len(prompt) + 5


def test_a_cpu_attends_over_an_fp32_cache_for_a_bf16_model(setup):
    """On a CPU the cache of a bf16 model is held in fp32 (bf16 products there build a kernel for
    every new length); the steps still decode in bf16 and follow the model's own forward."""
    _, vocab, prompt = setup
    model = build_model("tiny", build_tokenizer(None, 64), seed=0).to(torch.bfloat16)
    dec = SpeechDecoder(model, vocab, prompt, n=2, params=GREEDY, max_new_tokens=6)
    assert dec.cache.layers[0].keys.dtype == torch.float32 and dec._hidden.dtype == torch.bfloat16
    ids = list(prompt)
    for _ in range(3):
        code = int(dec._logits(dec._hidden)[0].argmax())
        dec.step(1)
        ids.append(code + vocab.speech_offset)
        with torch.no_grad():
            full = model.model(torch.tensor([ids])).last_hidden_state[0, -1].float()
        torch.testing.assert_close(dec._hidden[0].float(), full, rtol=0.05, atol=0.05)


def test_a_model_of_other_layers_steps_through_its_own_forward(setup):
    """A body whose layers are not transformers' Llama classes gets no plan of its own."""
    from llasa.lm import sampling

    _, vocab, _ = setup
    model = build_model("tiny", build_tokenizer(None, 64), seed=0)

    class Layer(type(model.model.layers[0])):
        pass

    model.model.layers[0].__class__ = Layer
    assert sampling.decoding_copy(model, vocab).layers is None


def test_one_row_holds_the_prompt_in_its_own_buffer(setup):
    """One row needs no shared prompt: the cache is one tensor, and decodes as two rows do."""
    model, vocab, prompt = setup
    one = SpeechDecoder(model, vocab, prompt, n=1, params=GREEDY, max_new_tokens=10)
    two = SpeechDecoder(model, vocab, prompt, n=2, params=GREEDY, max_new_tokens=10)
    layer = one.cache.layers[0]
    assert isinstance(layer.keys, torch.Tensor) and layer.keys.shape[2] == len(prompt)
    np.testing.assert_array_equal(one.run()[0], two.run()[0])
    one = SpeechDecoder(model, vocab, prompt, n=1, params=GREEDY, max_new_tokens=10)
    one.step(3)
    one.select([0, 0])  # a row copied later takes the prompt with it
    np.testing.assert_array_equal(one.run()[1], two.codes()[0])


def test_fused_projections_equal_the_separate_ones():
    """q, k and v (or gate and up) as one product give each projection's own output, and a new
    input (even of equal values) is multiplied afresh."""
    from llasa.lm.sampling import FusedLinears, FusedPart

    torch.manual_seed(0)
    linears = [torch.nn.Linear(16, size, bias=False) for size in (16, 8, 8)]
    fused = FusedLinears(linears)
    parts = [FusedPart(fused, i) for i in range(3)]
    with torch.inference_mode():
        for x, order in ((torch.randn(3, 1, 16), (0, 1, 2)), (torch.randn(3, 1, 16), (2, 0, 1))):
            for i in order:  # any projection may be called first
                torch.testing.assert_close(parts[i](x), linears[i](x))


def test_the_cache_is_allocated_once_and_written_in_place(setup):
    model, vocab, prompt = setup
    dec = SpeechDecoder(model, vocab, prompt, n=2, params=GREEDY, max_new_tokens=10)
    layer = dec.cache.layers[0]
    storage = layer.keys.own.untyped_storage().data_ptr()
    assert layer.keys.prefix.shape[0] == 1  # the prompt's positions are held once for both rows
    dec.step(4)
    assert layer.keys.own.untyped_storage().data_ptr() == storage
    assert dec.cache.get_seq_length() == len(prompt) + 4 and layer.keys.shape == (2, layer.keys.own.shape[1], len(prompt) + 4,
                                                                              layer.keys.own.shape[3])  # fmt: skip
    dec.run()
    assert [len(c) for c in dec.codes()] == [10, 10]


def test_the_shared_prompt_attends_as_a_copied_one(setup):
    """Attention over a prompt held once equals attention over it copied into every row."""
    from llasa.lm.sampling import SharedPrefix, decode_attention

    torch.manual_seed(0)
    rows, heads, kv_heads, dim = 3, 6, 2, 8
    query = torch.randn(rows, heads, 1, dim)
    keys = SharedPrefix(torch.randn(1, kv_heads, 11, dim), torch.randn(rows, kv_heads, 4, dim))
    values = SharedPrefix(torch.randn(1, kv_heads, 11, dim), torch.randn(rows, kv_heads, 4, dim))
    shared, _ = decode_attention(None, query, keys, values, None)
    copied, _ = decode_attention(None, query, keys.whole(), values.whole(), None)
    torch.testing.assert_close(shared, copied)
    # and the copy equals plain attention, each query head reading its key/value head
    expected = torch.softmax(query @ keys.whole().repeat_interleave(3, 1).transpose(-1, -2) * dim**-0.5, -1)
    expected = (expected @ values.whole().repeat_interleave(3, 1)).transpose(1, 2)
    torch.testing.assert_close(copied, expected)


def test_an_end_seen_late_still_ends_the_row_where_it_was_said(setup, monkeypatch):
    """On accelerators the end token is looked for every few steps; the row's codes stop where
    it was said, and what was decoded after it is dropped."""
    from llasa.lm import sampling

    model, vocab, prompt = setup
    logits = SpeechDecoder._logits
    calls = []

    def end_at_third(self, hidden):
        scores = logits(self, hidden)
        calls.append(len(calls))
        if len(calls) == 3:
            scores[0, vocab.codebook_size] += 1000.0  # row 0 says the end token at its third step
        return scores

    monkeypatch.setattr(SpeechDecoder, "_logits", end_at_third)
    dec = SpeechDecoder(model, vocab, prompt, n=2, params=GREEDY, max_new_tokens=12)
    dec._check_every = sampling.STOP_CHECK_EVERY
    dec.run()
    assert [len(c) for c in dec.codes()] == [2, 12]
    assert [r.stop_reason for r in dec.rows] == ["end", "length"]


def test_decode_attention_equals_sdpa_for_one_position():
    from types import SimpleNamespace

    from llasa.lm.sampling import decode_attention

    torch.manual_seed(0)
    module = SimpleNamespace(num_key_value_groups=3, is_causal=True)
    cache = torch.randn(2, 2, 40, 16, dtype=torch.float64)
    keys, values = cache[:, :, :30], cache.flip(2)[:, :, :30]  # views, as the preallocated cache gives
    query = torch.randn(2, 1, 6, 16, dtype=torch.float64).transpose(1, 2)
    out, _ = decode_attention(module, query, keys, values, None, scaling=0.25)
    expected = torch.nn.functional.scaled_dot_product_attention(query, keys, values, scale=0.25, enable_gqa=True)
    torch.testing.assert_close(out, expected.transpose(1, 2))
    prompt = torch.randn(2, 6, 5, 16, dtype=torch.float64)  # several positions: sdpa itself, causal
    out, _ = decode_attention(module, prompt, keys[:, :, :5], values[:, :, :5], None, scaling=0.25)
    expected = torch.nn.functional.scaled_dot_product_attention(
        prompt, keys[:, :, :5], values[:, :, :5], scale=0.25, is_causal=True, enable_gqa=True
    )
    torch.testing.assert_close(out, expected.transpose(1, 2))
