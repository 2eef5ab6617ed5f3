"""The anchors' autoguide test suites ported to quivers (see docs/conformance.md)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # tests/helpers.py
