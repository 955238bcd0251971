"""What a crmsync process loads: a run pays at start-up only for what it uses.

Each check runs in a fresh interpreter, since this one has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys


def loaded_after(code: str) -> dict[str, object]:
    """``sys.modules`` of a fresh interpreter after ``code``: each name, and whether it
    is a module (False: marked absent)."""
    listing = "{name: module is not None for name, module in sys.modules.items()}"
    script = f"{code}\nimport json, sys\nprint(json.dumps({listing}))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    found: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return found


def test_a_connector_loads_httpx_without_its_command_line_client() -> None:
    # httpx imports its command-line client (rich, pygments) when they are installed;
    # crmsync never runs it, and a run, reader or worker would pay for it at every start
    modules = loaded_after(
        "import connectors.http, httpx\n"
        "with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(204))) as c:\n"
        "    assert c.get('http://shop.test/').status_code == 204"
    )
    assert modules["httpx"] is True
    assert modules["httpx._main"] is False  # marked absent: httpx took its fallback
    assert "pygments" not in modules
    assert not any(name == "rich" or name.startswith("rich.") for name in modules)


def test_plain_addresses_are_read_without_importing_the_validator() -> None:
    modules = loaded_after(
        "from crmsync import normalize\n"
        "assert normalize.email(' Ayse@Example.COM ') == 'ayse@example.com'"
    )
    assert "email_validator" not in modules
    # an address the cheap check cannot prove still gets the validator's verdict
    modules = loaded_after(
        "from crmsync import normalize\n"
        "from crmsync.errors import RecordError\n"
        "try:\n"
        "    normalize.email('someone@shop.onion')\n"
        "except RecordError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('a special-use domain was accepted')"
    )
    assert modules["email_validator"] is True
