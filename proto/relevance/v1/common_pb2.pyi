import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MatchStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MATCH_STATUS_UNSPECIFIED: _ClassVar[MatchStatus]
    MATCH_STATUS_MATCH: _ClassVar[MatchStatus]
    MATCH_STATUS_MISMATCH: _ClassVar[MatchStatus]
MATCH_STATUS_UNSPECIFIED: MatchStatus
MATCH_STATUS_MATCH: MatchStatus
MATCH_STATUS_MISMATCH: MatchStatus

class Product(_message.Message):
    __slots__ = ("product_id", "title", "product_type", "category", "brand", "attributes", "description", "features")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    title: str
    product_type: str
    category: str
    brand: str
    attributes: _containers.ScalarMap[str, str]
    description: str
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product_id: _Optional[str] = ..., title: _Optional[str] = ..., product_type: _Optional[str] = ..., category: _Optional[str] = ..., brand: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., description: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class Rationale(_message.Message):
    __slots__ = ("category_match", "brand_match", "attribute_match", "text", "category_probs", "brand_probs", "attribute_probs")
    CATEGORY_MATCH_FIELD_NUMBER: _ClassVar[int]
    BRAND_MATCH_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_MATCH_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_PROBS_FIELD_NUMBER: _ClassVar[int]
    BRAND_PROBS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_PROBS_FIELD_NUMBER: _ClassVar[int]
    category_match: MatchStatus
    brand_match: MatchStatus
    attribute_match: MatchStatus
    text: str
    category_probs: _containers.RepeatedScalarFieldContainer[float]
    brand_probs: _containers.RepeatedScalarFieldContainer[float]
    attribute_probs: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, category_match: _Optional[_Union[MatchStatus, str]] = ..., brand_match: _Optional[_Union[MatchStatus, str]] = ..., attribute_match: _Optional[_Union[MatchStatus, str]] = ..., text: _Optional[str] = ..., category_probs: _Optional[_Iterable[float]] = ..., brand_probs: _Optional[_Iterable[float]] = ..., attribute_probs: _Optional[_Iterable[float]] = ...) -> None: ...

class GradeDistribution(_message.Message):
    __slots__ = ("probs",)
    PROBS_FIELD_NUMBER: _ClassVar[int]
    probs: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, probs: _Optional[_Iterable[float]] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class EventMeta(_message.Message):
    __slots__ = ("event_id", "producer", "produced_at")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    PRODUCED_AT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    producer: str
    produced_at: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., producer: _Optional[str] = ..., produced_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
