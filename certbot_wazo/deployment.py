"""The deployment transaction over a Wazo host: validate, stage, install, configure, probe, restart,
probe, then commit or roll back.

The phases, as the undo log ROOT/var/lib/certbot-wazo/transaction records them (records.Phase),
and what the next run does when a deployment is interrupted in each (killed, power cut). Every
command recovers first (`_recover`), and certbot-wazo-recover.service does it at boot.

=============  ==========================================  ======================================
phase          what is going on                            interrupted: the next run
=============  ==========================================  ======================================
(none)         validate the pair, stage the plan           nothing was written: nothing to do
INSTALLING     the undo log holds what every path held;    puts every path back, renders
               files are written, xivo-update-config       /etc/hosts again; nothing was
               renders /etc/hosts                          restarted, nothing is
INSTALLED      every file written; a deployment's pair      the same pair rolls forward (restart,
               passed a TLS handshake before any restart   probe, commit); else as INSTALLING
               (revert and restore have no such probe)
RESTARTING     the services restart on the new files,      the same pair rolls forward (commit
               then every endpoint is probed               without restart if every endpoint
                                                           serves it); else the files go back
                                                           and the services restart on them
                                                           (not when they still serve them)
(committed)    the undo log became `previous`; what was    nothing to do
               written is remembered (written.json)
=============  ==========================================  ======================================

At boot (`recover --boot`, services not started yet) the files are put back whatever the phase,
and the phase becomes INSTALLING: the next run renders /etc/hosts and clears the undo log.

One code path applies a plan and undoes it (`_put_in_place`, `_activate`, `_undo`): deploy,
rollback, revert and restore all go through it. Each public entry point holds the host's lock
for its whole run (`_locked`); install() hands it on to activate() or abort() when it leaves a
plan pending (certbot calls deploy_cert, then restart, in one process).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Optional, Sequence

from cryptography.hazmat.primitives.serialization import Encoding

from certbot_wazo import desired, directories, discovery, failpoints, records, services, tls
from certbot_wazo.access import Access, LocalAccess
from certbot_wazo.errors import (
    CommandError,
    HostError,
    PairError,
    ProbeError,
    RolledBackError,
    SignalledError,
    WazoError,
)
from certbot_wazo.files import FILE, FileState, read_state
from certbot_wazo.host import HOSTS_CUSTOM, HOSTS_FILE, LEGACY, STATE_DIR, Host
from certbot_wazo.journal import Journal, Snapshot, digest
from certbot_wazo.pair import Pair, load_chain
from certbot_wazo.records import Failure, Phase, RecordError, SavedSettings, Transaction
from certbot_wazo.tls import Endpoint

logger = logging.getLogger(__name__)

Notify = Callable[[str], None]

# How long the gentle path (reloads, single restarts) gets before the documented restart.
GENTLE_PROBE_TIMEOUT = 15.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the installer options, the command line and the hooks all configure."""

    root: Path = Path("/")
    profile: str = "auto"
    hostname: Optional[str] = None
    probes: tuple[Endpoint, ...] = ()
    probe_timeout: float = 60.0
    command_timeout: float = 300.0
    lock_timeout: float = 600.0
    # How the face the admin used spells the options (errors name them): "--" or "--wazo-".
    option_prefix: str = "--"
    # The admin confirmed a --profile that differs from what the host's configuration shows.
    force_profile: bool = False
    # Deploy over SSH to this destination ([USER@]HOST, as ssh takes it); root is then a path
    # on that host. ssh_config: a client configuration file for ssh -F.
    ssh: Optional[str] = None
    ssh_config: Optional[Path] = None
    # Log in as an unprivileged user and run every command on the host through `sudo -n`.
    sudo: bool = False


@dataclasses.dataclass
class Plan:
    """Everything a deployment will do, computed before anything is touched."""

    hostname: str
    generation: str
    changes: list[tuple[str, FileState]]
    update_config: bool
    restarts: list[list[str]]
    endpoints: list[Endpoint]
    expect_der: bytes
    verify: bool = True
    label: str = ""
    source: str = ""
    gentle: list[list[str]] = dataclasses.field(default_factory=list)
    # The services reach each other by NAME (upstream's overrides), so NAME must be on 127.0.0.1.
    loopback_name: bool = False
    # Directory definitions of the asterisk database to change (after the files), and whether a
    # column that no longer holds its old value fails the plan (deploy) or is left (restore).
    database: list[directories.Change] = dataclasses.field(default_factory=list)
    database_strict: bool = True
    # How many of the endpoints only observation found (listening, serving Wazo's pair, named
    # by no configuration certbot-wazo reads).
    observed: int = 0

    @property
    def restart_levels(self) -> list[list[list[str]]]:
        """The restarts to try in order: the gentle one (pair-only changes), then the documented."""
        return [self.gentle, self.restarts] if self.gentle else [self.restarts]

    @property
    def empty(self) -> bool:
        """Nothing to change: the host already has this pair and configuration."""
        return not self.changes and not self.update_config and not self.database

    def record(self, previous_der: bytes) -> Transaction:
        """What crash recovery needs to finish or undo this plan."""
        return Transaction(phase=Phase.INSTALLING, hostname=self.hostname,
                           generation=self.generation, update_config=self.update_config,
                           restarts=self.restarts, gentle=self.gentle,
                           endpoints=list(self.endpoints), previous_leaf=previous_der,
                           new_leaf=self.expect_der, label=self.label, verify=self.verify,
                           written={path: digest(state) for path, state in self.changes},
                           database=[c.to_json() for c in self.database])

    @classmethod
    def recorded(cls, record: Transaction, source: str) -> Plan:
        """The plan an undo log recorded (its file changes are in the undo log itself)."""
        return cls(hostname=record.hostname, generation=record.generation, changes=[],
                   update_config=record.update_config, restarts=record.restarts,
                   endpoints=record.endpoints, expect_der=record.new_leaf, verify=record.verify,
                   label=record.label, source=source, gentle=record.gentle,
                   database=[directories.Change(**c) for c in record.database])


