"""gRPC adapters: server, listeners, interceptors and servicers; generated code lives here only."""
