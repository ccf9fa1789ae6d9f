"""keybroker: a local key-broker daemon serving envelope encryption and friends over gRPC."""

__version__ = "0.1.0"
