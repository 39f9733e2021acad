"""The certbot installer plugin `wazo`: certbot's API on one side, the deployment transaction on the other."""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Callable, Optional, Union

from certbot import errors, interfaces
from certbot.display import util as display_util
from certbot.plugins import common

from certbot_wazo import options, services
from certbot_wazo.deployment import Deployment
from certbot_wazo.errors import HostError, LockBusyError, WazoError
from certbot_wazo.host import LEGACY

logger = logging.getLogger(__name__)


class WazoInstaller(common.Installer, interfaces.RenewDeployer):
    """Install certificates into a Wazo (formerly XiVO) telephony server."""

    description = ("Wazo (XiVO) telephony server: install the certificate, configure the "
                   "services, restart them only after a TLS probe, roll back on failure")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deployment: Optional[Deployment] = None
        self._deployed: set[tuple[str, str]] = set()
        self._nothing_to_roll_back = False

    @classmethod
    def add_parser_arguments(cls, add: Callable[..., None]) -> None:
        add("root", default="/", help="Directory the Wazo host lives under; every Wazo path "
            "and command is taken under it.")
        add("profile", default="auto", choices=options.PROFILES,
            help="Wazo generation: legacy (daemons serve TLS, XiVO 15.12-Wazo 18.03), modern "
                 "(nginx fronts everything), or auto to read it from the host's configuration.")
        add("force-profile", default=False, action="store_true",
            help="Confirm a --wazo-profile that differs from the host's configuration.")
        add("hostname", default=None, help="Name the services use to reach each other; one of "
            "the certificate's DNS names (default: the one that is this host's).")
        add("probe", default=None, help="TLS endpoints to check after the restart, "
            "ADDR:PORT[,ADDR:PORT...] (default: those the host's configuration shows).")
        add("probe-timeout", default=options.DEFAULT_PROBE_TIMEOUT, type=float,
            help="Seconds services get to come back after the restart.")

    # -- plugin -------------------------------------------------------------------------------
    def more_info(self) -> str:
        return ("Installs the certificate into a Wazo host's certificate directory with the "
                "permissions its services need, points the services at the certificate's name, "
                "probes TLS before and after restarting them and rolls back when the probe "
                f"fails. Wazo root: {self.conf('root')}.")

    def prepare(self) -> None:
        """Check the host can be deployed to; finish any interrupted deployment.

        During `certbot renew` a failing prepare() silently drops the installer, so it fails
        only when the host really cannot be deployed to.

        :raises errors.NoInstallationError: no Wazo host under --wazo-root
        :raises errors.MisconfigurationError: the options are invalid
        """
        deployment = self._get_deployment()
        host = deployment.host
        if not host.root.is_dir():
            raise errors.NoInstallationError(f"{host.root}: no such directory (give the Wazo "
                                             "root with --wazo-root)")
        try:
            host.require_cert_dirs("--wazo-root")
        except HostError as exc:
            raise errors.NoInstallationError(str(exc)) from None
        try:
            deployment.recover_if_idle(wait=0.0)
        except LockBusyError:
            logger.info("Another deployment is running; it will finish its own work")
        except (WazoError, OSError) as exc:
            logger.warning("Could not finish an interrupted deployment yet: %s", exc)

    def get_all_names(self) -> set[str]:
        """The names this Wazo answers to (FQDN, hostname, nginx server names, certificate)."""
        return self._get_deployment().host.names()

    def deploy_cert(self, domain: str, cert_path: str, key_path: str,
                    chain_path: Optional[str] = None, fullchain_path: Optional[str] = None) -> None:
        """Validate and install the pair (once per certificate, whatever the number of names);
        the restart happens in restart().

        :raises errors.PluginError: the pair or the host is unusable; nothing was changed
        """
        if fullchain_path is None:
            raise errors.PluginError(f"{cert_path}: Wazo needs the full chain (certbot gives "
                                     "fullchain_path; use certbot 0.10 or newer)")
        self._install(fullchain_path, key_path, remember=False)

    def renew_deploy(self, lineage: Any, *args: Any, **kwargs: Any) -> None:
        """Install a renewed lineage (certbot never calls deploy_cert on renew).

        :raises errors.PluginError: the pair or the host is unusable; nothing was changed
        """
        self._install(lineage.fullchain_path, lineage.key_path, remember=True)

    def _install(self, fullchain: str, key: str, remember: bool) -> None:
        if (fullchain, key) in self._deployed:
            return
        deployment = self._get_deployment()
        try:
            if deployment.plan is None:
                deployment.install(Path(fullchain), Path(key), remember)
        except WazoError as exc:
            raise errors.PluginError(str(exc)) from None
        except OSError as exc:
            raise errors.PluginError(_oserror(exc)) from None
        self._deployed.add((fullchain, key))

    def enhance(self, domain: str, enhancement: str,
                options: Optional[Union[list[str], str]] = None) -> None:
        raise errors.PluginError(f"wazo: enhancement {enhancement} is not supported (Wazo's "
                                 "nginx already redirects HTTP to HTTPS)")

    def supported_enhancements(self) -> list[str]:
        return []

    def save(self, title: Optional[str] = None, temporary: bool = False) -> None:
        """The installed files are already durable in the deployment journal; log the checkpoint."""
        if title and self._deployment is not None and self._deployment.plan is not None:
            logger.info("wazo: checkpoint %r (restart pending)", title)

    def rollback_checkpoints(self, rollback: int = 1) -> None:
        """Back to the previous state: undo what this run installed, or else restore the state
        before the last deployment.

        :raises errors.PluginError: nothing to roll back to, or the restore failed
        """
        deployment = self._get_deployment()
        try:
            if deployment.plan is not None:
                deployment.abort()
            elif self._nothing_to_roll_back:
                logger.info("wazo: already rolled back in this run")
            else:
                deployment.restore(deployment.journal.previous, "Restored the previous state")
        except WazoError as exc:
            raise errors.PluginError(str(exc)) from None
        except OSError as exc:
            raise errors.PluginError(_oserror(exc)) from None

    def recovery_routine(self) -> None:
        """Undo what this run installed but did not restart."""
        if self._deployment is not None:
            try:
                self._deployment.abort()
            except WazoError as exc:
                raise errors.PluginError(str(exc)) from None

    def config_test(self) -> None:
        """Check the host layout and commands are usable.

        :raises errors.MisconfigurationError: what is wrong, and how to fix it
        """
        deployment = self._get_deployment()
        host = deployment.host
        try:
            host.require_cert_dirs("--wazo-root")
            host.www_data_gid()
            generation = host.generation(self.conf("profile"))
            services.restart_commands(host, generation)
            if generation == LEGACY:
                services.update_config_command(host)
                host.conf_d_dirs()
            if not deployment.settings.probes and not host.endpoints():
                raise HostError(f"{host.root}: no TLS endpoint in the host's configuration "
                                "(give --wazo-probe ADDR:PORT)")
        except WazoError as exc:
            raise errors.MisconfigurationError(str(exc)) from None

    def restart(self) -> None:
        """Probe, restart, probe: activate what this run installed (rolled back on failure);
        with nothing installed, restart only when the endpoints do not serve the installed pair.

        :raises errors.MisconfigurationError: the new certificate failed and was rolled back
        """
        deployment = self._get_deployment()
        try:
            if deployment.plan is not None:
                try:
                    deployment.activate()
                except (WazoError, OSError):
                    # rolled back already, or its undo log is left for the next run: a
                    # rollback_checkpoints now would restore the state before the previous one
                    self._nothing_to_roll_back = True
                    raise
            else:
                try:
                    deployment.refresh()
                except (WazoError, OSError):
                    self._nothing_to_roll_back = True  # nothing of this run to roll back
                    raise
        except WazoError as exc:
            raise errors.MisconfigurationError(str(exc)) from None
        except OSError as exc:
            raise errors.MisconfigurationError(_oserror(exc)) from None

    # -- helpers ------------------------------------------------------------------------------
    def _get_deployment(self) -> Deployment:
        if self._deployment is None:
            try:
                settings = options.settings(
                    root=self.conf("root"), profile=self.conf("profile"),
                    hostname=self.conf("hostname"), probe=self.conf("probe"),
                    probe_timeout=self.conf("probe-timeout"),
                    force_profile=self.conf("force-profile"))
            except ValueError as exc:
                raise errors.MisconfigurationError(str(exc)) from None
            self._deployment = Deployment(settings, notify=_notify)
        return self._deployment


# certbot before 1.18 (Debian 11 has 1.12) finds plugins through zope.interface only: the class
# must provide IPluginFactory or it is skipped, and implement IInstaller to be offered as an
# installer (certbot/certbot v1.12.0 certbot/certbot/_internal/plugins/disco.py:
# PluginsRegistry._load_entry_point, PluginEntryPoint.ifaces and .verify). certbot 1.18 added
# the ABC interfaces.Installer that common.Installer derives from, and discovery by it (v1.22.0
# disco.py: _provides); later releases keep IInstaller only as a shim, so test for the ABC.
if not hasattr(interfaces, "Installer"):  # pragma: no cover - certbot < 1.18
    _zope_interface: Any = importlib.import_module("zope.interface")
    _zope_interface.implementer(interfaces.IInstaller)(WazoInstaller)
    _zope_interface.provider(interfaces.IPluginFactory)(WazoInstaller)


def _notify(message: str) -> None:
    display_util.notify(message)


def _oserror(exc: OSError) -> str:
    return f"{exc.filename or 'certbot-wazo'}: {exc.strerror or exc} (fix it, then run again)"
