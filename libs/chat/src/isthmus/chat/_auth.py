"""Password hashing (scrypt) and signed session tokens (HMAC-SHA256) shared by every front end."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time

from ._errors import AuthError

__all__ = ["TokenSigner", "hash_password", "verify_password"]

# scrypt at n=2**14, r=8 is OWASP's floor and costs about 50 ms here: slow for a guesser,
# fast enough for a login.
_N, _R, _P = 2**14, 8, 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A self-describing scrypt hash: ``scrypt$n$r$p$salt$digest``."""
    if not password:
        raise AuthError("empty password")
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches a hash made by :func:`hash_password` (constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


class TokenSigner:
    """Issues and checks ``name.expiry.signature`` tokens signed with one server secret.

    The same token authenticates IRC (``PASS``/SASL PLAIN with the token as password), the
    WebSocket (``?token=`` or a ``auth`` message) and REST (``Authorization: Bearer``).
    """

    def __init__(self, secret: bytes, *, ttl: float = 7 * 24 * 3600.0) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        self._secret = secret
        self.ttl = ttl

    def issue(self, name: str, *, now: float | None = None) -> str:
        """A token for account ``name`` valid for :attr:`ttl` seconds."""
        expiry = int((time.time() if now is None else now) + self.ttl)
        body = f"{_b64(name.encode())}.{expiry}"
        return f"{body}.{self._sign(body)}"

    def verify(self, token: str, *, now: float | None = None) -> str:
        """The account name in ``token``; :class:`AuthError` if forged, malformed or expired."""
        try:
            name_b64, expiry_s, sig = token.split(".")
            body = f"{name_b64}.{expiry_s}"
            expiry = int(expiry_s)
            name = _unb64(name_b64).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise AuthError("malformed token") from exc
        if not hmac.compare_digest(sig, self._sign(body)):
            raise AuthError("bad token signature")
        if expiry < (time.time() if now is None else now):
            raise AuthError("token expired")
        return name

    def looks_like_token(self, text: str) -> bool:
        """Cheap shape test, so a password field may carry either a password or a token."""
        return text.count(".") == 2 and len(text) > 40

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())
