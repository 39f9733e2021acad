"""After a Wazo upgrade: put the deployed certificate back through the normal transaction."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from cryptography.hazmat.primitives.serialization import Encoding

from certbot_wazo import status
from certbot_wazo.deployment import Deployment
from certbot_wazo.errors import HostError, WazoError
from certbot_wazo.ledger import Ledger
from certbot_wazo.pair import dns_names, load_chain, read_regular

logger = logging.getLogger(__name__)


def _leaf(path: Path) -> bytes:
    """DER of the first certificate of a PEM file (b"" when unreadable)."""
    try:
        return load_chain(read_regular(path), path)[0].public_bytes(Encoding.DER)
    except (OSError, WazoError, IndexError) as exc:
        logger.debug("%s", exc)
        return b""


def source(deployment: Deployment, config_dir: Path) -> tuple[Path, Path]:
    """The pair to put back: the certbot lineage that holds the last deployed certificate
    (in its current version: a renewal since then is deployed too). In remote mode, the pair
    this machine's ledger recorded for the host, never one the host's records point to.

    :raises HostError: nothing was ever deployed, or no lineage holds what was
    """
    if deployment.access.ledger is not None:
        return _recorded(deployment.access.ledger)
    try:
        deployed = deployment.journal.last_deployment().new_leaf
    except WazoError:
        raise HostError(f"{deployment.journal.state_dir}: no deployment to repair (deploy "
                        "first: certbot run -i wazo, or certbot-wazo deploy)") from None
    live = config_dir / "live"
    for lineage in sorted(live.iterdir()) if live.is_dir() else []:
        archive = config_dir / "archive" / lineage.name
        versions = sorted(archive.glob("cert*.pem")) if archive.is_dir() else []
        if any(_leaf(p) == deployed for p in [lineage / "fullchain.pem", *versions]):
            return lineage / "fullchain.pem", lineage / "privkey.pem"
    raise HostError(f"{live}: no certbot lineage holds the deployed certificate (deploy it "
                    "again: certbot-wazo deploy --cert FULLCHAIN --key KEY)")


def repair(deployment: Deployment, config_dir: Path) -> Optional[status.Report]:
    """Check the host against what was deployed; when something differs, deploy the same
    lineage again (validate, stage, install, configure, probe, restart, probe, commit or roll
    back): the pair in the directory this release uses, its modes, the overrides of every
    daemon there now, the hosts mapping.

    The services get the probe timeout to come up first, so a repair right after they were
    started restarts nothing that is merely slow.

    :returns: None when the host was healthy (nothing done), else the status after the repair
    :raises WazoError: the repair failed (rolled back as any deployment)
    """
    # wazo-upgrade runs its post-start.d hooks right after starting the services: give them
    # the probe timeout to listen before judging (a slow start is not drift to repair).
    deployment.settle(deployment.settings.probe_timeout)
    before = status.check(deployment, config_dir)
    if before.healthy:
        deployment.notify("The host is as deployed: nothing to repair")
        return None
    cert, key = source(deployment, config_dir)
    deployment.notify("Repairing: " + "; ".join(before.problems))
    if not deployment.run(cert, key, remember=True):
        deployment.refresh()
    after = status.check(deployment, config_dir)
    for problem in after.problems:
        logger.warning("still: %s", problem)
    return after


def _recorded(ledger: Ledger) -> tuple[Path, Path]:
    """The pair the ledger recorded for this host, while it still holds one of its names.

    :raises HostError: none recorded, or its certificate no longer names the host
    """
    entry = ledger.trusted()
    if entry is None or not entry.cert:
        raise HostError(f"{ledger.destination}: this controller never deployed a certificate "
                        f"there ({ledger.path}); a host's records never choose this machine's "
                        f"files (deploy first: certbot-wazo deploy --ssh {ledger.destination} "
                        "--lineage …)")
    cert, key = Path(entry.cert), Path(entry.key)
    try:
        leaf = load_chain(read_regular(cert), cert)[0]
    except (IndexError, WazoError) as exc:
        raise HostError(f"{cert}: the pair this controller deployed to {ledger.destination} "
                        f"cannot be read ({exc}; deploy it again)") from None
    if not set(dns_names(leaf)) & set(entry.names):
        raise HostError(f"{cert}: names none of {', '.join(entry.names)}, the names this "
                        f"controller deployed to {ledger.destination} (deploy the right pair "
                        "there: certbot-wazo deploy --ssh … --lineage …)")
    return cert, key
