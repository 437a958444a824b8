"""The Llasa vocabulary: a Llama-3 tokenizer + 8 control tokens + one token per codec code.

Layout (spec/LLASA.md §2.1): the base tokenizer's ids, then the 8 control tokens in the
official order, then ``<|s_k|>`` for k = 0..codebook_size-1. All are *ordinary* added tokens
(``add_tokens``, not ``add_special_tokens``), exactly as the official training script adds
them, so ``skip_special_tokens`` never removes them and ids match the released checkpoints.

Two base tokenizers are supported:

* any Llama-3 tokenizer directory or hub id (official checkpoints: 128256 base ids, so the
  control tokens are 128256..128263, ``<|s_0|>`` is 128264 and the vocabulary 193800);
* :func:`byte_level_tokenizer`, built here with ``tokenizers`` for small models trained from
  scratch: 256 byte tokens + the Llama-3 chat special tokens, rendered through the same
  Llama-3.2 chat template, so prompts have the same shape at every scale.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

TEXT_GENERATION_START = "<|TEXT_GENERATION_START|>"
TEXT_GENERATION_END = "<|TEXT_GENERATION_END|>"
TEXT_UNDERSTANDING_START = "<|TEXT_UNDERSTANDING_START|>"
TEXT_UNDERSTANDING_END = "<|TEXT_UNDERSTANDING_END|>"
SPEECH_GENERATION_START = "<|SPEECH_GENERATION_START|>"
SPEECH_GENERATION_END = "<|SPEECH_GENERATION_END|>"
SPEECH_UNDERSTANDING_START = "<|SPEECH_UNDERSTANDING_START|>"
SPEECH_UNDERSTANDING_END = "<|SPEECH_UNDERSTANDING_END|>"

# the official order (LLaSA_training train_tts.py); the ids follow from it
CONTROL_TOKENS = (
    TEXT_GENERATION_START,
    TEXT_GENERATION_END,
    TEXT_UNDERSTANDING_START,
    TEXT_UNDERSTANDING_END,
    SPEECH_GENERATION_START,
    SPEECH_GENERATION_END,
    SPEECH_UNDERSTANDING_START,
    SPEECH_UNDERSTANDING_END,
)

# Llama-3 chat special tokens the template needs; eot doubles as eos and pad (spec §2.1)
BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"

def speech_token(code: int) -> str:
    return f"<|s_{code}|>"


# The chat template of meta-llama/Llama-3.2-1B-Instruct, verbatim: Llasa-1B/3B inherit it, and
# the byte-level tokenizer uses it too so small models see prompts of the official shape.
LLAMA32_CHAT_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""


@dataclass(frozen=True)
class SpeechVocab:
    """Where the speech tokens and control tokens sit in a Llasa tokenizer.

    Read from the tokenizer itself (never from constants), so official checkpoints
    (offset 128264, 65536 codes) and small models (byte tokenizer, small codebooks) share code.
    """

    speech_offset: int
    codebook_size: int
    tus_id: int  # TEXT_UNDERSTANDING_START
    tue_id: int  # TEXT_UNDERSTANDING_END
    sgs_id: int  # SPEECH_GENERATION_START
    sge_id: int  # SPEECH_GENERATION_END
    pad_id: int  # = eos (<|eot_id|>), as the official training sets it

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> "SpeechVocab":
        ids = {}
        for token in (TEXT_UNDERSTANDING_START, TEXT_UNDERSTANDING_END, SPEECH_GENERATION_START, SPEECH_GENERATION_END):
            ids[token] = _token_id(tokenizer, token)
        offset = _token_id(tokenizer, speech_token(0))
        codebook_size = len(tokenizer) - offset
        last = tokenizer.convert_ids_to_tokens(len(tokenizer) - 1)
        if last != speech_token(codebook_size - 1):
            raise ValueError(
                f"tokenizer is not a Llasa tokenizer: expected the speech tokens <|s_0|>..<|s_{codebook_size - 1}|> "
                f"at ids {offset}..{len(tokenizer) - 1}, but the last token is {last!r}"
            )
        if tokenizer.eos_token_id is None:
            raise ValueError("tokenizer has no eos token; Llasa pads with eos (<|eot_id|>)")
        return cls(
            speech_offset=offset,
            codebook_size=codebook_size,
            tus_id=ids[TEXT_UNDERSTANDING_START],
            tue_id=ids[TEXT_UNDERSTANDING_END],
            sgs_id=ids[SPEECH_GENERATION_START],
            sge_id=ids[SPEECH_GENERATION_END],
            pad_id=tokenizer.eos_token_id,
        )

    @property
    def vocab_size(self) -> int:
        return self.speech_offset + self.codebook_size

    def is_speech(self, token_id: int) -> bool:
        return self.speech_offset <= token_id < self.vocab_size


def has_token(tokenizer: PreTrainedTokenizerBase, token: str) -> bool:
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and tokenizer.convert_ids_to_tokens(token_id) == token


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    if not has_token(tokenizer, token):
        raise ValueError(f"tokenizer is not a Llasa tokenizer: it has no {token} token")
    return tokenizer.convert_tokens_to_ids(token)


def add_speech_tokens(tokenizer: PreTrainedTokenizerBase, codebook_size: int) -> PreTrainedTokenizerBase:
    """Extend a base (Llama-3 style) tokenizer in place with the control and speech tokens."""
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be positive, got {codebook_size}")
    present = [t for t in CONTROL_TOKENS + (speech_token(0),) if has_token(tokenizer, t)]
    if present:
        raise ValueError(f"tokenizer already has Llasa tokens ({present[0]}, ...); load it as is instead")
    tokenizer.add_tokens(list(CONTROL_TOKENS))
    tokenizer.add_tokens([speech_token(k) for k in range(codebook_size)])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A 261-token base tokenizer (256 bytes + 5 Llama-3 chat tokens) with the Llama-3.2 template.

    Why not a Llama-3 BPE: its 128k text rows would dominate a small model's output layer and
    embedding. Bytes cover every language and need no download.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    # no merges: every byte is one token (text is short relative to speech: 50 tokens/s)
    core = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    specials = [BEGIN_OF_TEXT, END_OF_TEXT, START_HEADER, END_HEADER, EOT]
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BEGIN_OF_TEXT,
        eos_token=EOT,
        pad_token=EOT,
        chat_template=LLAMA32_CHAT_TEMPLATE,
        model_max_length=2048,
    )


def build_tokenizer(base: str | PreTrainedTokenizerBase | None, codebook_size: int) -> PreTrainedTokenizerBase:
    """The Llasa tokenizer for a codebook: ``base`` is a Llama-3 tokenizer (path, hub id or
    object) as in the official recipe, or None for the self-contained byte-level tokenizer."""
    if base is None:
        tokenizer = byte_level_tokenizer()
    elif isinstance(base, PreTrainedTokenizerBase):
        tokenizer = base
    else:
        tokenizer = AutoTokenizer.from_pretrained(base)
    if not tokenizer.chat_template:
        raise ValueError("base tokenizer has no chat template; Llasa prompts are rendered through the Llama-3 template")
    return add_speech_tokens(tokenizer, codebook_size)


def codes_from_ids(ids, vocab: SpeechVocab) -> list[int]:
    """Speech codes in a token-id sequence, in order; other ids (control, text) are skipped."""
    return [int(i) - vocab.speech_offset for i in ids if vocab.is_speech(int(i))]
