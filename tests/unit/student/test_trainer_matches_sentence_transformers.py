"""Our trainer takes sentence-transformers' steps when the models are the same.

`bench/bench_student_train.py` compares the quality the two reach; this test pins down
why they may differ. With sentence-transformers' model (a single score logit over the
pooled output) in our trainer, its weights copied in, dropout off and the same pair
batches, `relkd student train` and a `CrossEncoder` + `MarginMSELoss` loop with the same
optimizer, schedule and clipping log the same loss at every step and end with the same
weights. Any difference in quality then comes from our head (expected grade + free score
logit) and its initialisation, not from the loop, the batching or the tokenisation.
"""

from __future__ import annotations

import csv

import pytest
import torch
from sentence_transformers.cross_encoder import CrossEncoder
from sentence_transformers.cross_encoder.losses import MarginMSELoss
from torch import nn
from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup

from contracts import schema
from contracts.artifacts import CROSS_ENCODER_DIR
from training.student import train as student_train
from training.student.config import LossWeights, StudentTrainConfig
from training.student.examples import QueryPairSampler, load_training_set
from training.student.models import cross_encoder
from training.student.train import METRICS_CSV


def _no_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def _sentence_transformers_losses(
    st: CrossEncoder, config: StudentTrainConfig, batches: list, examples: list
) -> list[float]:
    """bench_student_train's sentence-transformers loop; one loss per step."""
    loss_fn = MarginMSELoss(st)
    params = [p for p in st.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * config.max_steps), config.max_steps
    )
    st.train()
    losses = []
    for pairs in batches:
        hi = [examples[i] for i in pairs[:, 0]]
        lo = [examples[j] for j in pairs[:, 1]]
        labels = torch.tensor([a.score - b.score for a, b in zip(hi, lo, strict=True)])
        loss = loss_fn(
            [[e.query for e in hi], [e.product_text for e in hi], [e.product_text for e in lo]],
            labels,
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        losses.append(loss.item())
    return losses


def test_margin_mse_steps_match_sentence_transformers(
    tiny_config: StudentTrainConfig, monkeypatch: pytest.MonkeyPatch
):
    config = tiny_config.model_copy(
        update={
            "loss_weights": LossWeights(margin_mse=1.0, mse=0.0, kl=0.0, cot=0.0),
            "max_steps": 6,
            "eval_every": 6,
            "torch_threads": 1,
        }
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        examples = load_training_set(config).examples
        sampler = QueryPairSampler(
            examples,
            queries_per_batch=config.queries_per_batch,
            pairs_per_query=config.pairs_per_query,
            min_margin=config.min_margin,
            seed=config.seed,
        )
        batches = [sampler.batch(n) for n in range(config.max_steps)]

        torch.manual_seed(1)
        st = CrossEncoder(
            config.base_model,
            num_labels=1,
            max_length=config.max_length,
            config_kwargs={"num_hidden_layers": config.num_layers},
            device="cpu",
        )
        st_weights = {k: v.clone() for k, v in st[0].model.state_dict().items()}
        st[0].model.get_input_embeddings().requires_grad_(not config.freeze_embeddings)
        _no_dropout(st)
        st_losses = _sentence_transformers_losses(st, config, batches, examples)

        # Our trainer on sentence-transformers' model: its weights in, its one logit (our
        # free score logit's row) as the score, dropout off.
        build_model = student_train.build_model

        def build_st_model(cfg: StudentTrainConfig) -> cross_encoder.CrossEncoderStudent:
            model = build_model(cfg)
            ours = model.model.state_dict()
            for name, value in st_weights.items():
                if name.startswith("classifier"):
                    ours[name][schema.NUM_GRADES] = value[0]
                else:
                    ours[name].copy_(value)
            model.model.load_state_dict(ours)
            _no_dropout(model)
            return model

        def score_logit_only(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return logits[..., schema.NUM_GRADES].float(), logits[..., : schema.NUM_GRADES]

        monkeypatch.setattr(student_train, "build_model", build_st_model)
        monkeypatch.setattr(cross_encoder, "cross_encoder_head", score_logit_only)
        student_train.train(config)
    finally:
        torch.set_num_threads(threads)

    with (config.output_dir / METRICS_CSV).open() as f:
        ours_losses = [float(row["margin_mse"]) for row in csv.DictReader(f) if row["margin_mse"]]
    assert ours_losses == pytest.approx(st_losses, rel=1e-4)
    # The weights both loops end with, against how far the steps moved them. Not equal to
    # the last bit: the two encode a batch in different groupings (sentence-transformers:
    # positives, then negatives; ours: each unique example once), and Adam's first
    # steps turn the rounding of near-zero gradients into full-size updates.
    trained = AutoModelForSequenceClassification.from_pretrained(
        config.output_dir / CROSS_ENCODER_DIR
    ).state_dict()
    st_trained = st[0].model.state_dict()
    compared = 0
    for name, start in st_weights.items():
        row = name.startswith("classifier")
        ours = trained[name][schema.NUM_GRADES] if row else trained[name]
        theirs, start = (st_trained[name][0], start[0]) if row else (st_trained[name], start)
        moved = (theirs - start).norm()
        # Frozen, or no gradient at all (the key bias under softmax's shift invariance,
        # the score bias under Margin-MSE's).
        if moved < 1e-5:
            continue
        assert (ours - theirs).norm() < 0.1 * moved, name
        compared += 1
    trainable = [n for n, p in st[0].model.named_parameters() if p.requires_grad]
    assert compared >= len(trainable) - 2
