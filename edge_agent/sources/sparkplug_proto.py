"""The Sparkplug B payload as protobuf message classes, built at import time.

No protoc and no generated `_pb2.py` to keep in step: the subset of the Sparkplug B schema the
agent reads (payload timestamp/seq/metrics; metric name, alias, timestamp, datatype, null
flag and scalar values) is declared here as a descriptor, with the field numbers of the
Sparkplug B specification, and the maintained `protobuf` runtime does the wire decoding.
Fields left out (properties, metadata, datasets, templates) are carried as unknown fields
and ignored, which protobuf guarantees is safe.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

# Sparkplug B data types (specification, "Data Types")
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT = 9, 10, 11, 12, 13, 14
NUMERIC_TYPES = {INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FLOAT, DOUBLE,
                 BOOLEAN, DATETIME}

_F = descriptor_pb2.FieldDescriptorProto
_OPT = _F.LABEL_OPTIONAL
_REP = _F.LABEL_REPEATED

# (name, number, type, label, type_name, oneof index or None)
_METRIC_FIELDS: list[tuple[str, int, int, int, str, int | None]] = [
    ("name", 1, _F.TYPE_STRING, _OPT, "", None),
    ("alias", 2, _F.TYPE_UINT64, _OPT, "", None),
    ("timestamp", 3, _F.TYPE_UINT64, _OPT, "", None),
    ("datatype", 4, _F.TYPE_UINT32, _OPT, "", None),
    ("is_historical", 5, _F.TYPE_BOOL, _OPT, "", None),
    ("is_transient", 6, _F.TYPE_BOOL, _OPT, "", None),
    ("is_null", 7, _F.TYPE_BOOL, _OPT, "", None),
    ("int_value", 10, _F.TYPE_UINT32, _OPT, "", 0),
    ("long_value", 11, _F.TYPE_UINT64, _OPT, "", 0),
    ("float_value", 12, _F.TYPE_FLOAT, _OPT, "", 0),
    ("double_value", 13, _F.TYPE_DOUBLE, _OPT, "", 0),
    ("boolean_value", 14, _F.TYPE_BOOL, _OPT, "", 0),
    ("string_value", 15, _F.TYPE_STRING, _OPT, "", 0),
    ("bytes_value", 16, _F.TYPE_BYTES, _OPT, "", 0),
]
_PAYLOAD_FIELDS: list[tuple[str, int, int, int, str, int | None]] = [
    ("timestamp", 1, _F.TYPE_UINT64, _OPT, "", None),
    ("metrics", 2, _F.TYPE_MESSAGE, _REP, ".org.eclipse.tahu.protobuf.Payload.Metric", None),
    ("seq", 3, _F.TYPE_UINT64, _OPT, "", None),
    ("uuid", 4, _F.TYPE_STRING, _OPT, "", None),
    ("body", 5, _F.TYPE_BYTES, _OPT, "", None),
]


def _message(
    name: str, fields: list[tuple[str, int, int, int, str, int | None]]
) -> descriptor_pb2.DescriptorProto:
    m = descriptor_pb2.DescriptorProto(name=name)
    if any(f[5] is not None for f in fields):
        m.oneof_decl.add(name="value")
    for fname, number, ftype, label, type_name, oneof in fields:
        f = m.field.add(name=fname, number=number, type=ftype, label=label)
        if type_name:
            f.type_name = type_name
        if oneof is not None:
            f.oneof_index = oneof
    return m


def _build() -> tuple[Any, Any]:
    fd = descriptor_pb2.FileDescriptorProto(
        name="gearwatch_sparkplug_b.proto", package="org.eclipse.tahu.protobuf", syntax="proto2")
    payload = _message("Payload", _PAYLOAD_FIELDS)
    payload.nested_type.append(_message("Metric", _METRIC_FIELDS))
    fd.message_type.append(payload)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    p = message_factory.GetMessageClass(pool.FindMessageTypeByName(
        "org.eclipse.tahu.protobuf.Payload"))
    m = message_factory.GetMessageClass(pool.FindMessageTypeByName(
        "org.eclipse.tahu.protobuf.Payload.Metric"))
    return p, m


Payload, Metric = _build()


def parse_payload(data: bytes) -> Any:
    """Bytes -> Payload message; raises `DecodeError` for anything protobuf cannot parse."""
    msg = Payload()
    msg.ParseFromString(data)
    return msg


def metric_number(m: Any) -> float | None:
    """A metric's value as a float, signed per its datatype; None if null or not numeric."""
    if m.is_null:
        return None
    kind = m.WhichOneof("value")
    dt = m.datatype
    if kind == "int_value":
        v = int(m.int_value)
        if dt in (INT8, INT16, INT32) and v >= 2**31:  # two's complement in a uint32
            v -= 2**32
        return float(v)
    if kind == "long_value":
        v = int(m.long_value)
        if dt == INT64 and v >= 2**63:
            v -= 2**64
        return float(v)
    if kind == "float_value":
        return float(m.float_value)
    if kind == "double_value":
        return float(m.double_value)
    if kind == "boolean_value":
        return 1.0 if m.boolean_value else 0.0
    return None


__all__ = ["NUMERIC_TYPES", "DecodeError", "Metric", "Payload", "metric_number",
           "parse_payload"]
