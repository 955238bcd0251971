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


def test_the_mailchimp_sdk_sends_through_the_seam_without_importing_requests() -> None:
    # the SDK imports requests and urllib3 at its top; crmsync never sends through them
    # (connectors.mailchimp.sdk), and every process with the connector paid for both
    modules = loaded_after(
        "import httpx\n"
        "from connectors.http import HttpClient, HttpSettings\n"
        "from connectors.mailchimp.client import MailchimpApi\n"
        "def answer(request):\n"
        "    assert request.url.path == '/3.0/ping'\n"
        "    return httpx.Response(200, json={'health_status': 'Everything is Chimpy!'})\n"
        "http = HttpClient(HttpSettings(base_url='https://us1.api.mailchimp.test/3.0'),\n"
        "                  account='mc', transport=httpx.MockTransport(answer))\n"
        "assert MailchimpApi(http).ping() == {'health_status': 'Everything is Chimpy!'}"
    )
    assert modules["mailchimp_marketing.api_client"] is True
    for name in ("requests", "urllib3", "charset_normalizer"):
        assert name not in modules, name


def test_the_sdks_stand_ins_give_the_real_modules_when_read() -> None:
    # should the SDK ever read its requests after all, it gets the real module, and so
    # does anything that imports requests after the SDK
    modules = loaded_after(
        "import sys\n"
        "from crmsync import deferred\n"
        "import connectors.mailchimp.sdk\n"
        "from mailchimp_marketing import api_client, configuration\n"
        "assert 'requests' not in sys.modules and 'urllib3' not in sys.modules\n"
        "assert isinstance(api_client.requests, deferred.Deferred)\n"
        "get = api_client.requests.get\n"
        "import requests, urllib3\n"
        "assert get is requests.get and not isinstance(requests, deferred.Deferred)\n"
        "assert configuration.urllib3.PoolManager is urllib3.PoolManager"
    )
    assert modules["requests"] is True
    assert modules["urllib3"] is True


def test_a_module_loaded_before_the_sdk_is_the_one_it_keeps() -> None:
    loaded_after(
        "import requests\n"
        "import connectors.mailchimp.sdk\n"
        "from mailchimp_marketing import api_client\n"
        "assert api_client.requests is requests"
    )
