"""The platform matrix: the Debian package built, linted, installed and run end to end inside a
real chroot of each Debian release Wazo runs on, with that release's own certbot and libraries.

    python3 -m tests.platforms.matrix [SUITE...] [--release SUITE=X.Y]    (as root; make test-platforms)

For each SUITE (default: bullseye bookworm trixie): the cached chroot is built or reused
(tests/platforms/chroot, outside the clone), then, inside a private network namespace (the
script re-runs itself under `unshare --net`, lo up: nothing touches the machine's ports),
pebble starts here, outside the chroot, and `.ci/package` runs in the chroot on an export of the
working tree: build 0.1.0-1~debNu1, lintian, `apt-get install ./….deb` next to the release's
certbot, `certbot plugins`, then debian/tests/issue against that pebble with a sandbox host of
each Wazo release that runs on that Debian (the corpus tests/data/releases says which; the
newest release for a Debian none runs on yet); then the
unit tests with the release's python3, pytest and libraries. Last, back on the network, a clean
system of each release (nothing but apt) gets `apt install ./….deb`: everything it needs comes
from Debian, and its certbot lists the plugin.
The .debs and logs are left in /tmp/certbot-wazo-platforms/SUITE.

    python3 -m tests.platforms.matrix --deb --out DIR SUITE    (make deb DEBIAN=SUITE)

only builds the package for SUITE in its cached chroot (lintian included) and leaves it in DIR.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CHROOT = REPO / "tests/platforms/chroot"
IN_CHROOT = REPO / "tests/platforms/in-chroot"
SUITES = ("bullseye", "bookworm", "trixie")
OUT = Path(os.environ.get("CERTBOT_WAZO_PLATFORMS_OUT", "/tmp/certbot-wazo-platforms"))
HOST_PACKAGES = ("mmdebstrap", "pebble", "python3-cryptography", "python3-yaml", "curl", "git",
                 "iproute2", "util-linux")
# The run in the network namespace is another process: it counts from the same start.
STARTED = float(os.environ.setdefault("CERTBOT_WAZO_PLATFORMS_STARTED", str(time.time())))


def say(message: str) -> None:
    print(f"platforms: [{time.time() - STARTED:6.1f}s] {message}", flush=True)


def private_network() -> bool:
    try:
        with open("/proc/self/net/dev", encoding="ascii") as stream:
            return [line.split(":", 1)[0].strip() for line in stream.readlines()[2:]] == ["lo"]
    except OSError:
        return False


def release_for(suite: str) -> str:
    """The corpus releases that run on this Debian (comma-separated); the newest of all for a
    Debian no release of the corpus runs on yet (trixie: the next Wazo)."""
    from tests.sandbox.release import facts, releases  # PyYAML: after install_host_packages()
    known = sorted(releases(), key=lambda r: tuple(int(x) for x in r.split(".")))
    matching = [r for r in known if facts(r)["debian"]["codename"] == suite]
    return ",".join(matching or known[-1:])


def install_host_packages() -> None:
    missing = [p for p in HOST_PACKAGES
               if "ok installed" not in subprocess.run(["dpkg-query", "-W", "-f=${Status}", p],
                                                       capture_output=True, text=True).stdout]
    if missing:
        say(f"installing on this machine: {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       check=True, env=env, stdout=subprocess.DEVNULL)


def ensure_chroots(suites: list[str]) -> float:
    """Build the missing or outdated chroots, concurrently (download-bound); the seconds taken."""
    started = time.monotonic()
    procs = {s: subprocess.Popen([str(CHROOT), "ensure", s], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for s in suites}
    failed = []
    for suite, proc in procs.items():
        output, _ = proc.communicate()
        for line in output.splitlines():
            say(line)
        if proc.returncode != 0:
            failed.append(suite)
    if failed:
        raise SystemExit(f"platforms: chroot of {', '.join(failed)} could not be built (see above)")
    return time.monotonic() - started


def export_tree(dest: Path) -> None:
    """The files .ci/package would take (tracked and untracked-not-ignored), without .git."""
    listing = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True).stdout
    dest.mkdir(parents=True)
    for name in filter(None, listing.decode().split("\0")):
        source = REPO / name
        if not os.path.lexists(source):
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)


def run_suite(suite: str, release: str, top: Path) -> bool:
    """.ci/package in the suite's chroot, with a pebble started here; True when it passed."""
    work = top / suite
    export_tree(work / "src")
    (work / "deb").mkdir()
    log = work / "package.log"
    from tests.sandbox.acme import Pebble  # cryptography: after install_host_packages()
    with Pebble() as pebble:
        pebble.start(work / "pebble")
        pebble.describe(work / "pebble/pebble.json")
        env = {**os.environ, "CERTBOT_WAZO_CHROOT_ENV": " ".join([
            "CERTBOT_WAZO_DEB_FOR_RELEASE=1", "CERTBOT_WAZO_PEBBLE=/platform/pebble/pebble.json",
            f"CERTBOT_WAZO_RELEASE={release}", "CERTBOT_WAZO_DEB_DIR=/platform/deb"])}
        script = ("bash /platform/src/.ci/package && "
                  "bash /platform/src/tests/platforms/in-chroot unit /platform/src")
        with open(log, "w") as out:
            proc = subprocess.Popen([str(CHROOT), "enter", suite, str(work), "bash", "-c", script],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    out.write(line)
                    print(f"  {suite}| {line}", end="", flush=True)
                rc = proc.wait()
            except KeyboardInterrupt:
                # Let the chroot's own cleanup finish (this process may be its namespace's
                # pid 1, whose end kills everything left in it).
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
    keep = OUT / suite
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    for item in [*(work / "deb").iterdir(), log]:
        shutil.copy2(item, keep / item.name)
    return rc == 0


def clean_installs(suites: list[str]) -> dict[str, tuple[bool, float]]:
    """`apt install ./….deb` on a clean system of each release, concurrently (download-bound)."""
    started = time.monotonic()
    procs = {}
    for suite in suites:
        debs = sorted((OUT / suite).glob("python3-certbot-wazo_*_all.deb"))
        if not debs:
            continue
        shutil.copy2(IN_CHROOT, OUT / suite / IN_CHROOT.name)
        procs[suite] = subprocess.Popen([str(CHROOT), "enter", f"{suite}-clean", str(OUT / suite),
                                         "bash", f"/platform/{IN_CHROOT.name}", "clean-install",
                                         f"/platform/{debs[-1].name}"],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results = {}
    for suite, proc in procs.items():
        output, _ = proc.communicate()
        results[suite] = (proc.returncode == 0, time.monotonic() - started)
        for line in output.splitlines():
            print(f"  {suite}-clean| {line}", flush=True)
    return results


def in_namespace(suites: list[str], chosen: dict[str, str]) -> int:
    top = Path(tempfile.mkdtemp(prefix="certbot-wazo-platforms."))
    results: list[tuple[str, str, str, float]] = []
    try:
        for suite in suites:
            release = chosen[suite]
            say(f"{suite}: .ci/package in the chroot, pebble outside, Wazo {release}")
            started = time.monotonic()
            try:
                ok = run_suite(suite, release, top)
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                print(f"platforms: {suite}: {exc}", file=sys.stderr)
                ok = False
            results.append((suite, release, "PASS" if ok else "FAIL", time.monotonic() - started))
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print("\nplatforms: in the chroots")
    for suite, release, verdict, took in results:
        print(f"  {took:6.1f}s  {suite:9} Wazo {release:18} {verdict}  ({OUT / suite})")
    return 0 if all(r[2] == "PASS" for r in results) else 1


def build_deb(suite: str, out: Path) -> int:
    """`make deb DEBIAN=SUITE`: .ci/package, build only, in the suite's cached chroot; the
    .deb (and the source package, the lintian report) into out."""
    took = ensure_chroots([suite])
    say(f"{suite}: chroot ready in {took:.0f}s; building")
    top = Path(tempfile.mkdtemp(prefix="certbot-wazo-deb."))
    try:
        work = top / suite
        export_tree(work / "src")
        (work / "deb").mkdir()
        env = {**os.environ, "CERTBOT_WAZO_CHROOT_ENV": " ".join([
            "CERTBOT_WAZO_DEB_FOR_RELEASE=1", "CERTBOT_WAZO_BUILD_ONLY=1",
            "CERTBOT_WAZO_DEB_DIR=/platform/deb"])}
        rc = subprocess.run([str(CHROOT), "enter", suite, str(work), "bash",
                             "/platform/src/.ci/package"], env=env).returncode
        built = sorted((work / "deb").glob("python3-certbot-wazo_*_all.deb"))
        if rc != 0 or not built:
            print(f"platforms: {suite}: the package was not built (see above)", file=sys.stderr)
            return rc or 1
        out.mkdir(parents=True, exist_ok=True)
        for item in (work / "deb").iterdir():
            shutil.copy2(item, out / item.name)
        say(f"built {out / built[-1].name} (install it on Debian {suite}: "
            f"apt install {out / built[-1].name})")
        return 0
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    # Ctrl-C, SIGTERM or a hang-up unwinds (pebble stopped, temporary files removed), even when
    # started in the background (SIGINT ignored) or as pid 1 of the namespace (no default action).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupted)
    try:
        return _main()
    except KeyboardInterrupt as exc:
        print(f"platforms: interrupted ({exc or 'SIGINT'}); stopped", file=sys.stderr)
        return 130


def _main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=f"default: {' '.join(SUITES)}")
    parser.add_argument("--release", action="append", default=[], metavar="SUITE=X.Y[,X.Y]",
                        help="the Wazo releases of the sandbox hosts in SUITE's chroot (default: "
                             "the corpus's releases of that Debian, else the newest)")
    parser.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--deb", action="store_true",
                        help="only build the package for the one SUITE given, into --out")
    parser.add_argument("--out", type=Path, default=Path("dist"), metavar="DIR",
                        help="with --deb: where the package goes (default: dist)")
    args = parser.parse_args()
    suites = list(dict.fromkeys(args.suites or SUITES))
    if any(s not in SUITES for s in suites):
        parser.error(f"SUITE: one of {', '.join(SUITES)}")
    if os.geteuid() != 0:
        print("tests/platforms/matrix.py: run as root (chroots, mounts, namespaces)", file=sys.stderr)
        return 2
    if not args.in_namespace:
        install_host_packages()
    if args.deb:
        if len(suites) != 1 or not args.suites:
            parser.error("--deb: give one SUITE")
        return build_deb(suites[0], args.out.absolute())
    from tests.sandbox.release import releases
    chosen = {s: release_for(s) for s in suites}
    for item in args.release:
        suite, _, release = item.partition("=")
        if suite not in chosen or not release or any(r not in releases() for r in release.split(",")):
            parser.error(f"--release {item}: give SUITE=X.Y[,X.Y] with one of {', '.join(suites)} "
                         "and releases of tests/data/releases")
        chosen[suite] = release
    if args.in_namespace:
        if not private_network():
            print("tests/platforms/matrix.py: --in-namespace outside a private network namespace",
                  file=sys.stderr)
            return 2
        return in_namespace(suites, chosen)
    took = ensure_chroots([*suites, *(f"{s}-clean" for s in suites)])
    say(f"chroots ready in {took:.0f}s")
    for suite in suites:  # only this run's .debs are installed on the clean systems
        shutil.rmtree(OUT / suite, ignore_errors=True)
    argv = [sys.executable, "-m", "tests.platforms.matrix", "--in-namespace", *suites,
            *[f"--release={s}={r}" for s, r in chosen.items()]]
    script = 'ip link set lo up && exec "$@"'
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # A pid namespace too: pebble and everything else die with the run, whatever ends it.
    rc = subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount",
                         "--propagation", "private", "--mount-proc", "sh", "-c", script, "sh", *argv],
                        cwd=REPO, env=env).returncode
    if rc == 130:
        raise KeyboardInterrupt("the run in the namespace was interrupted")
    say("clean systems: apt install ./….deb")
    installed = clean_installs(suites)
    print("\nplatforms: clean systems")
    for suite in suites:
        ok, seconds = installed.get(suite, (False, 0.0))
        print(f"  {seconds:6.1f}s  {suite}-clean  apt install ./python3-certbot-wazo_…deb "
              f"{'PASS' if ok else 'FAIL (no .deb built)' if suite not in installed else 'FAIL'}")
    rc = rc or (0 if all(installed.get(s, (False, 0.0))[0] for s in suites) else 1)
    say(f"done, exit {rc}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
