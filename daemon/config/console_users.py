"""Console users who log in with a name and a password (``api.users``), besides tokens.

The config never holds a password: ``password_scrypt`` is ``scrypt$N$r$p$SALT$HASH`` (hex salt
and hash, scrypt from the standard library), printed by ``plantwatch token password``. The
console's login turns a name and password into the same session as a token
(daemon/alarms/console_session.py); roles are those of tokens.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Literal

from pydantic import Field

from plantwatch.daemon.config.sensors import ID, Model

#: scrypt cost of new hashes (about 16 MiB and a few tens of milliseconds per check)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
PASSWORD_MIN = 12
_PATTERN = r"^scrypt\$[0-9]{1,8}\$[0-9]{1,3}\$[0-9]{1,3}\$[0-9a-f]{32}\$[0-9a-f]{64}$"


class ConsoleUser(Model):
    name: ID
    role: Literal["operator", "engineer", "inspector", "security"]
    #: ``scrypt$N$r$p$salt$hash`` of the password (``plantwatch token password`` prints it)
    password_scrypt: str = Field(pattern=_PATTERN)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    h = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 2**20, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${h.hex()}"


def password_matches(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` (a ``password_scrypt``) was made from."""
    _, n, r, p, salt, want = stored.split("$")
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                         maxmem=256 * 2**20, dklen=len(want) // 2)
    return hmac.compare_digest(got.hex(), want)


#: checked against for an unknown name, so that a wrong name takes as long as a wrong password
DUMMY = "scrypt$16384$8$1$" + "0" * 32 + "$" + "0" * 64
