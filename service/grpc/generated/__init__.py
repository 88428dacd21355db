"""Written by service/grpc/generate.py (make protos) from protos/: do not edit."""

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

# The generated messages' own pool; it holds the well-known types they import.
POOL = descriptor_pool.DescriptorPool()
for _imported in (any_pb2, wrappers_pb2):
    POOL.AddSerializedFile(_imported.DESCRIPTOR.serialized_pb)
