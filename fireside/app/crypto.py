"""Secrets the app must read back (connections' API keys), encrypted with a key derived
from the server's secret key (FIRESIDE_SECRET_KEY, or the one kept in the data directory)."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from fireside.errors import FiresideError


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(b"fireside connections\0" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken:
            raise FiresideError(
                "a stored connection key cannot be decrypted: the secret key changed"
            ) from None
