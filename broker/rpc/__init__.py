"""The per-call pipeline and one servicer per service; generated code lives in rpc/gen only."""
