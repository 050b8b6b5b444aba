from relevance.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LabelPair(_message.Message):
    __slots__ = ("query", "product", "query_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    query: str
    product: _common_pb2.Product
    query_id: str
    def __init__(self, query: _Optional[str] = ..., product: _Optional[_Union[_common_pb2.Product, _Mapping]] = ..., query_id: _Optional[str] = ...) -> None: ...

class LabelRequest(_message.Message):
    __slots__ = ("pairs", "explain")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[LabelPair]
    explain: bool
    def __init__(self, pairs: _Optional[_Iterable[_Union[LabelPair, _Mapping]]] = ..., explain: _Optional[bool] = ...) -> None: ...

class PairLabel(_message.Message):
    __slots__ = ("query_id", "product_id", "grades", "expected_score", "rationale")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    GRADES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SCORE_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    product_id: str
    grades: _common_pb2.GradeDistribution
    expected_score: float
    rationale: _common_pb2.Rationale
    def __init__(self, query_id: _Optional[str] = ..., product_id: _Optional[str] = ..., grades: _Optional[_Union[_common_pb2.GradeDistribution, _Mapping]] = ..., expected_score: _Optional[float] = ..., rationale: _Optional[_Union[_common_pb2.Rationale, _Mapping]] = ...) -> None: ...

class LabelResponse(_message.Message):
    __slots__ = ("labels", "teacher")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[PairLabel]
    teacher: _common_pb2.ModelRef
    def __init__(self, labels: _Optional[_Iterable[_Union[PairLabel, _Mapping]]] = ..., teacher: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...
