"""Our trainer takes sentence-transformers' steps when the models are the same.

`bench/bench_student_train.py` compares the quality the two reach; this test pins down
why they may differ. With sentence-transformers' model (a single score logit over the
pooled output) in our trainer, its weights copied in, dropout off and the same pair
batches, `relkd student train` and the bench's `CrossEncoder` + `MarginMSELoss` loop end
with the same weights. Any difference in quality then comes from our head (expected
grade + free score logit) and its initialisation, not from the loop, the batching or
the tokenisation.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from contracts import schema
from contracts.artifacts import CROSS_ENCODER_DIR
from training.student import train as student_train
from training.student.config import LossWeights, StudentTrainConfig
from training.student.models import cross_encoder

# The comparison's sentence-transformers side is the bench's own loop.
BENCH_DIR = Path(__file__).parents[3] / "bench"


def _no_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def test_margin_mse_steps_match_sentence_transformers(
    tiny_config: StudentTrainConfig, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    bench = importlib.import_module("bench_student_train")
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
        examples, batches = bench.pair_batches(config)
        st = bench.sentence_transformers_model(config)
        st_weights = {k: v.clone() for k, v in st[0].model.state_dict().items()}
        _no_dropout(st)
        bench.train_sentence_transformers(st, config, batches, examples)

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
