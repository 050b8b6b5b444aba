"""Model identity: which training run produced a score or a label.

A :class:`ModelRef` is the *training* identity (the ``name`` and ``version`` the trainer
wrote into ``student.json`` / ``teacher.json``), the same whichever backend serves the
model, so a score or label can always be traced back to its training run. Where a model
is deployed (a Triton model name and version, an export's catalog) is the *serving*
revision, carried separately (``relevance.v1.ServingRevision``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from relevance.v1 import common_pb2


class ModelRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, description="Model name given at training time.")
    version: str = Field(min_length=1, description="Version the trainer assigned to the run.")

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"

    def to_proto(self) -> common_pb2.ModelRef:
        return common_pb2.ModelRef(name=self.name, version=self.version)

    @classmethod
    def from_proto(cls, message: common_pb2.ModelRef) -> ModelRef:
        return cls(name=message.name, version=message.version)
