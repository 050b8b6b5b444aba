from relevance.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoreProduct(_message.Message):
    __slots__ = ("product_id", "title", "product_type", "brand")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_TYPE_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    title: str
    product_type: str
    brand: str
    def __init__(self, product_id: _Optional[str] = ..., title: _Optional[str] = ..., product_type: _Optional[str] = ..., brand: _Optional[str] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("query", "products", "request_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    query: str
    products: _containers.RepeatedCompositeFieldContainer[ScoreProduct]
    request_id: str
    def __init__(self, query: _Optional[str] = ..., products: _Optional[_Iterable[_Union[ScoreProduct, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ProductScore(_message.Message):
    __slots__ = ("product_id", "score")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    score: float
    def __init__(self, product_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("scores", "model", "request_id", "truncated", "serving")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[ProductScore]
    model: _common_pb2.ModelRef
    request_id: str
    truncated: int
    serving: ServingRevision
    def __init__(self, scores: _Optional[_Iterable[_Union[ProductScore, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., request_id: _Optional[str] = ..., truncated: _Optional[int] = ..., serving: _Optional[_Union[ServingRevision, _Mapping]] = ...) -> None: ...

class ServingRevision(_message.Message):
    __slots__ = ("backend", "model", "version")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    backend: str
    model: str
    version: str
    def __init__(self, backend: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...
