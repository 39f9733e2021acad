"""What a Wazo host should hold for a pair and a name: one answer, for deploy and for status."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from certbot_wazo import hosts, overrides, services
from certbot_wazo.files import ABSENT, FILE, FileState, read_state
from certbot_wazo.host import CUSTOM_FILE, HOSTS_CUSTOM, LINK_NAME, Host, loopback
from certbot_wazo.pair import Pair
from certbot_wazo.tls import Endpoint


@dataclasses.dataclass
class Desired:
    """Every path certbot-wazo manages on a host, and what it should hold."""

    generation: str
    # (path under the root, state): the pair in each certificate directory, then (legacy
    # procedure) the overrides, their links and the hosts template, then what is removed.
    files: list[tuple[Path, FileState]]
    # The services reach each other by NAME (upstream's overrides): NAME must be on 127.0.0.1,
    # and /etc/hosts is rendered from the template by xivo-update-config.
    overrides: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def removing(self) -> list[Path]:
        """The pre-19.01 procedure's files, removed (upstream asks it from 19.01)."""
        return [path for path, state in self.files if state.kind == ABSENT]

    def drift(self) -> list[tuple[Path, FileState]]:
        """The paths whose current state differs from the desired one."""
        return [(path, state) for path, state in self.files if read_state(path) != state]


def pair_files(host: Host, pair: Pair) -> list[tuple[Path, FileState]]:
    """The pair in every certificate directory, root:www-data, the key 0640; the certificate
    keeps the mode the release's package gives it (0640 or 0644).

    :raises HostError: no certificate directory, or no www-data group
    """
    directories = host.require_cert_dirs()
    gid = host.www_data_gid()
    files = []
    for directory in directories:
        current = read_state(directory / "server.crt")
        crt_mode = current.mode if current.kind == FILE and current.mode in (0o640, 0o644) \
            else 0o644
        files.append((directory / "server.key", FileState.file(pair.key_pem, 0o640, 0, gid)))
        files.append((directory / "server.crt", FileState.file(pair.chain_pem, crt_mode, 0, gid)))
    return files


def desired(host: Host, pair: Pair, hostname: str, profile: str) -> Desired:
    """What deploying pair for hostname leaves on host.

    :raises HostError: the host cannot take it as it is (a link pointing elsewhere, an admin's
        file where a link goes, a malformed configuration); the message says what to fix
    """
    generation = host.generation(profile)
    state = Desired(generation, pair_files(host, pair))
    if overrides.wanted(host, profile, generation):
        services.update_config_command(host)  # the hosts template is rendered by it
        state.overrides = True
        state.files.append((host.path(CUSTOM_FILE), overrides.desired_overrides(host, hostname)))
        state.files.extend(overrides.desired_links(host))
        state.files.append((host.path(HOSTS_CUSTOM), hosts.desired_template(host, hostname)))
    elif overrides.to_remove(host, profile, generation):
        removals, state.notes = overrides.leftovers(host)
        if any(path == host.path(HOSTS_CUSTOM) for path, _ in removals):
            services.update_config_command(host)  # /etc/hosts is rendered again
        state.files.extend(removals)
    return state


def nginx_conflicts(host: Host, leaf_der: bytes, hostname: str) -> tuple[list[Endpoint], list[str]]:
    """nginx servers that answer for hostname with a certificate file of their own: those whose
    file holds this leaf are endpoints to probe; every other one is a problem deploy refuses
    (port 443 would go on serving another certificate), with the fix.

    :raises HostError: nginx's configuration cannot be read or parsed
    """
    directories = host.cert_dirs()
    wazo = "/" + str((directories[0] / "server.crt").relative_to(host.root)) if directories \
        else "server.crt"
    endpoints, problems = [], []
    for server, served in host.nginx_foreign(hostname):
        if served == leaf_der:
            endpoints.append(Endpoint(loopback(server.address), server.port, "nginx"))
            continue
        problems.append(
            f"{server.path}:{server.line}: nginx serves {server.certificates[0]} for {hostname} "
            f"on port {server.port}, not Wazo's certificate (point ssl_certificate and "
            f"ssl_certificate_key back at {wazo} and {wazo[:-len('.crt')]}.key so that "
            "certbot-wazo installs there, or deploy the certificate nginx serves)")
    return endpoints, problems


def describe_drift(host: Host, path: Path, wanted: FileState) -> str:
    """One problem line for a managed path that is not what deploy would leave there."""
    current = read_state(path)
    if path.name == LINK_NAME:
        what = "missing link" if current.kind != "link" else f"links to {current.target}"
        return f"{path}: {what}, not to {CUSTOM_FILE} (certbot-wazo deploy fixes it)"
    if wanted.kind == "absent":
        return (f"{path}: left by the pre-19.01 procedure, which upstream asks to remove from "
                "19.01 (certbot-wazo deploy removes it)")
    if current.kind != wanted.kind:
        return f"{path}: {'missing' if current.kind == 'absent' else 'not a regular file'} " \
               "(certbot-wazo deploy writes it)"
    if current.data != wanted.data:
        return f"{path}: differs from what certbot-wazo deploys (certbot-wazo deploy fixes it)"
    return (f"{path}: owner or mode is {current.uid}:{current.gid} {current.mode:04o}, not "
            f"{wanted.uid}:{wanted.gid} {wanted.mode:04o} (certbot-wazo deploy fixes it)")
