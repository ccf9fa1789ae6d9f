"""gRPC servers and listeners: Unix sockets, the peer-credential proxy, TLS, caller identity."""
