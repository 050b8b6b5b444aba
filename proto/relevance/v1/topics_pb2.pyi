from relevance.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CandidateBatch(_message.Message):
    __slots__ = ("meta", "query_id", "query", "products", "source", "index_version")
    META_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    query_id: str
    query: str
    products: _containers.RepeatedCompositeFieldContainer[_common_pb2.Product]
    source: str
    index_version: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., query_id: _Optional[str] = ..., query: _Optional[str] = ..., products: _Optional[_Iterable[_Union[_common_pb2.Product, _Mapping]]] = ..., source: _Optional[str] = ..., index_version: _Optional[str] = ...) -> None: ...

class LabelRecord(_message.Message):
    __slots__ = ("meta", "pair_key", "query_id", "query", "product_id", "grades", "expected_score", "teacher", "rationale")
    META_FIELD_NUMBER: _ClassVar[int]
    PAIR_KEY_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    GRADES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SCORE_FIELD_NUMBER: _ClassVar[int]
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    pair_key: str
    query_id: str
    query: str
    product_id: str
    grades: _common_pb2.GradeDistribution
    expected_score: float
    teacher: _common_pb2.ModelRef
    rationale: _common_pb2.Rationale
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., pair_key: _Optional[str] = ..., query_id: _Optional[str] = ..., query: _Optional[str] = ..., product_id: _Optional[str] = ..., grades: _Optional[_Union[_common_pb2.GradeDistribution, _Mapping]] = ..., expected_score: _Optional[float] = ..., teacher: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., rationale: _Optional[_Union[_common_pb2.Rationale, _Mapping]] = ...) -> None: ...

class RelabelRequest(_message.Message):
    __slots__ = ("meta", "product_changed", "new_query", "teacher_changed", "disagreement")
    META_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_CHANGED_FIELD_NUMBER: _ClassVar[int]
    NEW_QUERY_FIELD_NUMBER: _ClassVar[int]
    TEACHER_CHANGED_FIELD_NUMBER: _ClassVar[int]
    DISAGREEMENT_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    product_changed: ProductChanged
    new_query: NewQuery
    teacher_changed: TeacherChanged
    disagreement: Disagreement
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., product_changed: _Optional[_Union[ProductChanged, _Mapping]] = ..., new_query: _Optional[_Union[NewQuery, _Mapping]] = ..., teacher_changed: _Optional[_Union[TeacherChanged, _Mapping]] = ..., disagreement: _Optional[_Union[Disagreement, _Mapping]] = ...) -> None: ...

class ProductChanged(_message.Message):
    __slots__ = ("products",)
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[_common_pb2.Product]
    def __init__(self, products: _Optional[_Iterable[_Union[_common_pb2.Product, _Mapping]]] = ...) -> None: ...

class NewQuery(_message.Message):
    __slots__ = ("query_id", "query")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    query: str
    def __init__(self, query_id: _Optional[str] = ..., query: _Optional[str] = ...) -> None: ...

class TeacherChanged(_message.Message):
    __slots__ = ("teacher",)
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    teacher: _common_pb2.ModelRef
    def __init__(self, teacher: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class Disagreement(_message.Message):
    __slots__ = ("query_id", "query", "product_id", "student_score", "teacher_score")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    STUDENT_SCORE_FIELD_NUMBER: _ClassVar[int]
    TEACHER_SCORE_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    query: str
    product_id: str
    student_score: float
    teacher_score: float
    def __init__(self, query_id: _Optional[str] = ..., query: _Optional[str] = ..., product_id: _Optional[str] = ..., student_score: _Optional[float] = ..., teacher_score: _Optional[float] = ...) -> None: ...

class ServedSample(_message.Message):
    __slots__ = ("meta", "request_id", "query_id", "query", "products", "student")
    META_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    STUDENT_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    request_id: str
    query_id: str
    query: str
    products: _containers.RepeatedCompositeFieldContainer[ServedProduct]
    student: _common_pb2.ModelRef
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., request_id: _Optional[str] = ..., query_id: _Optional[str] = ..., query: _Optional[str] = ..., products: _Optional[_Iterable[_Union[ServedProduct, _Mapping]]] = ..., student: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class ServedProduct(_message.Message):
    __slots__ = ("product_id", "title", "product_type", "brand", "score")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_TYPE_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    title: str
    product_type: str
    brand: str
    score: float
    def __init__(self, product_id: _Optional[str] = ..., title: _Optional[str] = ..., product_type: _Optional[str] = ..., brand: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("meta", "source_topic", "source_partition", "source_offset", "source_key", "payload", "reason", "error_type", "consumer_group", "payload_size")
    META_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TOPIC_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PARTITION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_GROUP_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    source_topic: str
    source_partition: int
    source_offset: int
    source_key: bytes
    payload: bytes
    reason: str
    error_type: str
    consumer_group: str
    payload_size: int
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., source_topic: _Optional[str] = ..., source_partition: _Optional[int] = ..., source_offset: _Optional[int] = ..., source_key: _Optional[bytes] = ..., payload: _Optional[bytes] = ..., reason: _Optional[str] = ..., error_type: _Optional[str] = ..., consumer_group: _Optional[str] = ..., payload_size: _Optional[int] = ...) -> None: ...
