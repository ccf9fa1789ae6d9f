"""Use cases: envelope encryption and key administration; batch-first, each taking a Caller."""
