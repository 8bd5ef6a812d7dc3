"""Local stand-ins for outside services, speaking their real protocols (used by `make demo` and tests)."""
