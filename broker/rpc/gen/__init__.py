"""Generated gRPC and protobuf code; do not edit."""
