"""Student distillation: cross-encoder and two-tower students trained from teacher labels.

Layout (sentence-transformers style, one concern per module):

* ``config``      - :class:`StudentTrainConfig`, read from YAML plus flag overrides;
* ``examples``    - training examples from a dataset directory (human judgments and
  teacher labels as one kind of soft target) and the query-grouped pair sampler;
* ``models``      - the interaction-based cross-encoder and the representation-based
  two-tower student;
* ``losses``      - Margin-MSE, pointwise MSE, grade KL and chain-of-thought heads, one
  module each, combined by configured weights;
* ``train``       - the training loop (`relkd student train`, the Kubernetes Job);
* ``checkpoint``  - loads a checkpoint (``contracts.artifacts``), and ``load_student``.
"""
