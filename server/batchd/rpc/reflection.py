"""Server reflection that carries the proto's comments.

protoc's Python output drops source info, so reflection built on the default descriptor pool
shows grpcurl users bare message shapes. scripts/generate also writes a descriptor set with
source info; this pool hands grpcio-reflection file descriptors that serialize from it, so
``grpcurl describe`` shows every comment of batch.proto.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection


def _documented_files() -> dict[str, bytes]:
    data = resources.files("batchd.v1").joinpath("descriptors.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    return {f.name: f.SerializeToString() for f in files.file}


class _File:
    """A file descriptor whose CopyToProto includes the comments."""

    def __init__(self, descriptor: Any, documented: dict[str, bytes]) -> None:
        self._descriptor = descriptor
        self._documented = documented

    @property
    def name(self) -> str:
        return str(self._descriptor.name)

    @property
    def dependencies(self) -> list[_File]:
        return [_File(d, self._documented) for d in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        source = self._documented.get(self.name)
        if source is None:
            self._descriptor.CopyToProto(proto)
        else:
            proto.MergeFromString(source)


class _DocumentedPool:
    def __init__(self) -> None:
        self._pool = descriptor_pool.Default()
        self._documented = _documented_files()

    def FindFileByName(self, name: str) -> _File:
        return _File(self._pool.FindFileByName(name), self._documented)

    def FindFileContainingSymbol(self, symbol: str) -> _File:
        return _File(self._pool.FindFileContainingSymbol(symbol), self._documented)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def enable(service_names: tuple[str, ...], server: Any) -> None:
    reflection.enable_server_reflection((*service_names, reflection.SERVICE_NAME), server,
                                        pool=_DocumentedPool())
