"""The dashboard's shared password, kept as a salted scrypt hash: `scrypt:N:r:p:salt:hash` (hex).

scrypt makes each guess cost tens of milliseconds and tens of MiB, and the salt means a leaked
hash must be attacked on its own: an unsalted sha256 of a short password falls to a GPU in
minutes. Colons, not `$`, separate the fields, so the value needs no quoting in a shell, a
`.env` file or Docker Compose."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets

COST = (2**15, 8, 1)          # N, r, p: 32 MiB and about 0.1 s per check on a server core
MIN_LENGTH = 8
_MAX_COST = (2**18, 16, 4)    # a hash asking for more (over 512 MiB) is refused rather than computed
_FORMAT = re.compile(r"scrypt:(\d+):(\d+):(\d+):([0-9a-f]{32,128}):([0-9a-f]{64})")
HOW_TO_MAKE = "flywheel hash-password"


def hash_password(password: str) -> str:
    """A new salted hash of `password`, in the form `password_matches` checks."""
    n, r, p = COST
    salt = secrets.token_bytes(16)
    return f"scrypt:{n}:{r}:{p}:{salt.hex()}:{_scrypt(password, salt, n, r, p).hex()}"


def is_password_hash(value: str) -> bool:
    """Whether `value` is a hash this module made (with a cost it will compute)."""
    match = _FORMAT.fullmatch(value)
    if match is None:
        return False
    n, r, p = (int(g) for g in match.groups()[:3])
    return n > 1 and n & (n - 1) == 0 and all(0 < v <= top for v, top in zip((n, r, p), _MAX_COST))


def password_matches(password: str, stored: str) -> bool:
    """Whether `password` hashes to `stored`, compared in constant time. False for a malformed
    `stored` (the settings refuse one at start, so that is not expected here)."""
    if not is_password_hash(stored):
        return False
    n, r, p, salt, digest = stored.split(":")[1:]
    return hmac.compare_digest(_scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p)), bytes.fromhex(digest))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * r * (n + p + 2) + 2**20, dklen=32)
