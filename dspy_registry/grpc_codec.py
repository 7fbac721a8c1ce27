"""A version's gRPC messages: compiled from the bundle's `<program>.proto` (see proto.py) into a private descriptor
pool per version, checked against the loaded program's signature, and messages <-> the JSON-like values that REST
parses and answers. No server here (grpc_api.py serves); a bad message is a CallFailure, as everywhere on the call
path (runtime/calls.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from . import proto
from .errors import RegistryError
from .runtime.calls import INVALID_INPUT, INVALID_JSON, CallFailure
from .runtime.inference import PipelineServer
from .runtime.server_limits import JsonRefused, strict_json


# -- a version's messages -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionApi:
    """One loaded version in gRPC terms: its compiled descriptors, message classes and signature."""

    pool: descriptor_pool.DescriptorPool
    request: Any
    response: Any
    batch_request: Any
    batch_response: Any
    signature: proto.Signature


def compile_proto(text: str, name: str) -> descriptor_pool.DescriptorPool:
    """The descriptors of one .proto text, in a pool of their own (protoc runs aside, so its errors are captured)."""
    with tempfile.TemporaryDirectory(prefix="dspyreg-proto-") as tmp:
        (Path(tmp) / name).write_text(text, encoding="utf-8")
        out = Path(tmp) / "descriptors.pb"
        proc = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp}", f"--descriptor_set_out={out}", name],
            capture_output=True,
            text=True,
            cwd=tmp,
        )
        if proc.returncode != 0:
            raise RegistryError(f"{name} does not compile: {' '.join(proc.stderr.split()) or 'protoc failed'}")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return pool


def version_api(server: PipelineServer) -> VersionApi:
    """Compile the bundle's .proto and check it against the loaded program's signature."""
    path = server.bundle_dir / proto.file_name(server.name)
    if not path.is_file():
        raise RegistryError(
            f"{server.name} {server.version}: the bundle has no {path.name} (exported by an older dspyreg): "
            f"delete {server.bundle_dir} to have it rebuilt"
        )
    pool = compile_proto(path.read_text(encoding="utf-8"), path.name)
    names = proto.Names.of(server.name)
    package = proto.package(server.name)

    def message(name: str) -> Any:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))

    sig = proto.signature(server.name, server.interface)  # interface.json alone, as the .proto was written
    api = VersionApi(
        pool,
        message(names.request),
        message(names.response),
        message(names.batch_request),
        message(names.batch_response),
        sig,
    )
    for cls, fields in ((api.request, sig.inputs), (api.response, sig.outputs)):
        check_messages(cls.DESCRIPTOR, fields, sig, path.name)
    return api


_WIRE = {
    "string": FieldDescriptor.TYPE_STRING,
    "json": FieldDescriptor.TYPE_STRING,
    "int64": FieldDescriptor.TYPE_INT64,
    "double": FieldDescriptor.TYPE_DOUBLE,
    "bool": FieldDescriptor.TYPE_BOOL,
    "enum": FieldDescriptor.TYPE_ENUM,
    "message": FieldDescriptor.TYPE_MESSAGE,
}


def check_messages(
    descriptor: Any, fields: Sequence[proto.FieldShape], sig: proto.Signature, where: str, seen: set[str] | None = None
) -> None:
    """The compiled messages must be the ones the signature describes (the .proto was written for this version)."""
    seen = set() if seen is None else seen
    seen.add(descriptor.name)
    for f in fields:
        fd = descriptor.fields_by_name.get(f.name)
        if fd is None or fd.type != _WIRE[f.shape.kind] or fd.is_repeated != f.shape.repeated:
            raise RegistryError(f"{where} does not match the loaded program: field {descriptor.name}.{f.name}")
        if f.shape.kind == "message" and f.shape.message not in seen:
            check_messages(fd.message_type, sig.messages[f.shape.message], sig, where, seen)


# -- messages <-> Python values ----------------------------------------------------------------------------------------
def decode(message: Any, fields: Sequence[proto.FieldShape], sig: proto.Signature, at: str = "") -> dict[str, Any]:
    """A request message as the JSON-like values the REST API would have parsed (unset fields left out)."""
    out: dict[str, Any] = {}
    for f in fields:
        fd = message.DESCRIPTOR.fields_by_name[f.name]
        if fd.is_repeated:
            items = getattr(message, f.name)
            out[f.name] = [_decode_value(fd, f, item, sig, f"{at}{f.name}[{i}]") for i, item in enumerate(items)]
        elif message.HasField(f.name):
            out[f.name] = _decode_value(fd, f, getattr(message, f.name), sig, f"{at}{f.name}")
    return out


def _decode_value(fd: Any, f: proto.FieldShape, value: Any, sig: proto.Signature, where: str) -> Any:
    kind = f.shape.kind
    if kind == "json":
        try:
            return strict_json(value, what="the text")  # the same JSON the REST API accepts
        except JsonRefused as err:
            raise CallFailure(INVALID_JSON, f"{where}: not JSON text: {err}") from None
    if kind == "enum":
        by_name = {proto.enum_value_name(f.name, v): v for v in f.shape.values}
        number = fd.enum_type.values_by_number.get(value)
        if number is None or number.name not in by_name:
            allowed = ", ".join(by_name)
            raise CallFailure(INVALID_INPUT, f"{where}: enum value {value} is not one of {allowed}")
        return by_name[number.name]
    if kind == "message":
        return decode(value, sig.messages[f.shape.message], sig, f"{where}.")
    return value


def encode(message: Any, fields: Sequence[proto.FieldShape], values: Mapping[str, Any], sig: proto.Signature) -> None:
    """Fill `message` from JSON values (what the REST API answers); None leaves a field unset."""
    for f in fields:
        value = values.get(f.name)
        if value is None:
            continue
        fd = message.DESCRIPTOR.fields_by_name[f.name]
        if fd.is_repeated:
            target = getattr(message, f.name)
            for item in value:
                if f.shape.kind == "message":
                    encode(target.add(), sig.messages[f.shape.message], item, sig)
                else:
                    target.append(_encode_value(fd, f, item))
        elif f.shape.kind == "message":
            child = getattr(message, f.name)
            child.SetInParent()
            encode(child, sig.messages[f.shape.message], value, sig)
        else:
            setattr(message, f.name, _encode_value(fd, f, value))


def _encode_value(fd: Any, f: proto.FieldShape, value: Any) -> Any:
    if f.shape.kind == "json":
        return json.dumps(value, ensure_ascii=False)
    if f.shape.kind == "enum":
        found = fd.enum_type.values_by_name.get(proto.enum_value_name(f.name, str(value)))
        if found is None:
            raise ValueError(f"{f.name}: {value!r} is not one of its Literal values")
        return found.number
    return value


def parse(cls: Any, data: bytes) -> Message:
    """Request bytes as a message of `cls` (the version serving the call)."""
    try:
        message: Message = cls.FromString(data)
        return message
    except DecodeError as err:
        raise CallFailure(INVALID_INPUT, f"the request is not a {cls.DESCRIPTOR.name}: {err}") from None
