"""The test command's set-up: everything the suite needs, found or installed, and throwaway servers.

    python -m tests.environment check             # find (or install) the tools the suite runs
    python -m tests.environment run -- COMMAND…   # check, start throwaway servers, run COMMAND, stop them

`check` looks for what the suite starts or drives: redis-server, Chromium, Node.js 18.17+ with npm and
the npm packages of tests/typescript and, unless TEST_BACKENDS leaves PostgreSQL out, PostgreSQL's
server binaries (initdb, pg_ctl), pgbouncer and pgrep. What is missing is installed where the machine
allows it: Debian packages with apt-get when running as root, the npm packages with `npm ci`
(TEST_INSTALL=no turns installing off). Anything still missing stops the command at once with one line
naming it and the command that installs it, and exit code 2, before any test runs.

`run` then starts a throwaway PostgreSQL cluster (initdb + pg_ctl on a free port of 127.0.0.1, trust
auth, no durability; as the `postgres` OS user when running as root, since initdb refuses root) unless
TEST_POSTGRES_URL is given, and a throwaway redis-server (free port, no persistence) unless
TEST_REDIS_URL is given; COMMAND runs with both variables pointing at the servers in use, and the
throwaway ones are stopped and deleted afterwards, whatever COMMAND's end (failure, Ctrl-C, SIGTERM).
Servers left behind by a run that was killed are removed by the next run. Given URLs must answer.

Only the standard library: this runs before pytest, and tests/support.py builds its private servers on
the same pieces (PgCluster, redis_command).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
TYPESCRIPT = HERE / "typescript"
MODULES = TYPESCRIPT / "node_modules"
STAMP = MODULES / ".taskdeck-lock.sha256"  # the lock that node_modules was installed from
NODE_MINIMUM = (18, 17)
SERVICES_PREFIX = "taskdeck-test-services-"
MISSING_EXIT = 2


class SetupError(Exception):
    """Something the suite needs is missing: the message is one line naming it and how to get it."""


def backends() -> list[str]:
    return [b.strip() for b in os.environ.get("TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]


def with_postgresql() -> bool:
    return "postgresql" in backends()


def as_root() -> bool:
    return os.geteuid() == 0


# --- finding -------------------------------------------------------------------------------------


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def pg_bin_dir() -> Path | None:
    """The directory of initdb and pg_ctl: beside an initdb on PATH, else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    found = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit() and (p / "initdb").exists()),
        key=lambda p: int(p.parent.name),
    )
    return found[-1] if found else None


def node_version() -> tuple[int, ...] | None:
    node = shutil.which("node")
    if node is None:
        return None
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.match(r"v(\d+)\.(\d+)", out.strip())
    return tuple(int(part) for part in found.groups()) if found else None


def postgres_account() -> bool:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return True


@dataclass(frozen=True)
class Need:
    """One tool the suite runs: how it is named in the message, its Debian package(s), how to find it."""

    what: str
    packages: tuple[str, ...]
    present: Callable[[], bool]


def needs() -> list[Need]:
    """What this run needs (TEST_BACKENDS decides whether PostgreSQL's tools are part of it)."""

    def node_ok() -> bool:
        return (node_version() or (0,)) >= NODE_MINIMUM and shutil.which("npm") is not None

    wanted = [
        Need("redis-server", ("redis-server",), lambda: shutil.which("redis-server") is not None),
        Need("chromium", ("chromium",), lambda: chromium() is not None),
        Need("Node.js 18.17+ and npm", ("nodejs", "npm"), node_ok),
    ]
    if with_postgresql():
        wanted += [
            Need("PostgreSQL's initdb and pg_ctl", ("postgresql",), lambda: pg_bin_dir() is not None),
            Need("pgbouncer", ("pgbouncer",), lambda: shutil.which("pgbouncer") is not None),
            Need("pgrep", ("procps",), lambda: shutil.which("pgrep") is not None),
        ]
        if as_root():  # initdb, postgres and pgbouncer refuse root: they run as the `postgres` account
            wanted += [
                Need("the postgres OS account", ("postgresql",), postgres_account),
                Need("runuser", ("util-linux",), lambda: shutil.which("runuser") is not None),
            ]
    return wanted


def install_command(packages: list[str]) -> str:
    return ("" if as_root() else "sudo ") + "apt-get install -y " + " ".join(dict.fromkeys(packages))


def may_install() -> bool:
    return os.environ.get("TEST_INSTALL", "auto").strip().lower() not in {"no", "0", "false", "never"}


