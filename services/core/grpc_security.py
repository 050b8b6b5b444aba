"""Transport security and caller authentication of the platform's gRPC endpoints.

* **TLS** on every server when ``RELKD_GRPC_TLS_CERT_FILE``/``_KEY_FILE`` are set;
  with ``RELKD_GRPC_TLS_CLIENT_CA_FILE`` as well, servers also demand and verify a
  client certificate signed by that CA (mTLS).
* **Per-caller tokens**: with ``RELKD_GRPC_AUTH_TOKENS_FILE`` set, every RPC except
  health and reflection needs ``authorization: Bearer <token>`` metadata carrying one
  of the file's tokens, else UNAUTHENTICATED. The file holds one ``caller:token`` line
  per caller, so each caller gets its own token (revoked by deleting its line and
  restarting) and the request log names the caller.
* **Clients** the platform runs itself (``relkd up``'s health probes, the demo's
  scorer, the benches) open channels with :func:`client_channel` /
  :func:`aio_client_channel`: TLS when ``RELKD_GRPC_TLS_CA_FILE`` is set, a client
  certificate when ``RELKD_GRPC_TLS_CLIENT_CERT_FILE``/``_KEY_FILE`` are, and the token
  of ``RELKD_GRPC_AUTH_TOKEN_FILE`` on every call.

Secrets live only in files (Kubernetes mounts them from Secrets); settings name paths.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from services.core.settings import Settings

AUTHORIZATION = "authorization"
BEARER = "Bearer "


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials for a server, or None for plaintext (no certificate configured)."""
    cert, key = settings.grpc_tls_cert_file, settings.grpc_tls_key_file
    if cert is None and key is None:
        if settings.grpc_tls_client_ca_file is not None:
            raise ValueError(
                "grpc_tls_client_ca_file: client verification needs TLS; set "
                "RELKD_GRPC_TLS_CERT_FILE and RELKD_GRPC_TLS_KEY_FILE too"
            )
        return None
    if cert is None or key is None:
        missing = "grpc_tls_cert_file" if cert is None else "grpc_tls_key_file"
        raise ValueError(f"{missing}: TLS needs both a certificate and its key")
    client_ca = _read(settings.grpc_tls_client_ca_file)
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


class TokenAuthenticator:
    """Checks ``authorization: Bearer <token>`` against the allowed callers' tokens."""

    def __init__(self, tokens: dict[str, str]) -> None:
        if not tokens:
            raise ValueError("grpc_auth_tokens_file: holds no caller:token line")
        # token -> caller
        self._callers = tokens

    @classmethod
    def from_file(cls, path: Path) -> TokenAuthenticator:
        tokens: dict[str, str] = {}
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            caller, sep, token = line.partition(":")
            if not sep or not caller.strip() or not token.strip():
                raise ValueError(f"grpc_auth_tokens_file: {path}:{number}: expected 'caller:token'")
            tokens[token.strip()] = caller.strip()
        return cls(tokens)

    def caller(self, metadata: Sequence[tuple[str, Any]] | None) -> str | None:
        """The caller whose token the metadata carries, or None."""
        presented = None
        for key, value in metadata or ():
            if key == AUTHORIZATION and isinstance(value, str) and value.startswith(BEARER):
                presented = value[len(BEARER) :].strip()
                break
        if not presented:
            return None
        found = None
        # Compare against every token in constant time, so timing does not leak a prefix.
        for token, caller in self._callers.items():
            if hmac.compare_digest(token.encode(), presented.encode()):
                found = caller
        return found


def authenticator(settings: Settings) -> TokenAuthenticator | None:
    path = settings.grpc_auth_tokens_file
    return TokenAuthenticator.from_file(path) if path is not None else None


def _channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    ca = settings.grpc_tls_ca_file
    cert, key = settings.grpc_tls_client_cert_file, settings.grpc_tls_client_key_file
    if ca is None:
        if cert is not None or key is not None:
            raise ValueError(
                "grpc_tls_client_cert_file: a client certificate needs TLS; set "
                "RELKD_GRPC_TLS_CA_FILE to the CA that signed the servers' certificates"
            )
        return None
    if (cert is None) != (key is None):
        missing = "grpc_tls_client_cert_file" if cert is None else "grpc_tls_client_key_file"
        raise ValueError(f"{missing}: a client certificate needs both the certificate and key")
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=_read(key),
        certificate_chain=_read(cert),
    )


def _token_credentials(settings: Settings) -> grpc.CallCredentials | None:
    path = settings.grpc_auth_token_file
    if path is None:
        return None
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"grpc_auth_token_file: {path} is empty")
    return grpc.access_token_call_credentials(token)


def _credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    channel = _channel_credentials(settings)
    token = _token_credentials(settings)
    if channel is None:
        return None
    if token is None:
        return channel
    return grpc.composite_channel_credentials(channel, token)


def client_channel(
    address: str, settings: Settings, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A blocking channel to one of the platform's servers, secured as settings say."""
    credentials = _credentials(settings)
    if credentials is None:
        _refuse_plaintext_token(settings)
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, credentials, options=options)


def aio_client_channel(
    address: str, settings: Settings, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """An asyncio channel to one of the platform's servers, secured as settings say."""
    credentials = _credentials(settings)
    if credentials is None:
        _refuse_plaintext_token(settings)
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, credentials, options=options)


def _refuse_plaintext_token(settings: Settings) -> None:
    if settings.grpc_auth_token_file is not None:
        raise ValueError(
            "grpc_auth_token_file: a token is only sent over TLS; set RELKD_GRPC_TLS_CA_FILE"
        )
