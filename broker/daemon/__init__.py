"""The composition root: the only place that wires concrete classes, plus hardening and metrics."""
