"""`agent-cli mcp` reloading its configuration on SIGHUP, driven by the official MCP Python
SDK over stdio against a real Redis (the `world` of test_mcp.py): an invalid file is refused
on one stderr line naming file:line:col and the tools stay; a file with a new lookup makes
the server send `notifications/tools/list_changed`, after which `tools/list` shows the new
tool and a call of it answers from Redis.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from pathlib import Path

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from test_mcp import REDIS_URL, agent_cli_bin, get, payload, world  # noqa: F401 (fixture)

NEW_LOOKUP = """\
      - tool: find_customer_by_email
        description: Find a customer by email address only
        by:
          - param: address
            type: string
            description: Customer email
            index: email
"""


def server_pid(config: str) -> int:
    """The pid of the `agent-cli ... mcp` serving `config` (a path unique to the test)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if config.encode() in args and b"mcp" in args:
            return int(entry.name)
    raise AssertionError(f"no agent-cli mcp process for {config}")


def test_sighup_reloads_the_tools_and_tells_the_client(world):
    config = Path(world["config"])
    original = config.read_text()
    customers_end = "            index: email\n  - name: orders_"
    assert customers_end in original
    changed = asyncio.Event()

    async def on_message(message):
        root = getattr(message, "root", message)  # SDK 1.x wraps notifications
        if getattr(root, "method", None) == "notifications/tools/list_changed":
            changed.set()

    async def names(session):
        return [t.name for t in (await session.list_tools()).tools]

    async def main(errlog):
        params = StdioServerParameters(
            command=agent_cli_bin(),
            args=["--config", str(config), "mcp"],
            env={"REDIS_URL": REDIS_URL, "RUST_LOG": "agent_cli=info"},
        )
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write, message_handler=on_message) as session:
                init = await session.initialize()
                assert get(init.capabilities.tools, "list_changed") is True
                before = await names(session)
                pid = server_pid(str(config))

                # An invalid file: refused, the tools stay.
                config.write_text(original.replace("    fields: all\n", "    fields: all\n    bogus: 1\n", 1))
                os.kill(pid, signal.SIGHUP)
                await asyncio.sleep(1.5)
                refused = not changed.is_set()
                still = await names(session)

                # A new lookup: the client is told, and sees and calls the new tool.
                config.write_text(original.replace(customers_end, customers_end.replace("  - name", NEW_LOOKUP + "  - name"), 1))
                os.kill(pid, signal.SIGHUP)
                await asyncio.wait_for(changed.wait(), timeout=10)
                after = await names(session)
                found = await session.call_tool("find_customer_by_email", {"address": "jane.doe+x@example.com"})
                old = await session.call_tool("get_customer", {"customer_id": 42})
                return before, refused, still, after, found, old

    with tempfile.TemporaryFile("w+") as errlog:
        before, refused, still, after, found, old = asyncio.run(asyncio.wait_for(main(errlog), timeout=60))
        errlog.seek(0)
        stderr = errlog.read()

    assert before == ["get_customer", "get_order", "get_customer_orders"]
    assert refused, "no list_changed for a refused file"
    assert still == before
    lines = [l for l in stderr.splitlines() if "Configuration reload refused" in l]
    assert len(lines) == 1, stderr
    assert f"{config}:" in lines[0] and "bogus" in lines[0], lines[0]
    line, col = lines[0].split(f"{config}:", 1)[1].split(":")[:2]
    assert line.isdigit() and col.isdigit(), lines[0]
    assert after == ["get_customer", "find_customer_by_email", "get_order", "get_customer_orders"]
    assert payload(found)["result"]["id"] == 42
    assert payload(old)["result"]["email"] == "jane.doe+x@example.com"