def one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def apt_install(packages: list[str]) -> str | None:
    """Install Debian packages with apt-get; None when done, else the reason it failed (one line)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"installing {' '.join(packages)} with apt-get (the test suite runs them)", file=sys.stderr, flush=True)
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(command[:2])}: {exc}"
        if done.returncode != 0:
            return f"{' '.join(command[:2])} failed: {one_line(done.stderr) or f'exit {done.returncode}'}"
    return None


def ensure_tools() -> None:
    """Find every tool this run needs; install the missing ones when running as root with apt-get."""
    missing = [need for need in needs() if not need.present()]
    if not missing:
        return
    packages = [package for need in missing for package in need.packages]
    failure = None
    if may_install() and as_root() and shutil.which("apt-get"):
        failure = apt_install(list(dict.fromkeys(packages)))
        missing = [need for need in missing if not need.present()]
        if not missing:
            return
        packages = [package for need in missing for package in need.packages]
    names = ", ".join(need.what for need in missing)
    them = "it" if len(missing) == 1 else "them"
    why = f" ({failure})" if failure else ""
    raise SetupError(f"missing: {names}{why} — install {them} with: {install_command(packages)}")


def lock_digest() -> str:
    files = (TYPESCRIPT / "package.json", TYPESCRIPT / "package-lock.json")
    return hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()


def ensure_npm_packages() -> None:
    """`npm ci` in tests/typescript, only when node_modules is missing or was installed from another lock."""
    what, hint = "missing: the npm packages of tests/typescript", "install them with: cd tests/typescript && npm ci"
    digest = lock_digest()
    # One installer at a time: the suite's workers may reach this together.
    with open(TYPESCRIPT / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STAMP.exists() and STAMP.read_text().strip() == digest:
            return
        if not may_install():
            raise SetupError(f"{what} (TEST_INSTALL=no) — {hint}")
        npm = shutil.which("npm")
        if npm is None:
            raise SetupError(f"missing: npm — install it with: {install_command(['nodejs', 'npm'])}")
        command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"]
        try:
            done = subprocess.run(command, cwd=TYPESCRIPT, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            raise SetupError(f"{what} (npm ci took over 15 min) — {hint}") from None
        if done.returncode != 0:
            reason = one_line(done.stderr) or one_line(done.stdout) or f"exit {done.returncode}"
            raise SetupError(f"{what} (npm ci failed: {reason}) — {hint}")
        STAMP.write_text(digest + "\n")


def check() -> None:
    """Everything the suite needs is there (installed now if it was not and the machine allows it)."""
    ensure_tools()
    ensure_npm_packages()


# --- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def utf8_locale() -> list[str]:
    """initdb's locale options: C.UTF-8 where the C library has it (as Debian's clusters), else plain C."""
    try:
        names = subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=30).stdout.lower().split()
    except (OSError, subprocess.TimeoutExpired):
        names = []
    locale = "C.UTF-8" if {"c.utf8", "c.utf-8"} & set(names) else "C"
    return ["--encoding=UTF8", f"--locale={locale}"]


class PgCluster:
    """A private PostgreSQL server under `root` on a free port of 127.0.0.1 (trust auth, no durability).

    As root, it runs as the `postgres` OS account (initdb refuses root)."""

    def __init__(self, root: Path | None = None) -> None:
        found = pg_bin_dir()
        if found is None:
            install = install_command(["postgresql"])
            raise SetupError(f"missing: PostgreSQL's initdb and pg_ctl — install them with: {install}")
        self.bin = found
        self.root = root if root is not None else Path(tempfile.mkdtemp(prefix="taskdeck-pg-"))
        self.port = free_port()
        self.as_postgres = as_root()
        if self.as_postgres:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        # A session of its own: a Ctrl-C meant for the test run does not stop the server under it.
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120, start_new_session=True)

    def init(self) -> None:
        initdb = [str(self.bin / "initdb"), "-D", str(self.root / "data"), "-A", "trust", "-U", "postgres"]
        self._run(*initdb, "--no-sync", *utf8_locale())

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += " -c synchronous_commit=off -c full_page_writes=off"
        data, log = str(self.root / "data"), str(self.root / "log")
        self._run(str(self.bin / "pg_ctl"), "-D", data, "-l", log, "-w", "-t", "120", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", mode, "-w", "stop")

    def log_tail(self) -> str:
        log = self.root / "log"
        return one_line(log.read_text(errors="replace")) if log.exists() else ""


def redis_command(port: int) -> list[str]:
    """A redis-server on 127.0.0.1:`port`, in the foreground, keeping nothing on disk."""
    return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=5):
            return True
    except (OSError, ValueError):
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_redis(pid: int, port: int) -> None:
    """SIGKILL our redis-server `pid`, after checking it is one on `port` (never another process)."""
    try:  # redis-server retitles itself "redis-server 127.0.0.1:PORT"
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
    except OSError:
        return
    if name == "redis-server" and (f"127.0.0.1:{port}" in command or str(port) in command):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remove_leftovers() -> None:
    """Stop and delete the servers of earlier runs whose command is gone (killed before it could clean up)."""
    for folder in Path(tempfile.gettempdir()).glob(SERVICES_PREFIX + "*"):
        try:
            owner = int((folder / "owner").read_text())
        except (OSError, ValueError):
            continue
        if alive(owner):
            continue
        with contextlib.suppress(OSError, ValueError):
            pid, port = map(int, (folder / "redis").read_text().split())
            stop_redis(pid, port)
        if (folder / "pg" / "data" / "postmaster.pid").exists():
            with contextlib.suppress(SetupError, subprocess.SubprocessError, OSError):
                cluster = PgCluster(folder / "pg")
                cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def throwaway_services() -> Iterator[dict[str, str]]:
    """The variables naming the suite's PostgreSQL and Redis: the given ones, or throwaway servers started here."""
    urls: dict[str, str] = {}
    given_pg, given_redis = os.environ.get("TEST_POSTGRES_URL"), os.environ.get("TEST_REDIS_URL")
    for name, url, port in (("TEST_POSTGRES_URL", given_pg, 5432), ("TEST_REDIS_URL", given_redis, 6379)):
        if url and (name != "TEST_POSTGRES_URL" or with_postgresql()) and not reachable(url, port):
            advice = f"start that server, or unset {name} for a throwaway one"
            raise SetupError(f"{name}: nothing answers at {url} — {advice}")
    remove_leftovers()
    folder = Path(tempfile.mkdtemp(prefix=SERVICES_PREFIX))
    folder.chmod(0o711)  # the `postgres` account passes through to its cluster's folder
    (folder / "owner").write_text(str(os.getpid()))
    cluster: PgCluster | None = None
    redis: subprocess.Popen[bytes] | None = None
    try:
        if with_postgresql() and not given_pg:
            (folder / "pg").mkdir()
            cluster = start_cluster(folder / "pg")
            urls["TEST_POSTGRES_URL"] = cluster.url
        if not given_redis:
            redis, port = start_redis(folder)
            urls["TEST_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        if urls:
            started = ", ".join(f"{name}={url}" for name, url in urls.items())
            print(f"throwaway test servers: {started}", file=sys.stderr, flush=True)
        yield urls
    finally:
        if redis is not None:
            redis.kill()
            redis.wait()
        if cluster is not None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                cluster.stop("immediate")  # its data is thrown away
        shutil.rmtree(folder, ignore_errors=True)


def start_cluster(root: Path, attempts: int = 3) -> PgCluster:
    cluster = PgCluster(root)
    try:
        cluster.init()
    except subprocess.CalledProcessError as exc:
        raise SetupError(f"initdb failed: {one_line(exc.stderr.decode(errors='replace'))}") from None
    for attempt in range(attempts):
        try:
            cluster.start()
            return cluster
        except subprocess.CalledProcessError:
            if attempt == attempts - 1:
                raise SetupError(f"the throwaway PostgreSQL did not start: {cluster.log_tail()}") from None
            cluster.port = free_port()  # taken between choosing and binding it: another one
            cluster.url = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
    raise AssertionError("unreachable")


def start_redis(folder: Path, attempts: int = 3) -> tuple[subprocess.Popen[bytes], int]:
    for _ in range(attempts):
        port = free_port()
        process = subprocess.Popen(
            redis_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        (folder / "redis").write_text(f"{process.pid} {port}")
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            if redis_answers(port):
                return process, port
            time.sleep(0.05)
        process.kill()
        process.wait()
    raise SetupError("the throwaway redis-server did not start (run `redis-server --port 6390` to see why)")


def run(command: list[str]) -> int:
    """Check, start the servers, run `command` with their URLs and stop them however it ends; its exit code."""
    check()
    with throwaway_services() as urls:
        child = subprocess.Popen(command, env={**os.environ, **urls})

        def forward(signum: int, _frame: FrameType | None) -> None:
            # Ctrl-C reaches the command from the terminal itself; SIGTERM/SIGHUP sent to us are passed on.
            if signum != signal.SIGINT and child.poll() is None:
                child.send_signal(signum)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            code = child.wait()
            return 128 - code if code < 0 else code  # ended by a signal: the shell's convention
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main(argv: list[str]) -> int:
    usage = "usage: python -m tests.environment check | run -- COMMAND..."
    try:
        if argv[:1] == ["check"]:
            check()
            return 0
        if argv[:1] == ["run"]:
            command = argv[2:] if argv[1:2] == ["--"] else argv[1:]
            if not command:
                print(usage, file=sys.stderr)
                return MISSING_EXIT
            return run(command)
    except SetupError as exc:
        print(exc, file=sys.stderr)
        return MISSING_EXIT
    except OSError as exc:  # e.g. a folder it cannot write: still one line
        print(f"the test set-up failed: {exc}", file=sys.stderr)
        return MISSING_EXIT
    print(usage, file=sys.stderr)
    return MISSING_EXIT


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
