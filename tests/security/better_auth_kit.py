"""A stand-in for the Next.js app's Better-Auth server: fresh keys, a real JWKS endpoint, tokens shaped like its own."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import string
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

JWKS_PATH = "/api/auth/jwks"
ALGORITHMS = ["EdDSA", "ES256", "ES512", "RS256", "PS256"]


def better_auth_id() -> str:
    """Better-Auth's ids: 32 random letters and digits."""
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))


@dataclass
class Key:
    alg: str
    kid: str
    private: Any
    jwk: dict[str, Any]


def _private_key(alg: str) -> Any:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES512":
        return ec.generate_private_key(ec.SECP521R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_key(alg: str, *, kid: str | None = None, publish_alg: bool = True, private: Any = None) -> Key:
    """A key pair and its public JWK as Better-Auth publishes it: kty/crv/x…, alg, kid and no `use`."""
    private = private or _private_key(alg)
    jwk: dict[str, Any] = get_default_algorithms()[alg].to_jwk(private.public_key(), as_dict=True)
    jwk["kid"] = kid or better_auth_id()
    if publish_alg:
        jwk["alg"] = alg
    return Key(alg=alg, kid=jwk["kid"], private=private, jwk=jwk)


def claims(issuer: str, *, sub: Any = None, lifetime: int = 900, **overrides: Any) -> dict[str, Any]:
    """The JWT plugin's default payload: the user row plus registered claims. A claim set to `...` is left out."""
    now = int(time.time())
    user_id = sub if isinstance(sub, str) and sub else better_auth_id()
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    payload: dict[str, Any] = {
        "iat": now,
        "name": "Ada Lovelace",
        "email": f"{user_id.lower()}@example.com",
        "emailVerified": False,
        "image": None,
        "createdAt": stamp,
        "updatedAt": stamp,
        "id": user_id,
        "sub": user_id if sub is None else sub,
        "exp": now + lifetime,
        "iss": issuer,
        "aud": issuer,
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not ...}


def sign(key: Key, payload: dict[str, Any], **header: Any) -> str:
    """Header `{"alg", "kid"}` without `typ`, as Better-Auth sends it."""
    return jwt.encode(payload, key.private, algorithm=key.alg, headers={"kid": key.kid, "typ": None, **header})


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class JwksServer:
    """A real HTTP server on 127.0.0.1 serving `/api/auth/jwks`; counts the fetches it answers."""

    status: int = 200
    body: bytes = b'{"keys": []}'
    hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                with server._lock:
                    server.hits += 1
                    status, body = server.status, server.body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The Better-Auth base URL: also the tokens' default issuer and audience."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def publish(self, *keys: Key) -> None:
        self.serve(200, json.dumps({"keys": [key.jwk for key in keys]}).encode())

    def serve(self, status: int, body: bytes) -> None:
        with self._lock:
            self.status, self.body = status, body

    def reset(self, *keys: Key) -> None:
        self.publish(*keys)
        with self._lock:
            self.hits = 0

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: dict[str, Any]) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def hs256_token(secret: bytes, payload: dict[str, Any], kid: str) -> str:
    """HS256 by hand: PyJWT refuses to use a PEM public key as an HMAC secret, an attacker does not."""
    signing_input = f"{segment({'alg': 'HS256', 'kid': kid})}.{segment(payload)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def rsa_pem_as_hmac_secret(key: Key, issuer: str) -> str:
    """The classic algorithm-confusion forgery: HS256 keyed with the published RSA public key."""
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hs256_token(pem, claims(issuer), key.kid)
