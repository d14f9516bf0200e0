"""The file ``mitmproxy -s addon/addon.py`` loads: it only builds the addon objects.

    mitmdump -s addon/addon.py --set h2ws_out=live/                     # intercept mode
    mitmdump -s addon/addon.py --set h2ws_mode=observe --set h2ws_out=live/
    mitmdump -s addon/addon.py --mode reverse:https://127.0.0.1:8443 --set h2ws_out=live/
    mitmdump -s addon/addon.py -w flows.mitm --set h2ws_keep_raw=true

The code lives in the installed package ``h2ws.addon`` (``pip install -e '.[live]'``).
"""

from __future__ import annotations

from h2ws.addon.compat import unsupported_mitmproxy

_problem = unsupported_mitmproxy()
if _problem is not None:
    raise SystemExit(_problem)

from h2ws.addon import intercept  # noqa: E402  (after the version check)
from h2ws.addon.observer import H2wsAddon  # noqa: E402

intercept.apply()  # inert until h2ws_mode=intercept (the default) enables it

addons = [H2wsAddon()]
