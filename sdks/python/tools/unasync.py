"""Generate src/countersign/_sync_client.py from _async_client.py.

Usage: python tools/unasync.py [--check]   (--check fails if the generated file is stale)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "src" / "countersign"

REPLACEMENTS = [
    ('"""The asynchronous client. ``_sync_client.py`` is generated from this file by\n'
     '``tools/unasync.py``: edit this one and regenerate."""',
     '"""The synchronous client, generated from ``_async_client.py`` by ``tools/unasync.py``:\n'
     'do not edit."""'),
    ("import asyncio\n", "import time\n"),
    ("asyncio.sleep", "time.sleep"),
    ("httpx.AsyncBaseTransport", "httpx.BaseTransport"),
    ("httpx.AsyncClient", "httpx.Client"),
    ("async def __aenter__", "def __enter__"),
    ("async def __aexit__", "def __exit__"),
    ("aclose()", "close()"),
    ("async def aclose", "def close"),
    ("async def ", "def "),
    ("await ", ""),
]


def generate() -> str:
    text = (PKG / "_async_client.py").read_text()
    for old, new in REPLACEMENTS:
        text = text.replace(old, new)
    text = re.sub(r"\bAsync([A-Z]\w*)", r"\1", text)
    return text


def main() -> int:
    target = PKG / "_sync_client.py"
    text = generate()
    if "--check" in sys.argv:
        if not target.exists() or target.read_text() != text:
            print("_sync_client.py is stale: run python tools/unasync.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
