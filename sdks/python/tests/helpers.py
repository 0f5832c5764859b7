from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Callable


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def later(delay: float, fn: Callable[[], Any]) -> threading.Thread:
    """Run ``fn`` on a thread after ``delay`` seconds (a reviewer deciding while the agent waits)."""

    def run() -> None:
        time.sleep(delay)
        fn()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
