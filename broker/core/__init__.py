"""Pure cryptography and formats: stdlib and cryptography only; no I/O, no asyncio, no logging."""
