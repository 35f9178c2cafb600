"""Generated protobuf code for the SpatialReal ingress v2 schema (see proto/ and scripts/gen-proto).

Import the module as `from app.proto import message_pb2`.
"""

from app.proto.spatialreal import message_pb2

__all__ = ["message_pb2"]
