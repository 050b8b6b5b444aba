"""Layer truncation must leave the cross-encoder's [CLS] head an informative input."""

from __future__ import annotations

import torch
from transformers import AutoModel

from training.student.models import CrossEncoderStudent, TwoTowerStudent
from training.student.models.base import default_base_model

QUERIES = ["sofa covers", "oak end table", "brass pendant light", "blue wool rug"]
TITLES = [
    "grey stretch sofa slipcover",
    "small oak end table",
    "brass pendant light, 3 bulbs",
    "blue wool area rug 5x8",
]


@torch.inference_mode()
def test_truncated_minilm_cross_encoder_cls_state_depends_on_the_pair():
    # all-MiniLM-L6-v2's [CLS] is the same for every input until its last layer; a
    # head reading it after layers 1-2 only can learn nothing but the grade prior.
    model = CrossEncoderStudent.from_base(
        default_base_model(), num_layers=2, max_length=32, text_fields=["title"]
    ).eval()
    assert model.model.config.num_hidden_layers == 2
    pairs = model.tokenize(QUERIES, TITLES)
    cls = model.model(**pairs, output_hidden_states=True).hidden_states[-1][:, 0]
    assert cls.std(0).mean() > 0.05


@torch.inference_mode()
def test_truncation_keeps_the_first_layers_and_the_last(tiny_base_model: str):
    base = AutoModel.from_pretrained(tiny_base_model)
    last = base.encoder.layer[-1].state_dict()
    cross = CrossEncoderStudent.from_base(
        tiny_base_model, num_layers=1, max_length=16, text_fields=["title"]
    )
    tower = TwoTowerStudent.from_base(
        tiny_base_model, num_layers=1, max_length=16, text_fields=["title"]
    ).query_tower
    for encoder in (cross.model.base_model, tower):
        assert len(encoder.encoder.layer) == encoder.config.num_hidden_layers == 1
        kept = encoder.encoder.layer[0].state_dict()
        assert all(torch.equal(kept[name], value) for name, value in last.items())
