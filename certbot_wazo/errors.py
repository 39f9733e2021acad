"""Errors raised by the certbot-free core; each message is one line: "FILE: what is wrong (what to do)"."""


class WazoError(Exception):
    """Base class: the deployment could not be done; the message says what and how to fix it."""


class PairError(WazoError):
    """The certificate or its key cannot be deployed (mismatch, expiry, names, trust, format)."""


class HostError(WazoError):
    """The Wazo host layout or configuration cannot be deployed to."""


class ConnectionLostError(HostError):
    """The SSH connection to a remote host ended; its undo log and lock are on the host."""


class CommandError(WazoError):
    """A Wazo command (xivo-update-config, wazo-service, systemctl) failed or timed out; output
    is what it printed, when it ran."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class ProbeError(WazoError):
    """A TLS probe did not see the expected certificate."""


class LockBusyError(WazoError):
    """Another deployment holds the lock on this host."""


class RolledBackError(WazoError):
    """The deployment failed after touching the host and the previous state was restored."""


class SignalledError(WazoError):
    """SIGINT, SIGTERM or SIGHUP arrived: the deployment stops at a safe point and rolls back."""


class OutputLimitError(CommandError):
    """A command, or a remote host, printed more than certbot-wazo keeps: it was stopped."""

