from relevance.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateRequest(_message.Message):
    __slots__ = ("query", "k", "query_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    query: str
    k: int
    query_id: str
    def __init__(self, query: _Optional[str] = ..., k: _Optional[int] = ..., query_id: _Optional[str] = ...) -> None: ...

class ScoredCandidate(_message.Message):
    __slots__ = ("product", "retrieval_score", "rank", "stratum")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    STRATUM_FIELD_NUMBER: _ClassVar[int]
    product: _common_pb2.Product
    retrieval_score: float
    rank: int
    stratum: str
    def __init__(self, product: _Optional[_Union[_common_pb2.Product, _Mapping]] = ..., retrieval_score: _Optional[float] = ..., rank: _Optional[int] = ..., stratum: _Optional[str] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("query_id", "query", "candidates", "index_version")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    query: str
    candidates: _containers.RepeatedCompositeFieldContainer[ScoredCandidate]
    index_version: str
    def __init__(self, query_id: _Optional[str] = ..., query: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[ScoredCandidate, _Mapping]]] = ..., index_version: _Optional[str] = ...) -> None: ...

class GenerateBatchRequest(_message.Message):
    __slots__ = ("queries", "per_query")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    PER_QUERY_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedScalarFieldContainer[str]
    per_query: int
    def __init__(self, queries: _Optional[_Iterable[str]] = ..., per_query: _Optional[int] = ...) -> None: ...

class UpsertProductsRequest(_message.Message):
    __slots__ = ("products",)
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[_common_pb2.Product]
    def __init__(self, products: _Optional[_Iterable[_Union[_common_pb2.Product, _Mapping]]] = ...) -> None: ...

class UpsertProductsResponse(_message.Message):
    __slots__ = ("published", "event_id")
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    published: int
    event_id: str
    def __init__(self, published: _Optional[int] = ..., event_id: _Optional[str] = ...) -> None: ...
