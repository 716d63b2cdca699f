"""Unit tests of the pure surveillance package (issue 19)."""
