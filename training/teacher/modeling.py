"""Loading a backbone as a 4-grade classifier (or a causal LM), whatever its family.

Encoders (BERT-like) pool their [CLS] token. Decoder LLMs (Llama, Qwen, Mistral, ...)
are pooled by ``*ForSequenceClassification`` at the last token that is not padding,
which needs a pad token id in the config: most LLM tokenizers ship without one, so we
reuse ``unk`` (or ``eos``) rather than add a token and resize the embeddings.

Scoring pads on the right: Llama-style models number positions 0..n regardless of the
attention mask, so left padding would shift a pair's positions with the length of its
batch neighbours and make a label depend on batch composition. Only generation pads on
the left (``generate`` derives positions from the mask), see ``explain.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from contracts.schema import NUM_GRADES, NUM_MATCH, RATIONALE_FIELDS, Grade, Match

GRADE_LABELS = {int(g): g.name.lower() for g in Grade}
# Rationale heads: after the grade logits, one logit per (field, Match value), field-major.
RATIONALE_LABELS = {
    NUM_GRADES + NUM_MATCH * f + int(m): f"{field}={m.name.lower()}"
    for f, field in enumerate(RATIONALE_FIELDS)
    for m in Match
}


def is_decoder(backbone: str | Path) -> bool:
    """True for decoder-only LLM families (causal LM without a masked-LM head)."""
    model_type = AutoConfig.from_pretrained(str(backbone)).model_type
    return (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


def load_tokenizer(backbone: str | Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(backbone))
    if tokenizer.pad_token is None:
        fallback = tokenizer.unk_token or tokenizer.eos_token
        if fallback is None:
            raise ValueError(
                f"backbone {backbone}: tokenizer has no pad, unk or eos token to pad with"
            )
        tokenizer.pad_token = fallback
    tokenizer.padding_side = "right"
    return tokenizer


def load_classifier(
    backbone: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    dtype: torch.dtype | None = None,
    rationale_heads: bool = False,
) -> PreTrainedModel:
    """The backbone with a (fresh unless already trained) head of one logit per grade and,
    with ``rationale_heads``, one per (rationale field, Match value) after them: three
    auxiliary 3-way heads sharing the pooled representation with the grade head."""
    labels = {**GRADE_LABELS, **(RATIONALE_LABELS if rationale_heads else {})}
    model = AutoModelForSequenceClassification.from_pretrained(
        str(backbone),
        num_labels=len(labels),
        id2label=labels,
        label2id={name: index for index, name in labels.items()},
        dtype=dtype,
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def load_causal_lm(
    backbone: str | Path, tokenizer: PreTrainedTokenizerBase, dtype: torch.dtype | None = None
) -> PreTrainedModel:
    model = AutoModelForCausalLM.from_pretrained(str(backbone), dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
