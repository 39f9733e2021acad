"""The certbot installer plugin `wazo`: certbot's API on one side, the deployment transaction on the other."""
from __future__ import annotations

import functools
import importlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union, cast

from acme import challenges
from certbot import achallenges, errors, interfaces
from certbot.display import util as display_util
from certbot.plugins import common

from certbot_wazo import fleet, http01, options, services
from certbot_wazo.deployment import Deployment
from certbot_wazo.errors import HostError, LockBusyError, WazoError
from certbot_wazo.host import LEGACY

logger = logging.getLogger(__name__)


F = TypeVar("F", bound=Callable[..., Any])


def _timed(method: F) -> F:
    """Log how long certbot spent in this method of the plugin (certbot's debug log: `make
    bench` reads the plugin's own cost on a renewal from it)."""
    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        try:
            return method(*args, **kwargs)
        finally:
            logger.debug("certbot-wazo: %s took %.4f s", method.__name__,
                         time.monotonic() - began)
    return cast(F, timed)


# certbot before 1.18 (Debian 11 has 1.12) has no ABC for authenticators: there the class is
# declared an IAuthenticator through zope.interface (see the end of this module).
if TYPE_CHECKING or hasattr(interfaces, "Authenticator"):
    _Authenticator = interfaces.Authenticator
else:  # pragma: no cover - certbot < 1.18
    class _Authenticator:
        """Nothing: certbot < 1.18 finds authenticators through zope.interface."""


