"""Throwaway TLS services for tests: certificates made by the shipped script
(``deploy/tls/make-site-ca.sh``), Mosquitto with a TLS listener, the site's broker run from the
shipped ``deploy/site/mosquitto`` files, and a PostgreSQL cluster with ``ssl = on`` that refuses
connections without TLS.

Like :mod:`.services` this module has no pytest dependency; a missing ``openssl``, ``bash`` or
``mosquitto_passwd`` raises :class:`~.services.ServiceUnavailable` (the fixtures then fail with
the install hint, they never skip).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .services import MosquittoInstance, PostgresInstance
from .services.process import INSTALL_HINT, ServiceStartError, ServiceUnavailable, chown, free_port, is_root, service_user

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "tls" / "make-site-ca.sh"
SITE_MOSQUITTO = REPO / "deploy" / "site" / "mosquitto"


class SiteCA:
    """A site CA and its certificates in ``dir``, made with the shipped script."""

    def __init__(self, dir: str | os.PathLike[str]):
        self.dir = Path(dir)
        for tool in ("bash", "openssl"):
            if shutil.which(tool) is None:
                raise ServiceUnavailable(f"{tool} not found (Debian: apt-get install {tool})")
        if not SCRIPT.is_file():
            raise ServiceUnavailable(f"{SCRIPT} not found (a source checkout is needed for the TLS test services)")
        self.run("ca")

    def run(self, *args: str, days: int | None = None) -> str:
        cmd = ["bash", str(SCRIPT), "--dir", str(self.dir)] + (["--days", str(days)] if days is not None else [])
        proc = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise ServiceStartError(f"make-site-ca.sh {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    @property
    def ca_file(self) -> str:
        return str(self.dir / "ca.crt")

    def server(self, name: str, *hosts: str, days: int | None = None) -> tuple[str, str]:
        """(certificate, key) of a server reached as ``hosts``."""
        self.run("server", name, *hosts, days=days)
        return self.files(name)

    def client(self, name: str, *, days: int | None = None) -> tuple[str, str]:
        """(certificate, key) with common name ``name``; ``days=-1``: already expired."""
        self.run("client", name, days=days)
        return self.files(name)

    def files(self, name: str) -> tuple[str, str]:
        return str(self.dir / f"{name}.crt"), str(self.dir / f"{name}.key")


def tls_mosquitto(ca: SiteCA, *, server: str = "broker", require_certificate: bool = False,
                  use_identity_as_username: bool = False, options: dict | None = None) -> MosquittoInstance:
    """A :class:`MosquittoInstance` whose only listener is TLS with the certificate ``server`` of
    ``ca`` (made for 127.0.0.1 and localhost unless it exists already)."""
    if not (ca.dir / f"{server}.crt").exists():
        ca.server(server, "127.0.0.1", "localhost")
    cert, key = ca.files(server)
    opts = {"cafile": ca.ca_file, "certfile": cert, "keyfile": key, "tls_version": "tlsv1.2",
            "require_certificate": require_certificate, "use_identity_as_username": use_identity_as_username}
    return MosquittoInstance(options=opts | dict(options or {}))


class SiteBroker(MosquittoInstance):
    """Mosquitto run from the shipped ``mosquitto.conf`` and ``acl`` as they are, except what a
    test machine must change: each ``listener PORT`` gets a free port on 127.0.0.1
    (:attr:`ports` maps the shipped port to it), the paths the site stack mounts
    (``/mosquitto/tls/``, ``/mosquitto/config/``, ``/mosquitto/auth/``, ``/mosquitto/data/``)
    point to ``ca``'s folder, the shipped folder and temporary ones, and the log goes to a file.

    ``passwords`` (user -> password) is written with ``mosquitto_passwd`` into every password
    file the config names. The broker's certificate ``broker`` is made for 127.0.0.1 and
    localhost unless ``ca`` has it already."""

    def __init__(self, ca: SiteCA, passwords: dict[str, str], *, site_dir: Path = SITE_MOSQUITTO):
        super().__init__()
        self.ca = ca
        self.passwords = passwords
        self.site_dir = site_dir
        self.ports: dict[int, int] = {}
        self._text: str | None = None

    def _render(self) -> str:
        if not (self.ca.dir / "broker.crt").exists():
            self.ca.server("broker", "127.0.0.1", "localhost")
        mounts = {"/mosquitto/tls/": f"{self.ca.dir}/", "/mosquitto/config/": f"{self.site_dir}/",
                  "/mosquitto/auth/": f"{self.dir}/auth/", "/mosquitto/data/": f"{self.persistence_dir}/"}
        (self.dir / "auth").mkdir(parents=True, exist_ok=True)
        out = ["# plantwatch.connectors.tls_services.SiteBroker: rendered from the shipped mosquitto.conf"]
        for line in (self.site_dir / "mosquitto.conf").read_text().splitlines():
            words = line.split()
            if words and words[0] == "listener":
                port = free_port()
                self.ports[int(words[1])] = port
                line = f"listener {port} 127.0.0.1"
            elif words and words[0] == "log_dest":
                line = f"log_dest file {self.log_path}"
            elif words and words[0] == "password_file":
                line = f"password_file {self._password_file(words[1], mounts)}"
            else:
                for mount, local in mounts.items():
                    line = line.replace(mount, local)
            out.append(line)
        if not self.ports:
            raise ServiceStartError(f"{self.site_dir / 'mosquitto.conf'} has no listener")
        self.port = next(iter(self.ports.values()))  # start() waits for the first listener
        if is_root():
            out.append("user root")  # our temporary folders are root's
        return "\n".join(out) + "\n"

    def _password_file(self, shipped: str, mounts: dict[str, str]) -> str:
        path = shipped
        for mount, local in mounts.items():
            path = path.replace(mount, local)
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        if not Path(tool).exists():
            raise ServiceUnavailable(f"mosquitto_passwd not found; {INSTALL_HINT}")
        Path(path).unlink(missing_ok=True)
        Path(path).touch(mode=0o600)
        for user, password in self.passwords.items():
            subprocess.run([tool, "-b", path, user, password], check=True, capture_output=True, timeout=30)
        return path

    def _config_text(self) -> str:
        if self._text is None:
            self._text = self._render()
        return self._text

    def local(self, shipped_port: int) -> int:
        """The local port of the shipped listener ``shipped_port``."""
        self._config_text()
        return self.ports[shipped_port]


def shipped_ports(site_dir: Path = SITE_MOSQUITTO) -> list[int]:
    """The listener ports of the shipped mosquitto.conf, in file order."""
    text = (site_dir / "mosquitto.conf").read_text()
    return [int(p) for p in re.findall(r"^listener (\d+)", text, re.M)]


class TlsPostgres(PostgresInstance):
    """A throwaway cluster (TimescaleDB as :class:`PostgresInstance` decides) with ``ssl = on``,
    the certificate ``server`` of ``ca`` (made for 127.0.0.1 and localhost) and a pg_hba that
    accepts TCP connections over TLS only (``hostssl``; plain ones are rejected)."""

    def __init__(self, ca: SiteCA, *, server: str = "postgres", **kwargs):
        if not (ca.dir / f"{server}.crt").exists():
            ca.server(server, "127.0.0.1", "localhost")
        self._certs = Path(tempfile.mkdtemp(prefix="plantwatch-pg-tls-"))
        cert, key = ca.files(server)
        user = service_user()
        for src, name, mode in ((cert, "server.crt", 0o644), (key, "server.key", 0o600)):
            shutil.copy(src, self._certs / name)
            os.chmod(self._certs / name, mode)
            chown(self._certs / name, user)
        self._certs.chmod(0o755)
        settings = {"ssl": True, "ssl_cert_file": str(self._certs / "server.crt"),
                    "ssl_key_file": str(self._certs / "server.key"), "ssl_min_protocol_version": "TLSv1.2"}
        super().__init__(settings=settings | dict(kwargs.pop("settings", {}) or {}), **kwargs)

    def _initdb(self) -> None:
        super()._initdb()
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text("# plantwatch TLS test cluster: TCP only over TLS\n"
                       "local all all trust\n"
                       "hostssl all all 127.0.0.1/32 trust\n"
                       "hostssl all all ::1/128 trust\n"
                       "hostnossl all all 0.0.0.0/0 reject\n"
                       "hostnossl all all ::/0 reject\n")
        chown(hba, self._resolve_user())

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            shutil.rmtree(self._certs, ignore_errors=True)
