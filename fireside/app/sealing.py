"""Authenticated encryption with keys derived from the server's secret (Fernet).

Each use gets its own key (HKDF with a purpose label), so a value sealed for one purpose never
opens as another. Its one use today is an OIDC login's state cookie; connections' API keys at
rest are encrypted by `crypto.SecretBox`, not here.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["InvalidToken", "sealer"]


def sealer(secret: str, purpose: str) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"fireside:{purpose}".encode()
    ).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))