class WazoInstaller(common.Installer, _Authenticator, interfaces.RenewDeployer):
    """Install certificates into a Wazo (formerly XiVO) telephony server, and answer HTTP-01
    challenges through its own nginx (`--configurator wazo`)."""

    description = ("Wazo (XiVO) telephony server: answer HTTP-01 through Wazo's nginx, install "
                   "the certificate, configure the services, restart them only after a TLS "
                   "probe, roll back on failure")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deployments: Optional[list[Deployment]] = None
        self._deployed: set[tuple[str, str]] = set()
        self._nothing_to_roll_back = False
        self._responders: list[http01.Responder] = []

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
        add("ssh", default=None, help="Deploy over SSH to this Wazo host, [USER@]HOST (a "
            "comma-separated list for an HA pair or several hosts, each its own transaction); "
            "--wazo-root is then a path on it. Uses this machine's ssh client and its "
            "configuration (keys, agent, known_hosts). Kept for renewals.")
        add("ssh-config", default=None, help="An ssh client configuration file (ssh -F) for "
            "--wazo-ssh.")
        add("sudo", default=False, action="store_true", help="With --wazo-ssh: log in as an "
            "unprivileged user and run every command on the host with sudo -n (hosts with "
            "PermitRootLogin no). Kept for renewals.")

    # -- plugin -------------------------------------------------------------------------------
    def more_info(self) -> str:
        return ("Installs the certificate into a Wazo host's certificate directory with the "
                "permissions its services need, points the services at the certificate's name, "
                "probes TLS before and after restarting them and rolls back when the probe "
                f"fails. Wazo root: {self.conf('root')}.")

    @_timed
    def prepare(self) -> None:
        """Check the host can be deployed to; finish any interrupted deployment.

        During `certbot renew` a failing prepare() silently drops the installer, so it fails
        only when the host really cannot be deployed to.

        :raises errors.NoInstallationError: no Wazo host under --wazo-root
        :raises errors.MisconfigurationError: the options are invalid
        """
        for deployment in self._get_deployments():
            host = deployment.host
            if not host.root.is_dir():
                raise errors.NoInstallationError(f"{host.root}: no such directory (give the "
                                                 "Wazo root with --wazo-root)")
            try:
                host.require_cert_dirs("--wazo-root")
            except HostError as exc:
                raise errors.NoInstallationError(deployment.access.describe(str(exc))) from None
            try:
                deployment.recover_if_idle(wait=0.0)
            except LockBusyError:
                logger.info("Another deployment is running; it will finish its own work")
            except (WazoError, OSError) as exc:
                logger.warning("Could not finish an interrupted deployment yet: %s",
                               deployment.access.describe(str(exc)))
            deployment.observe_early()  # overlaps certbot's ACME exchange
            try:  # HTTP-01 answers a killed run left in nginx
                http01.Responder(host, port=self.config.http01_port).withdraw()
            except (WazoError, OSError) as exc:
                logger.warning("%s", deployment.access.describe(str(exc)))

    # -- authenticator ------------------------------------------------------------------------
    def get_chall_pref(self, domain: str) -> list[type[challenges.Challenge]]:
        """HTTP-01 only: Wazo's nginx owns port 80."""
        return [challenges.HTTP01]

    @_timed
    def perform(self, achalls: list[achallenges.AnnotatedChallenge]
                ) -> list[challenges.ChallengeResponse]:
        """Answer every challenge from each host's nginx (a location snippet where its site
        includes them, `nginx -t`, graceful reload), once nginx is seen serving them.

        :raises errors.PluginError: nginx cannot answer; nothing is left in its configuration
        """
        responses: list[challenges.ChallengeResponse] = []
        answers: dict[str, tuple[str, str]] = {}
        for achall in achalls:
            name = _identifier(achall)
            if not isinstance(achall, achallenges.KeyAuthorizationAnnotatedChallenge) or \
                    not isinstance(achall.chall, challenges.HTTP01):
                raise errors.PluginError(f"wazo: {name}: only HTTP-01 is supported")
            response, validation = achall.response_and_validation()
            answers[achall.chall.encode("token")] = (name, validation)
            responses.append(response)
        for deployment in self._get_deployments():
            responder = http01.Responder(deployment.host, port=self.config.http01_port)
            self._responders.append(responder)
            try:
                place = responder.publish(answers)
            except ValueError as exc:  # the CA's token is not base64url
                raise errors.PluginError(f"wazo: {exc}") from None
            except WazoError as exc:
                raise errors.PluginError(deployment.access.describe(str(exc))) from None
            except OSError as exc:
                raise errors.PluginError(_oserror(exc)) from None
            logger.info("wazo: HTTP-01 answers served from %s",
                        deployment.access.describe(str(deployment.host.path(place.snippet))))
        return responses

    def auth_hint(self, failed_achalls: list[achallenges.AnnotatedChallenge]) -> str:
        """What to check when the CA could not fetch the answers nginx served on loopback."""
        port = self.config.http01_port
        return (f"The wazo plugin served the answers from this host's nginx (checked on "
                f"loopback, port {port} or the HTTPS server it redirects to). Make sure the "
                f"name resolves to this host and that port {port} (and 443, where port "
                f"{port} redirects) is reachable from the Internet: firewall, NAT, or another "
                "server in front. Otherwise use --preferred-challenges dns with a DNS plugin.")

    @_timed
    def cleanup(self, achalls: list[achallenges.AnnotatedChallenge]) -> None:
        """Take the answers out of nginx again (certbot calls this even when it fails).

        :raises errors.PluginError: a snippet could not be removed
        """
        failures = []
        while self._responders:
            responder = self._responders.pop()
            try:
                responder.withdraw()
            except (WazoError, OSError) as exc:
                failures.append(responder.host.access.describe(str(exc)))
        if failures:
            raise errors.PluginError("; ".join(failures))

    # -- installer ----------------------------------------------------------------------------
    def get_all_names(self) -> set[str]:
        """The names this Wazo answers to (FQDN, hostname, nginx server names, certificate)."""
        return self._get_deployment().host.names()

    @_timed
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

    @_timed
    def renew_deploy(self, lineage: Any, *args: Any, **kwargs: Any) -> None:
        """Install a renewed lineage (certbot never calls deploy_cert on renew).

        :raises errors.PluginError: the pair or the host is unusable; nothing was changed
        """
        self._install(lineage.fullchain_path, lineage.key_path, remember=True)

    def _install(self, fullchain: str, key: str, remember: bool) -> None:
        if (fullchain, key) in self._deployed:
            return
        for deployment in self._get_deployments():
            try:
                if deployment.plan is None:
                    deployment.install(Path(fullchain), Path(key), remember)
            except WazoError as exc:
                raise errors.PluginError(deployment.access.describe(str(exc))) from None
            except OSError as exc:
                raise errors.PluginError(_oserror(exc)) from None
        self._deployed.add((fullchain, key))

    def enhance(self, domain: str, enhancement: str,
                options: Optional[Union[list[str], str]] = None) -> None:
        raise errors.PluginError(f"wazo: enhancement {enhancement} is not supported (Wazo's "
                                 "nginx already redirects HTTP to HTTPS)")

    def supported_enhancements(self) -> list[str]:
        return []

    @_timed
    def save(self, title: Optional[str] = None, temporary: bool = False) -> None:
        """The installed files are already durable in the deployment journal; log the checkpoint."""
        if title and any(d.plan is not None for d in self._deployments or []):
            logger.info("wazo: checkpoint %r (restart pending)", title)

    @_timed
    def rollback_checkpoints(self, rollback: int = 1) -> None:
        """Back to the previous state: undo what this run installed, or else restore the state
        before the last deployment.

        :raises errors.PluginError: nothing to roll back to, or the restore failed
        """
        for deployment in self._get_deployments():
            try:
                if deployment.plan is not None:
                    deployment.abort()
                elif self._nothing_to_roll_back:
                    logger.info("wazo: already rolled back in this run")
                else:
                    deployment.restore(deployment.journal.previous, "Restored the previous state")
            except WazoError as exc:
                raise errors.PluginError(deployment.access.describe(str(exc))) from None
            except OSError as exc:
                raise errors.PluginError(_oserror(exc)) from None

    @_timed
    def recovery_routine(self) -> None:
        """Undo what this run installed but did not restart."""
        for deployment in self._deployments or []:
            try:
                deployment.abort()
            except WazoError as exc:
                raise errors.PluginError(deployment.access.describe(str(exc))) from None

    @_timed
    def config_test(self) -> None:
        """Check the host layout and commands are usable.

        :raises errors.MisconfigurationError: what is wrong, and how to fix it
        """
        for deployment in self._get_deployments():
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
                raise errors.MisconfigurationError(deployment.access.describe(str(exc))) \
                    from None

    @_timed
    def restart(self) -> None:
        """Probe, restart, probe: activate what this run installed (rolled back on failure);
        with nothing installed, restart only when the endpoints do not serve the installed pair.

        :raises errors.MisconfigurationError: the new certificate failed and was rolled back
        """
        failures = []
        for deployment in self._get_deployments():
            try:
                if deployment.plan is not None:
                    deployment.activate()
                else:
                    deployment.refresh()
            except WazoError as exc:
                failures.append(deployment.access.describe(str(exc)))
            except OSError as exc:
                failures.append(_oserror(exc))
        if failures:
            # Each failed host rolled back already (or its undo log is left for the next run),
            # and the others keep the new pair: a rollback_checkpoints now would restore the
            # state before the previous one.
            self._nothing_to_roll_back = True
            raise errors.MisconfigurationError("; ".join(failures))

    # -- helpers ------------------------------------------------------------------------------
    def _get_deployment(self) -> Deployment:
        return self._get_deployments()[0]

    def _get_deployments(self) -> list[Deployment]:
        """One deployment per host (this one, or each --wazo-ssh host), made once.

        :raises errors.MisconfigurationError: an option is invalid, or a host unreachable
        """
        if self._deployments is None:
            try:
                remotes: list[Optional[str]] = list(
                    options.destinations([self.conf("ssh") or ""], prefix="--wazo-"))
                settings = [options.settings(
                    root=self.conf("root"), profile=self.conf("profile"),
                    hostname=self.conf("hostname"), probe=self.conf("probe"),
                    probe_timeout=self.conf("probe-timeout"),
                    force_profile=self.conf("force-profile"), ssh=remote,
                    ssh_config=self.conf("ssh-config"),
                    sudo=bool(self.conf("sudo"))) for remote in remotes or [None]]
            except ValueError as exc:
                raise errors.MisconfigurationError(str(exc)) from None
            made: list[Deployment] = []
            try:
                for one in settings:
                    made.append(fleet.open_deployment(one, notify=_prefixed(one.ssh)))
            except WazoError as exc:
                for deployment in made:
                    deployment.close()
                raise errors.MisconfigurationError(str(exc)) from None
            self._deployments = made
        return self._deployments


