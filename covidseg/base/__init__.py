"""The base layer: what every other layer may use and which imports no other covidseg module —
errors (one exception type per kind of bad input), redact (no password in a log line), paths (the
cache and work folders), device (CUDA or CPU, mixed precision, channels-last)."""
