"""Generated protobuf and gRPC stubs for routemesh.v1 (do not edit; run scripts/gen_protos.py)."""