class Deployment:
    """One deployment onto one host; the plugin, the command line and the hooks all use it."""

    def __init__(self, settings: Settings, notify: Notify = logger.info,
                 access: Optional[Access] = None) -> None:
        """:param access: how the host is reached (default: this machine's own files); a remote
            host's comes from the face that chose it (fleet.open_deployment)
        :raises ValueError: settings name a remote host and no access to it is given
        """
        self.settings = settings
        if access is None and settings.ssh:
            raise ValueError(f"{settings.ssh}: a remote host needs its access "
                             "(fleet.open_deployment opens it)")
        self.access: Access = access or LocalAccess()
        self.host = Host(self.access.local_root(settings.root), self.access)
        self.notify: Notify = lambda message: notify(self.access.describe(message))
        self.journal = Journal(self.host.path(STATE_DIR), self.host.path, self.access)
        # Installed and probed, waiting for activate() or abort(); it holds the lock meanwhile.
        self.plan: Optional[Plan] = None
        self._lock: Optional[ContextManager[None]] = None
        self._depth = 0  # how many public entry points are running (they call each other)
        self._source: tuple[Path, Path, bool] = (Path(), Path(), False)
        self._names: list[str] = []  # the DNS names of the pair being deployed
        self._early: Optional[discovery.Early] = None  # see observe_early()
        self._root_option = f"{settings.option_prefix}root"

    # -- the lock -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, wait: Optional[float] = None) -> Iterator[None]:
        """The host's lock for one public entry point: taken on entry unless held already (a
        pending plan holds it from install() to activate()), let go when the outermost entry
        point ends, unless it leaves a plan pending.

        :raises HostError: the root is not a Wazo host (no state is created under it)
        :raises LockBusyError: another deployment still holds it after wait (default
            settings.lock_timeout)
        """
        if self._lock is None:
            self.host.require_cert_dirs(self._root_option)  # no state under a mistyped root
            lock = self.journal.lock(self.settings.lock_timeout if wait is None else wait,
                                     self.notify)
            lock.__enter__()
            self._lock = lock
            if self.access.refresh():  # another run may have changed the host meanwhile
                self.host = Host(self.host.root, self.access)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            self.release()

    def close(self) -> None:
        """Let go of the lock (unless a plan is pending) and of the host's connection."""
        self.release()
        if self._lock is None:
            self.access.close()

    def release(self) -> None:
        """Let other deployments run, unless an entry point is running or a plan is pending."""
        if self._lock is not None and self._depth == 0 and self.plan is None:
            lock, self._lock = self._lock, None
            lock.__exit__(None, None, None)

    # -- the flow -----------------------------------------------------------------------------
    def run(self, cert: Path, key: Path, remember: bool = False) -> bool:
        """Deploy a pair from start to end.

        :param remember: on failure, remember the pair so that retry() deploys it later
            (renewals: nobody is watching)
        :returns: False when the pair and configuration were already in place (nothing done)
        :raises WazoError: nothing was changed (bad input, unusable host)
        :raises RolledBackError: the new pair failed after the restart; the previous one is back
        """
        if not self.install(cert, key, remember):
            return False
        self.activate()
        return True

    def retry(self) -> Optional[bool]:
        """Deploy the remembered failed deployment, if any.

        :returns: None when there is nothing to retry, else as run()
        :raises WazoError: it failed again (it stays remembered)
        """
        self.recover_if_idle()
        record = self.failure_to_retry()
        if record is None:
            self.notify("No failed deployment to retry")
            return None
        self.notify(f"Retrying the deployment of {record.cert} that failed at "
                    f"{record.failed_at}: {record.error}")
        return self.run(Path(record.cert), Path(record.key), remember=True)

    def failure_to_retry(self) -> Optional[Failure]:
        """The failed deployment to retry: the host's record, or in remote mode this machine's
        ledger (a host's record never names a file of this machine: one that disagrees is
        refused).

        :raises HostError: the host's record names another pair than the ledger
        :raises RecordError: a record is damaged
        """
        ledger = self.access.ledger
        if ledger is None:
            return self.journal.failure()
        entry = ledger.trusted()
        mine = entry.failure if entry is not None else None
        try:
            theirs = self.journal.failure()
        except RecordError:
            theirs = None  # the host's damaged record chooses nothing either
        if theirs is not None and (mine is None or (theirs.cert, theirs.key)
                                   != (mine.cert, mine.key)):
            raise HostError(f"{self.journal.failure_path}: names {theirs.cert}, a pair this "
                            f"controller did not record as failed on {ledger.destination} "
                            f"({ledger.path}); a host's record never chooses this machine's "
                            "files (deploy the pair again: certbot-wazo deploy --ssh "
                            f"{ledger.destination} --cert … --key …)")
        return mine

    def install(self, cert: Path, key: Path, remember: bool = False) -> bool:
        """Validate, stage, install, configure and probe before any restart.

        On failure every file is put back and nothing is restarted. When it returns True the
        lock is kept for activate() or abort().

        :returns: False when there is nothing to do
        :raises WazoError: what is wrong, the host left as it was
        """
        self._source = (cert, key, remember)
        try:
            done = self._install(cert, key)
        except PairError:
            raise  # the pair itself is bad: retrying it cannot help, nothing to remember
        except SignalledError as exc:
            raise SignalledError(f"{cert}: {exc} before any restart; nothing was changed (run "
                                 "the command again)") from None
        except WazoError as exc:
            self._remember_failure(exc)
            raise
        if not done:
            self._forget_failure()
        return done

    def _install(self, cert: Path, key: Path) -> bool:
        pair = Pair.load(cert, key)                                      # validate
        self._names = list(pair.names)
        pair.check_order()
        hostname = self.settings.hostname or self._default_name(pair)
        pair.check(hostname)
        self._check_profile(self.host.generation(self.settings.profile))  # before any write
        with self._locked():
            forward = self._roll_forward(pair)
            if forward is not None:
                return forward
            self._recover()
            plan = self._stage(pair, hostname)                           # stage
            if plan.empty:
                self.notify(f"{hostname}: this certificate (sha256 {pair.fingerprint[:16]}…) is "
                            "already deployed; nothing changed, nothing restarted")
                return False
            self._put_in_place(plan, lambda: self._probe_before_restart(plan, pair))
            self.plan = plan
        self.notify(f"Installed the certificate for {hostname} ({plan.generation} Wazo); "
                    "it passed a TLS handshake before any restart")
        return True

    def _put_in_place(self, plan: Plan, probe: Optional[Callable[[], None]] = None) -> None:
        """INSTALLING, then INSTALLED: save the undo log, write every change (install,
        configure), probe before any restart; on failure put every path back (no restart).

        :raises WazoError: what failed; the host is as it was
        """
        logger.debug(  # pragma: no mutate block
            "%s for %s (%s): %d change(s) %s; xivo-update-config: %s; restarts: %s; gentle: %s; "
            "endpoints: %s", plan.label, plan.hostname, plan.generation, len(plan.changes),
            [p for p, _ in plan.changes], plan.update_config, plan.restarts, plan.gentle,
            [str(e) for e in plan.endpoints])
        try:
            self._begin(plan)
        except WazoError:
            self._drop_unused_undo_log()
            raise
        try:
            self._apply(plan)                                            # install, configure
            if probe is not None:
                probe()                                                  # probe
            self.journal.phase(Phase.INSTALLED)
        except WazoError:
            self._undo(restarted=False)
            raise

    def _roll_forward(self, pair: Pair) -> Optional[bool]:
        """Finish an interrupted deployment of this same pair instead of undoing it and doing it
        again (each would restart every service): when it had passed its pre-restart probe,
        its files are complete; if the services already serve it, only the commit is left,
        otherwise one restart.

        :returns: None when there is nothing to roll forward (_recover() undoes it instead);
            True when a restart is pending (activate() does it); False when it was committed
        """
        if self.plan is not None:
            return None
        try:
            record = self.journal.open_transaction()
        except WazoError:
            return None  # an undo log it cannot read: _recover() says what is wrong
        if record is None or record.phase == Phase.INSTALLING or \
                record.new_leaf != pair.leaf_der:
            return None
        plan = self._recorded(record, str(pair.cert_path))
        self.notify(f"{self.journal.transaction.path}: a deployment of this certificate was "
                    f"interrupted while {record.phase.value}; finishing it")
        if record.phase == Phase.RESTARTING and tls.describe_failures(self._probe(
                plan.endpoints, plan.hostname, plan.expect_der, 1.0, plan.verify)) is None:
            self.journal.commit()
            self._forget_failure()
            self.notify(f"{plan.label} for {plan.hostname}: every endpoint already serves it; "
                        "committed without a restart")
            return False
        self.plan = plan
        return True

    def activate(self) -> None:
        """Restart, probe every endpoint, then commit; on failure roll back and restart again.

        :raises RolledBackError: the previous pair and configuration were restored
        """
        if self.plan is None:
            raise WazoError("no deployment is pending (deploy a certificate first)")
        with self._locked():
            self._activate()

    def _activate(self) -> None:
        """RESTARTING: restart, probe, then commit, or roll back (undo and restart again)."""
        plan = self.plan
        if plan is None:
            raise WazoError("no deployment is pending (deploy a certificate first)")
        self.plan = None
        try:
            self.journal.phase(Phase.RESTARTING)
        except WazoError:
            self._undo(restarted=False)
            raise
        interrupted: Optional[SignalledError] = None
        logger.debug("restarting: %s", plan.restart_levels)  # pragma: no mutate block
        try:
            failure, _ = self._restart_and_probe(plan.restart_levels, plan.endpoints,  # restart,
                                                 plan.hostname, plan.expect_der,  # probe
                                                 plan.verify)
        except SignalledError as exc:  # the restart command was left to finish first
            failure, interrupted = str(exc), exc
        if failure is None:                                              # commit
            self.journal.commit()
            self._forget_failure()
            found = f" ({len(plan.endpoints) - plan.observed} named by the configuration, " \
                f"{plan.observed} found listening)" if plan.observed else ""
            self.notify(f"{plan.label} for {plan.hostname}: {len(plan.endpoints)} TLS "
                        f"endpoint(s) verified after the restart{found}")
            return
        self.notify(f"The new certificate failed after the restart: {failure}. Restoring the "
                    "previous certificate and configuration.")
        error: WazoError = RolledBackError(
            f"{plan.source or self.host.root}: not deployed, the previous certificate was "
            f"restored ({failure}; fix that service, then run again)")
        if interrupted is not None:
            error = SignalledError(f"{plan.source or self.host.root}: {interrupted} during the "
                                   "restart; the previous certificate was restored and the "
                                   "services restarted on it (run the command again)")
        try:                                                             # roll back
            self._undo(restarted=True)
        except WazoError as exc:
            self._remember_failure(exc)
            raise
        self._remember_failure(error)
        raise error

    def abort(self) -> None:
        """Undo an installed deployment that was not activated (nothing was restarted)."""
        if self.plan is None:
            return  # nothing installed: no lock taken, nothing written
        with self._locked():
            self.plan = None
            self._undo(restarted=False)
            self.notify("Rolled back the certificate installed in this run")

    def recover(self, boot: bool = False) -> bool:
        """Bring back the state before an interrupted deployment (killed, power cut).

        :param boot: the services are not running yet (early boot): only put the files back,
            so that they start on the previous pair; the next run re-renders /etc/hosts and
            clears the undo log
        :returns: whether there was one
        :raises LockBusyError: another deployment is running
        """
        with self._locked():
            return self._recover(boot)

    def _recover(self, boot: bool = False) -> bool:
        if self.plan is not None:
            return False
        record = self.journal.open_transaction()
        if record is None:
            return False
        phase = record.phase.value
        if boot:
            self.notify(f"{self.journal.transaction.path}: a deployment was interrupted while "
                        f"{phase}; putting the previous files back before the services start")
            self.journal.restore(self.journal.transaction)
            self.journal.phase(Phase.INSTALLING)
            return True
        self.notify(f"{self.journal.transaction.path}: a deployment was interrupted while "
                    f"{phase}; restoring the state before it")
        self._undo(restarted=record.phase == Phase.RESTARTING)
        return True

    def recover_database(self) -> bool:
        """At boot, once PostgreSQL runs and before wazo-dird starts: put back the directory
        definitions of an interrupted deployment (`recover --boot` put its files back before
        the database could be reached); the next run finishes the rest.

        :returns: whether there were any
        :raises WazoError: the database cannot be reached, or another deployment runs
        """
        if not self.journal.transaction.exists():
            return False
        with self._locked():
            record = self.journal.open_transaction()
            if record is None or not record.database:
                return False
            self.notify(f"{self.journal.transaction.path}: a deployment was interrupted; "
                        "putting the directory definitions back before wazo-dird starts")
            directories.apply(self.host, [directories.Change(**c).reverse()
                                          for c in reversed(record.database)],
                              False, self.settings.command_timeout)
            return True

    def recover_if_idle(self, boot: bool = False, wait: Optional[float] = None) -> bool:
        """recover(), waiting at most wait (default settings.lock_timeout) for the lock.

        :raises LockBusyError: another deployment is running
        """
        if not self.journal.transaction.exists():
            return False  # nothing to recover: no lock taken, nothing written
        with self._locked(wait):
            return self._recover(boot)

    def refresh(self) -> bool:
        """Probe the endpoints; restart only if one does not serve the installed pair, then probe.

        :returns: whether a restart was needed
        :raises ProbeError: an endpoint still does not serve the installed pair after the restart
        """
        with self._locked():
            self._recover()
            return self._refresh()

    def _refresh(self) -> bool:
        der = self._installed_leaf()
        if not der:
            raise HostError(f"{self.host.root}: no installed Wazo certificate to check "
                            "(check --wazo-root)")
        name = self.settings.hostname or "localhost"
        endpoints, _ = self.every_endpoint(name, [der])
        if tls.describe_failures(self._probe(endpoints, name, der, 1.0, verify=False)) is None:
            self.notify("Every endpoint serves the installed certificate; nothing to restart")
            return False
        failure = self._restart(services.restart_commands(
            self.host, self.host.generation(self.settings.profile), endpoints=endpoints))
        if failure is None:
            failure = tls.describe_failures(self._probe(
                endpoints, name, der, self.settings.probe_timeout, verify=False))
        if failure is not None:
            raise ProbeError(f"after restarting the services: {failure} (check the services' "
                             "logs)")
        self.notify("Restarted the services: every endpoint serves the installed certificate")
        return True

    def settle(self, timeout: float) -> bool:
        """Wait up to timeout for every endpoint to accept connections (services that were just
        started, e.g. by wazo-upgrade, take seconds to listen); restart nothing. An endpoint
        that listens but serves another certificate is not waited for.

        :returns: whether they all listen
        """
        try:
            pending = self.endpoints()
        except HostError:
            return False
        deadline = time.monotonic() + timeout
        while True:
            waiting = []
            for endpoint in pending:
                try:
                    self.access.connect(endpoint.address, endpoint.port, 1.0).close()
                except OSError:
                    waiting.append(endpoint)
            pending = waiting
            if not pending or time.monotonic() >= deadline:
                return not pending
            time.sleep(0.25)

    def revert(self) -> bool:
        """Back to the state before the first deployment (Wazo's own pair, no overrides, no
        custom hosts template); certbot-wazo then forgets the host.

        :returns: False when the host is already in that state
        :raises HostError: certbot-wazo never deployed here
        :raises RolledBackError: the original state failed its probe and was undone
        """
        return self.restore(self.journal.original, "Restored the original state", forget=True)

    def restore(self, snapshot: Snapshot, label: str, forget: bool = False) -> bool:
        """Put a saved state back (revert, rollback) as a transaction of its own.

        :returns: False when the host is already in that state
        :raises HostError: nothing is saved
        :raises RolledBackError: the restored state failed its probe and was undone
        """
        with self._locked():
            self._recover()
            if not snapshot.exists():
                raise HostError(f"{snapshot.path}: nothing saved to restore (certbot-wazo has "
                                "not deployed on this host)")
            entries, _ = snapshot.read()
            if forget:
                self._refuse_lost_edits(entries)
            plan = self._restoring(snapshot, entries, label)
            if plan.empty:
                self.notify(f"{snapshot.path}: the host already is in that state; nothing changed")
                if forget:
                    self._forget_host()
                return False
            self._put_in_place(plan)
            self.plan = plan
            self._activate()
            if forget:
                self._forget_host()
            return True

    def _restoring(self, snapshot: Snapshot, entries: list[tuple[str, FileState]],
                   label: str) -> Plan:
        """The plan that puts a snapshot's entries back (files before the directories that
        were created for them)."""
        generation = self.journal.saved_generation(snapshot) or \
            self.host.generation(self.settings.profile)
        changes = [(p, s) for p, s in reversed(entries) if read_state(self.host.path(p)) != s]
        crt = next((s for p, s in entries if p.endswith("/server.crt") and s.kind == FILE), None)
        der = _leaf_der(crt.data if crt else self._installed_chain(), snapshot.path)
        database = self._saved_directories(snapshot)
        hostname = self.host.fqdn() or "localhost"
        endpoints, extra = self.every_endpoint(hostname, [der])
        restarts = services.restart_commands(self.host, generation, directories=bool(database),
                                             endpoints=endpoints) if changes or database else []
        return Plan(hostname=hostname, generation=generation,
                    changes=changes, update_config=generation == LEGACY
                    and any(p == HOSTS_CUSTOM for p, _ in changes),
                    restarts=restarts, endpoints=endpoints, expect_der=der, verify=False,
                    label=label, source=str(snapshot.path), database=database,
                    database_strict=False, observed=len(extra))

    def _saved_directories(self, snapshot: Snapshot) -> list[directories.Change]:
        """The directory definitions' changes that put back what snapshot saved, for the
        columns that still hold what certbot-wazo wrote (an admin's later edit is kept)."""
        _, meta = snapshot.read()
        if snapshot.path == self.journal.original.path:
            saved = records.Original.from_json(meta, snapshot.path).database
        else:
            saved = Transaction.from_json(meta, snapshot.path).database
        if not saved:
            return []
        back = [directories.Change(**c).reverse() for c in reversed(saved)]
        try:
            return directories.pending(self.host, back, self.settings.command_timeout)
        except HostError as exc:  # never forget changes that could not be put back
            raise HostError(f"{exc} (the directory definitions certbot-wazo changed cannot be "
                            "put back now: start PostgreSQL, then run again; nothing was "
                            "changed)") from None

    def _forget_host(self) -> None:
        """After a revert: certbot-wazo keeps nothing about this host."""
        self.journal.original.remove()
        self.journal.previous.remove()
        self.journal.clear_failure()
        if self.journal.written_path.exists():
            self.access.apply_state(self.journal.written_path, FileState.absent())

    def _refuse_lost_edits(self, entries: list[tuple[str, FileState]]) -> None:
        """revert puts back what was there before the first deployment: a file an admin changed
        since certbot-wazo last wrote it (a mapping added to the custom hosts template, a key in
        custom-certificate.yml) would lose that change, so nothing is done.

        :raises HostError: such a file exists
        """
        try:
            written = self.journal.written()
        except RecordError as exc:
            raise HostError(f"{self.journal.written_path}: revert cannot tell the admin's later "
                            f"edits from certbot-wazo's ({exc}) (check the files it manages, "
                            f"then remove {self.journal.written_path} and run revert again; "
                            "nothing was changed)") from None
        edited = [path for path, _ in entries if path in written
                  and digest(read_state(self.host.path(path))) != written[path]]
        if edited:
            others = f" (and {len(edited) - 1} more)" if len(edited) > 1 else ""
            raise HostError(f"{self.host.path(edited[0])}{others}: changed since certbot-wazo "
                            "wrote it; revert would put back the version from before the first "
                            "deployment and lose that change (copy your change aside, undo it, "
                            "run revert, then make it again; nothing was changed)")

    # -- steps --------------------------------------------------------------------------------
    def _stage(self, pair: Pair, hostname: str) -> Plan:
        """Everything the deployment will change, restart and probe (desired.desired() is what
        status checks too).

        :raises WazoError: the host cannot take the pair as it is (nothing was changed)
        """
        state = desired.desired(self.host, pair, hostname, self.settings.profile)
        for note in state.notes:
            self.notify(note)
        if state.removing:
            self.notify(f"Removing the overrides of the pre-19.01 procedure, as upstream asks "
                        f"from 19.01 ({len(state.removing)} file(s); `certbot-wazo revert` puts "
                        "them back)")
        drift = state.drift()
        template = self.host.path(HOSTS_CUSTOM)
        update_config = any(path == template for path, _ in drift) or (
            state.overrides and self.host.resolves_to_loopback(hostname) is not None)
        changes = [(self._wazo_path(p), s) for p, s in _with_parents(state.files, self.host.root)
                   if read_state(p) != s]
        served_by_nginx, refused = desired.nginx_conflicts(self.host, pair.leaf_der, hostname)
        if refused:
            raise HostError(refused[0])
        endpoints, extra = self.every_endpoint(hostname, [pair.leaf_der], served_by_nginx)
        for warning in self.host.warnings:  # what Wazo would skip, what cannot be known
            self.notify(warning)
        database, lookups = self._directory_changes(pair, hostname)
        endpoints += self._lookup_endpoints(hostname, lookups, endpoints)
        # Removing the overrides is a configuration change of every daemon: upstream's revert
        # ends with `wazo-service restart all`.
        restarts = services.restart_commands(
            self.host, LEGACY if state.removing else state.generation,
            directories=bool(database), endpoints=endpoints) if changes or database else []
        pair_files = {path for path, _ in desired.pair_files(self.host, pair)}
        pair_only = bool(changes) and not update_config and not database and \
            all(self.host.path(p) in pair_files for p, _ in changes)
        # What serves the pair is read from the host's configuration even when --wazo-probe
        # names the endpoints to check.
        gentle = services.gentle_commands(
            self.host, [*self.host.endpoints(), *(o.endpoint for o in extra)]) \
            if pair_only and state.generation == LEGACY else []
        return Plan(hostname, state.generation, changes, update_config, restarts, endpoints,
                    pair.leaf_der, label=f"Deployed certificate sha256 {pair.fingerprint[:16]}…",
                    source=str(pair.cert_path), gentle=gentle, loopback_name=state.overrides,
                    database=database, observed=len(extra))

    def _directory_changes(self, pair: Pair,
                           hostname: str) -> tuple[list[directories.Change], list[int]]:
        """The directory definitions a CA-issued pair breaks, to change in this transaction
        (upstream's last manual step), and the ports they connect to; a database that cannot
        be read changes nothing."""
        if pair.leaf.issuer == pair.leaf.subject:
            return [], []
        try:
            found, ports = directories.changes(self.host, hostname,
                                               self.settings.command_timeout)
        except HostError as exc:
            self.notify(f"Directory definitions not checked: {exc}")
            return [], []
        if found:
            self.notify(f"Pointing {len(found)} setting(s) of the directory definitions at "
                        f"{hostname} and the system trust store (`certbot-wazo revert` puts "
                        "them back)")
        return found, ports

    def _lookup_endpoints(self, hostname: str, ports: list[int],
                          known: list[Endpoint]) -> list[Endpoint]:
        """Where the changed definitions' TLS connections go (NAME is on 127.0.0.1), beyond
        the endpoints probed anyway; a port where nothing serves TLS now is said, not probed
        (the definition did not work before either)."""
        found = []
        for port in ports:
            if any(port == e.port for e in known):
                continue
            endpoint = Endpoint("127.0.0.1", port, "wazo-dird lookups")
            if tls.serves_tls(endpoint, hostname, connect=self.access.connect):
                found.append(endpoint)
            else:
                self.notify(f"A directory definition connects to {hostname}:{port}, where "
                            "nothing serves TLS (it did not work before this deployment either: "
                            "check its port in Configuration → Directories)")
        return found

    def _check_profile(self, generation: str) -> None:
        """A forced profile that is not the host's own changes what is restarted (legacy
        restarts everything, asterisk included: live calls drop): only when confirmed.

        :raises HostError: not confirmed
        """
        detected = self.host.generation()
        if generation == detected or self.settings.force_profile:
            return
        prefix = self.settings.option_prefix
        effect = ("writes the services' overrides and restarts every service, asterisk "
                  "included" if generation == LEGACY else "leaves the daemons verifying "
                  "server.crt, which the new certificate breaks")
        raise HostError(f"{self.host.root}: {prefix}profile {generation}, but this host's "
                        f"configuration is {detected}: that {effect} (drop {prefix}profile, or "
                        f"confirm with {prefix}force-profile)")

    def _default_name(self, pair: Pair) -> str:
        """The certificate's name that is this host's: its FQDN, else a name its configuration
        already uses (the overrides, nginx, /etc/hostname, the installed certificate), else the
        certificate's only name.

        :raises PairError: the certificate has several names and none is this host's
        """
        candidates = [n for n in pair.names if not n.startswith("*.")]
        picked = self.host.pick_name(candidates)
        if picked is not None:
            return picked
        pair.default_hostname()  # no usable name at all: that error says so
        raise PairError(
            f"{pair.cert_path}: the certificate names {', '.join(candidates)} and none of them "
            f"is this host's name ({self.host.fqdn() or 'unknown'}, from /etc/xivo/common.conf)"
            f" (give {self.settings.option_prefix}hostname NAME: the name phones and services "
            "use to reach this PBX)")

    def endpoints(self) -> list[Endpoint]:
        """The TLS endpoints to probe: the probe option's, else those the host's configuration
        names (status checks the same ones).

        :raises HostError: none (give them with the probe option)
        """
        endpoints = list(self.settings.probes) or self.host.endpoints()
        if not endpoints:
            raise HostError(f"{self.host.root}: no TLS endpoint serving the Wazo certificate was "
                            "found in the host's configuration (give them with "
                            f"{self.settings.option_prefix}probe ADDR:PORT)")
        return endpoints

    def observe_early(self, quiet_after: Optional[float] = None) -> None:
        """Start observing what listens and what it serves in the background, for the name the
        installed pair gives this host (certbot prepares its installer before it talks to the
        ACME server: the next every_endpoint() then handshakes only what changed since)."""
        if self._early is not None or self.settings.ssh:  # one SSH connection, one thread
            return
        directories = self.host.cert_dirs()
        if not directories:
            return
        try:
            name = self.settings.hostname or self._default_name(
                Pair.load(directories[0] / "server.crt", directories[0] / "server.key"))
        except (WazoError, OSError, ValueError) as exc:
            logger.debug("no early observation: %s", exc)
            return
        try:
            configured = [e.port for e in self.endpoints()]
        except WazoError:
            configured = []
        self._early = discovery.Early(self.access.listeners, name, self.access.connect,
                                      quiet_after=quiet_after, configured=configured)

    def every_endpoint(self, name: str, leaves: Sequence[bytes],
                       also: Sequence[Endpoint] = (),
                       quiet_after: Optional[float] = None) -> tuple[list[Endpoint],
                                                               list[discovery.Observed]]:
        """The endpoints to probe (endpoints(), then also), and every port observed listening and
        serving one of Wazo's pairs that they leave out (each named by its systemd unit, with a
        warning: the configuration certbot-wazo reads does not name it).

        :param leaves: the pairs to look for besides the installed, original and previous ones
        :raises HostError: none at all, or an observed one that no systemd unit owns
        """
        endpoints = self.endpoints()
        endpoints += [e for e in also if all(e.port != known.port for known in endpoints)]
        try:
            found = self.access.listeners()
        except OSError as exc:  # /proc unreadable: the configuration alone, said
            self.notify(f"What listens on this host could not be observed ({exc}); probing "
                        "the endpoints its configuration names")
            found = []
        early, self._early = self._early, None
        observed = discovery.observe(found, [*leaves, *self._wazo_leaves()], name,
                                     connect=self.access.connect, early=early,
                                     quiet_after=quiet_after,
                                     configured={e.port for e in endpoints})
        extra = discovery.beyond(endpoints, observed)
        discovery.require_units(extra)
        for warning in discovery.describe(extra):
            self.notify(warning)
        return endpoints + [o.endpoint for o in extra], extra

    def _wazo_leaves(self) -> list[bytes]:
        """Every pair certbot-wazo knows as Wazo's on this host: installed now, before the first
        deployment (Wazo's self-signed one) and before the last one."""
        leaves = []
        for directory in self.host.cert_dirs():
            try:
                leaves.append(_leaf_der(read_state(directory / "server.crt").data, directory))
            except WazoError:
                continue
        for snapshot in (self.journal.original, self.journal.previous):
            try:
                entries = snapshot.read()[0] if snapshot.exists() else []
            except WazoError:
                continue
            for path, state in entries:
                if path.endswith("/server.crt") and state.kind == FILE:
                    with contextlib.suppress(WazoError):
                        leaves.append(_leaf_der(state.data, snapshot.path))
        return leaves

    def _probe(self, endpoints: list[Endpoint], name: str, expect: bytes, timeout: float,
               verify: bool = True) -> list[tls.ProbeResult]:
        """tls.probe_until, reaching the endpoints as the host itself does."""
        return tls.probe_until(endpoints, name, expect, timeout, verify,
                               connect=self.access.connect)

    def _drop_unused_undo_log(self) -> None:
        """The undo log of a transaction stopped before its first change: nothing to undo."""
        if self.journal.transaction.exists():
            self.journal.transaction.remove()

    def _begin(self, plan: Plan) -> None:
        record = plan.record(self._installed_leaf())
        # Commands as the host names them (a remote run's mirror is gone when the next run
        # reads the undo log).
        record = dataclasses.replace(
            record, restarts=[self.access.host_argv(a) for a in record.restarts],
            gentle=[self.access.host_argv(a) for a in record.gentle])
        self.journal.begin([p for p, _ in plan.changes], record)
        failpoints.hit("after-backup")

    def _recorded(self, record: Transaction, source: str) -> Plan:
        """The plan an undo log recorded, its commands as this run reaches them."""
        return Plan.recorded(dataclasses.replace(
            record, restarts=[self.access.local_argv(a) for a in record.restarts],
            gentle=[self.access.local_argv(a) for a in record.gentle]), source)

    def _apply(self, plan: Plan) -> None:
        for index, (path, state) in enumerate(plan.changes):
            self.access.apply_state(self.host.path(path), state)
            failpoints.hit(f"after-write-{index}")
        if plan.update_config:
            services.update_config(self.host, self.settings.command_timeout)
            failpoints.hit("after-update-config")
        if plan.database:  # in one database transaction, once the files are in place
            directories.apply(self.host, plan.database, plan.database_strict,
                              self.settings.command_timeout)
            failpoints.hit("after-database")

    def _probe_before_restart(self, plan: Plan, pair: Pair) -> None:
        directory = self.host.cert_dirs()[0]
        tls.probe_loopback(directory / "server.crt", directory / "server.key", plan.hostname,
                           pair.leaf_der)
        if plan.loopback_name:
            where = self.host.resolves_to_loopback(plan.hostname)
            if where is not None:
                raise ProbeError(f"{self.host.path(HOSTS_FILE)}: {plan.hostname} resolves to "
                                 f"{where}, not 127.0.0.1 (remove the entry that maps it "
                                 f"elsewhere from {self.host.path(HOSTS_CUSTOM)})")

    def _restart(self, restarts: list[list[str]]) -> Optional[str]:
        for argv in restarts:
            try:
                services.run_restart(self.host, argv, self.settings.command_timeout)
            except CommandError as exc:
                return str(exc)
        return None

    def _restart_and_probe(self, levels: list[list[list[str]]], endpoints: list[Endpoint],
                           name: str, expect: bytes, verify: bool) -> tuple[Optional[str], bool]:
        """Run each level of restarts, gentlest first, until every endpoint serves expect.

        :returns: the last failure (None when the probes passed), and whether it was a command
            that failed rather than a probe
        """
        failure: Optional[str] = None
        began = time.monotonic()
        for index, commands in enumerate(levels):
            last = index == len(levels) - 1
            failure = self._restart(commands)
            command_failed = failure is not None
            failpoints.hit("after-restart")
            if failure is None and expect:
                timeout = self.settings.probe_timeout if last else \
                    min(self.settings.probe_timeout, GENTLE_PROBE_TIMEOUT)
                failure = tls.describe_failures(
                    self._probe(endpoints, name, expect, timeout, verify))
                failpoints.hit("after-probe")
            if failure is None:
                # the services' own time (make bench counts the plugin's cost without it)
                logger.debug("certbot-wazo: restarted, and every endpoint back, in %.4f s",
                             time.monotonic() - began)
                return None, False
            if not last:
                self.notify(f"After reloading only what reads the certificate: {failure}; "
                            "restarting the services the documented way")
        return failure, command_failed

    def _undo(self, restarted: bool) -> None:
        """Restore the transaction's saved files; re-render hosts; restart and probe if needed.

        The undo log is kept when a command fails, so the next run tries again.

        :raises CommandError: xivo-update-config or the restart failed during the undo
        """
        record = self.journal.open_transaction()  # the commands and endpoints, once files are back
        if record is None:
            return
        plan = self._recorded(record, str(self.journal.transaction.path))
        previous = record.previous_leaf
        logger.debug(  # pragma: no mutate block
            "undoing %s (phase %s, restarted: %s)", self.journal.transaction.path,
            record.phase.value, restarted)
        endpoints, name = plan.endpoints, plan.hostname
        self.journal.restore(self.journal.transaction)
        if plan.update_config:
            try:
                services.update_config(self.host, self.settings.command_timeout)
            except CommandError as exc:  # the template is back; /etc/hosts follows next run
                self.notify(f"While restoring the previous hosts template: {exc}")
        database_failure = None
        if plan.database:  # never over an admin's later edit (strict=False)
            try:
                directories.apply(self.host, [c.reverse() for c in reversed(plan.database)],
                                  False, self.settings.command_timeout)
            except HostError as exc:
                database_failure = str(exc)
        if restarted and previous and tls.describe_failures(
                self._probe(endpoints, name, previous, 1.0, verify=False)) is None:
            restarted = False  # every endpoint still serves the previous pair: no restart
        if restarted:
            failure, command_failed = self._restart_and_probe(
                [level for level in (plan.gentle, plan.restarts) if level], endpoints, name,
                previous, verify=False)
            if command_failed:
                raise CommandError(f"{failure} (while restoring the previous certificate; fix "
                                   "it and run again: the restore will be retried)")
            if failure:
                self.notify(f"After restoring the previous certificate: {failure}")
        if database_failure is not None:
            raise CommandError(f"{database_failure} (while putting the directory definitions "
                               "back; fix it and run again: the undo will be retried)")
        self.journal.transaction.remove()

    # -- helpers ------------------------------------------------------------------------------
    def _remember_failure(self, error: WazoError) -> None:
        cert, key, remember = self._source
        if not remember or not self.host.cert_dirs():  # never write under a non-Wazo root
            return
        if not (cert.is_file() and key.is_file()):  # a pipe: a later retry could never read it
            return
        settings = SavedSettings(profile=self.settings.profile, hostname=self.settings.hostname,
                                 force_profile=self.settings.force_profile,
                                 probes=[str(e) for e in self.settings.probes],
                                 probe_timeout=self.settings.probe_timeout)
        failure = Failure(cert=str(cert.absolute()), key=str(key.absolute()), error=str(error),
                          failed_at=time.strftime("%Y-%m-%d %H:%M:%S %Z"), settings=settings)
        if self.access.ledger is not None:  # what a retry from here will trust
            try:
                self.access.ledger.failed(failure, self._names)
            except WazoError as exc:  # the host's own record is still written
                logger.warning("Could not remember the failed deployment: %s", exc)
        try:
            self.journal.record_failure(failure)
        except (WazoError, OSError) as exc:
            logger.warning("Could not remember the failed deployment: %s", exc)

    def _forget_failure(self) -> None:
        """The pair being deployed is in place: no failure to retry, and (remote) the ledger
        associates it and its names with the host."""
        cert, key, _ = self._source
        if self.access.ledger is not None and self._names:
            try:
                self.access.ledger.deployed(cert, key, self._names)
            except WazoError as exc:
                logger.warning("%s", exc)
        try:
            record = self.journal.failure()
        except RecordError:
            return  # damaged: status names it, and how to remove it
        if record is not None and record.cert == str(self._source[0].absolute()):
            self.journal.clear_failure()

    def _wazo_path(self, path: Path) -> str:
        return "/" + str(path.relative_to(self.host.root))

    def _installed_chain(self) -> bytes:
        for directory in self.host.cert_dirs():
            state = read_state(directory / "server.crt")
            if state.kind == FILE:
                return state.data
        return b""

    def _installed_leaf(self) -> bytes:
        try:
            return _leaf_der(self._installed_chain(), self.host.root)
        except WazoError:
            return b""


def _with_parents(desired: list[tuple[Path, FileState]],
                  root: Path) -> list[tuple[Path, FileState]]:
    """The desired states, each preceded by the missing directories above it (so an undo
    removes them again)."""
    result: list[tuple[Path, FileState]] = []
    seen: set[Path] = set()
    for path, state in desired:
        missing = []
        parent = path.parent
        while parent != root and not os.path.lexists(parent) and parent not in seen:
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            seen.add(directory)
            result.append((directory, FileState.directory()))
        result.append((path, state))
    return result


def _leaf_der(chain_pem: bytes, where: Path) -> bytes:
    return load_chain(chain_pem, where)[0].public_bytes(Encoding.DER)
