"""Written by service/grpc/generate.py (make protos) from protos/: do not edit."""
