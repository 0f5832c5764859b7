"""The upstream MCP server the suite puts behind Countersign, built with the official Python SDK.

    python upstream.py stdio            # MCP over stdin/stdout
    python upstream.py http [URL_FILE]  # streamable HTTP on 127.0.0.1, a free port; the endpoint's
                                        # URL is the first line on stdout (and written to URL_FILE)

Over HTTP with UPSTREAM_TOKEN set, every request must carry it in the `X-Upstream-Token` header.
Every tools/call it receives is appended, before the tool runs, as one JSON line
{"tool": name, "arguments": {...}} to the file named by UPSTREAM_CALL_LOG (when set), so a test
can prove that a call never reached it; a call the client cancels adds the same with
"cancelled": true.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations


def record(entry: dict[str, Any]) -> None:
    path = os.environ.get("UPSTREAM_CALL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry, sort_keys=True) + "\n")


class LoggingServer(MCPServer):
    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context | None = None) -> Any:
        record({"tool": name, "arguments": arguments})
        try:
            return await super().call_tool(name, arguments, context)
        except anyio.get_cancelled_exc_class():
            # The client's notifications/cancelled reached us and stopped the tool.
            record({"tool": name, "arguments": arguments, "cancelled": True})
            raise


server = LoggingServer("countersign-e2e-upstream", version="1.0.0", log_level="WARNING")


@server.tool(
    description="Look something up (reads only).",
    annotations=ToolAnnotations(read_only_hint=True),
)
def lookup(query: str) -> str:
    return f"found: {query[::-1]} ({len(query)} characters)"


@server.tool(
    description="Delete every record of a table.",
    annotations=ToolAnnotations(destructive_hint=True),
)
def delete_records(table: str) -> str:
    return "deleted"


@server.tool(
    description="Return the arguments it was given.",
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False),
)
def echo(text: str, n: int = 0) -> dict[str, Any]:
    return {"text": text, "n": n}


@server.tool(
    description="Wait, reporting progress, then say how long it waited.",
    annotations=ToolAnnotations(read_only_hint=True),
)
async def slow(seconds: float, ctx: Context) -> str:
    steps = 4
    for step in range(steps):
        await ctx.report_progress(step, steps, f"step {step + 1} of {steps}")
        await anyio.sleep(seconds / steps)
    await ctx.report_progress(steps, steps, "done")
    return f"waited {seconds} seconds"


@server.resource("note://greeting", name="greeting", description="A fixed note.", mime_type="text/plain")
def greeting() -> str:
    return "hello from the upstream"


@server.prompt(description="Ask for a summary of a topic.")
def summarize(topic: str) -> str:
    return f"Summarize what is known about {topic} in three sentences."


def require_token(app: Any, token: str | None) -> Any:
    """With a token, every HTTP request must carry it as `X-Upstream-Token` (else 401), so a test
    shows that the proxy sends the headers it was given."""
    if not token:
        return app
    expected = token.encode()

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"x-upstream-token") != expected:
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"X-Upstream-Token missing or wrong"})
            return
        await app(scope, receive, send)

    return guarded


async def serve_http(url_file: str | None) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until the server accepts them
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mcp"
    app = require_token(server.streamable_http_app(host="127.0.0.1"), os.environ.get("UPSTREAM_TOKEN"))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    if url_file:
        with open(url_file, "w", encoding="utf-8") as f:
            f.write(url + "\n")
    print(url, flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if mode == "stdio":
        server.run("stdio")
    elif mode == "http":
        anyio.run(serve_http, sys.argv[2] if len(sys.argv) > 2 else None)
    else:
        sys.exit(f"usage: {sys.argv[0]} stdio | http [URL_FILE]")


if __name__ == "__main__":
    main()
