"""Logging set-up shared by every process: one line per record, level from ROUTEMESH_LOG_LEVEL."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(service: str) -> None:
    """Log to stderr as `time level service logger: message`."""
    level = os.environ.get("ROUTEMESH_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
    )
    # httpx logs every request URL at INFO; URLs may carry provider keys (Gemini), so keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
