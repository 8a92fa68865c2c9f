"""Byte-level mutations of a saved file for the plan-file and checkpoint fuzz tests (hypothesis)."""

from __future__ import annotations

from hypothesis import strategies as st


def flip_bytes(blob: bytes, data) -> bytes:
    """``blob`` with one to four bytes XORed with a random non-zero value."""
    out = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        at = data.draw(st.integers(0, len(out) - 1), label="at")
        out[at] ^= data.draw(st.integers(1, 255), label="xor")
    return bytes(out)


def truncate(blob: bytes, data) -> bytes:
    """A proper prefix of ``blob``."""
    return blob[: data.draw(st.integers(0, len(blob) - 1), label="length")]
