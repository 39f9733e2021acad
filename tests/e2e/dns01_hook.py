"""certbot --manual-auth-hook / --manual-cleanup-hook for DNS-01 against pebble-challtestsrv.

Stands in for a DNS provider's API (what certbot-dns-* plugins call): sets or clears the
_acme-challenge TXT record. Needs CHALLTESTSRV (its management URL) in the environment.
"""
from __future__ import annotations

import json
import os
import sys
import urllib.request


def main() -> int:
    action = "clear-txt" if sys.argv[1:] == ["cleanup"] else "set-txt"
    record = {"host": f"_acme-challenge.{os.environ['CERTBOT_DOMAIN']}."}
    if action == "set-txt":
        record["value"] = os.environ["CERTBOT_VALIDATION"]
    request = urllib.request.Request(f"{os.environ['CHALLTESTSRV']}/{action}",
                                     data=json.dumps(record).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return 0 if response.status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
