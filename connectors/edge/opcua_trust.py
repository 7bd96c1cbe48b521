"""Which OPC UA servers the collector trusts, and the collector's own application certificate.

A PKI folder, as OPC UA clients keep one::

    pki/own/cert.der      the collector's application instance certificate (``plantwatch collect certs``)
    pki/own/key.pem       its private key (mode 0600)
    pki/trusted/          server certificates the operator trusts (DER or PEM, any file name)
    pki/rejected/         certificates of servers that were refused, for the operator to inspect

Before a secured session the collector asks the server's endpoints (an unsecured request every
OPC UA server answers) for the certificate it presents. A pinned ``server_certificate`` must be
that certificate byte for byte (else: "certificate mismatch", with both thumbprints); without a
pin it must be in ``trusted/``. An unknown certificate is copied to ``rejected/`` and the log says
how to trust it; the collector tries again with backoff, so moving the file into ``trusted/`` is
enough -- no restart.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path


class TrustError(Exception):
    """The server's certificate is not the one to trust (its message says what to do)."""


def der_bytes(data: bytes) -> bytes:
    """A certificate as DER, from DER or PEM bytes (ValueError when it is neither)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    x509.load_der_x509_certificate(data)
    return data


def describe(der: bytes) -> str:
    """``CN=..., SHA-1 ab:cd:...`` of a DER certificate."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    return f"{cert.subject.rfc4514_string()}, SHA-1 {thumbprint(der)}"


def thumbprint(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest()  # noqa: S324 -- the OPC UA thumbprint is SHA-1 by definition


@dataclass(frozen=True, slots=True)
class Pki:
    root: Path

    @property
    def trusted(self) -> Path:
        return self.root / "trusted"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"

    @property
    def own_certificate(self) -> Path:
        return self.root / "own" / "cert.der"

    @property
    def own_key(self) -> Path:
        return self.root / "own" / "key.pem"

    def trusted_file(self, der: bytes) -> Path | None:
        """The file in ``trusted/`` holding this certificate (None: not trusted)."""
        if not self.trusted.is_dir():
            return None
        for f in sorted(self.trusted.iterdir()):
            try:
                if f.is_file() and der_bytes(f.read_bytes()) == der:
                    return f
            except ValueError:  # not a certificate: ignored, like any stray file in the folder
                continue
        return None

    def reject(self, der: bytes) -> Path:
        """Keep a refused certificate in ``rejected/`` (named by its CN and thumbprint)."""
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        cn = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(cn[0].value) if cn else "server")[:64]
        self.rejected.mkdir(parents=True, exist_ok=True)
        self.trusted.mkdir(parents=True, exist_ok=True)
        dest = self.rejected / f"{name}-{thumbprint(der)[:16]}.der"
        dest.write_bytes(der)
        return dest


def check_server(der: bytes, url: str, pin: Path | None, pki: Pki) -> Path:
    """The file holding the server certificate to trust; TrustError when there is none."""
    if pin is not None:
        pinned = der_bytes(pin.read_bytes())
        if pinned != der:
            raise TrustError(f"certificate mismatch: {url} presents {describe(der)}; the pinned server_certificate "
                             f"{pin} is {describe(pinned)}. Not connecting: if the server's certificate was renewed, "
                             f"pin the new one")
        return pin
    trusted = pki.trusted_file(der)
    if trusted is not None:
        return trusted
    dest = pki.reject(der)
    raise TrustError(f"server certificate of {url} ({describe(der)}) is not trusted: rejected, copied to {dest}. "
                     f"If this is your server, trust it: mv '{dest}' '{pki.trusted}/' (the collector retries on its "
                     f"own), or pin it with server_certificate")


def default_application_uri(collector: str) -> str:
    return f"urn:{socket.gethostname()}:plantwatch:collect:{collector}"


async def make_own_certificate(pki: Pki, uri: str, *, name: str = "plantwatch collect", days: int = 730,
                               force: bool = False) -> bytes:
    """Create the collector's application instance certificate (self-signed, the application URI
    and this host's name as subject alternative names) and its key; returns the certificate (DER).
    Refuses to replace existing files unless ``force``."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from asyncua.crypto.cert_gen import dump_private_key_as_pem, generate_private_key, \
        generate_self_signed_app_certificate

    for f in (pki.own_certificate, pki.own_key):
        if f.exists() and not force:
            raise FileExistsError(f"{f} exists (--force replaces it; the server must then trust the new certificate)")
    host = socket.gethostname()
    key = generate_private_key()
    cert = generate_self_signed_app_certificate(
        key, name, {"organizationName": "plantwatch"},
        [x509.UniformResourceIdentifier(uri), x509.DNSName(host)],
        [ExtendedKeyUsageOID.CLIENT_AUTH], days=days)
    pki.own_certificate.parent.mkdir(parents=True, exist_ok=True)
    for d in (pki.trusted, pki.rejected):
        d.mkdir(parents=True, exist_ok=True)
    fd = os.open(pki.own_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(dump_private_key_as_pem(key))
    der = cert.public_bytes(Encoding.DER)
    pki.own_certificate.write_bytes(der)
    return der