# certbot before 1.18 (Debian 11 has 1.12) finds plugins through zope.interface only: the class
# must provide IPluginFactory or it is skipped, and implement IInstaller to be offered as an
# installer (certbot/certbot v1.12.0 certbot/certbot/_internal/plugins/disco.py:
# PluginsRegistry._load_entry_point, PluginEntryPoint.ifaces and .verify). certbot 1.18 added
# the ABC interfaces.Installer that common.Installer derives from, and discovery by it (v1.22.0
# disco.py: _provides); later releases keep IInstaller only as a shim, so test for the ABC.
if not hasattr(interfaces, "Installer"):  # pragma: no cover - certbot < 1.18
    _zope_interface: Any = importlib.import_module("zope.interface")
    _zope_interface.implementer(interfaces.IInstaller)(WazoInstaller)
    _zope_interface.implementer(interfaces.IAuthenticator)(WazoInstaller)
    _zope_interface.provider(interfaces.IPluginFactory)(WazoInstaller)


def _identifier(achall: achallenges.AnnotatedChallenge) -> str:
    """The name a challenge is for (certbot 5 names it identifier, earlier ones domain).

    :raises errors.PluginError: an IP address (Wazo's nginx answers for names)
    """
    identifier = getattr(achall, "identifier", None)
    if identifier is None:
        return str(achall.domain)
    if str(getattr(identifier.typ, "name", identifier.typ)) != "dns":
        raise errors.PluginError(f"wazo: {identifier.value}: only DNS names can be validated "
                                 "through Wazo's nginx (use another authenticator)")
    return str(identifier.value)


def _notify(message: str) -> None:
    display_util.notify(message)


def _prefixed(destination: Optional[str]) -> Callable[[str], None]:
    """What a remote host's deployment says, naming the host."""
    if destination is None:
        return _notify
    return lambda message: _notify(message if message.startswith(destination)
                                   else f"{destination}: {message}")


def _oserror(exc: OSError) -> str:
    return f"{exc.filename or 'certbot-wazo'}: {exc.strerror or exc} (fix it, then run again)"
