"""`relkd certs generate DIR`: test certificates and tokens for a secured embedded stack.

Writes a throw-away CA, a server certificate for the loopback names, a client
certificate (mTLS), a ``tokens`` file (``caller:token`` lines, what the servers accept)
and ``token`` (the operator's own token, what the platform's clients send), plus
``relkd.env`` setting the ``RELKD_GRPC_*`` variables to those files. For tests and
local runs only: a cluster gets its certificates from its own CA (cert-manager, a
service mesh) and its tokens from Secrets (docs/security.md).
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
OPERATOR = "operator"


@dataclass(frozen=True)
class CertificateSet:
    """Paths of one generated set (all PEM; keys and tokens readable by the owner only)."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    @property
    def tokens(self) -> Path:
        return self.directory / "tokens"

    @property
    def token(self) -> Path:
        return self.directory / "token"

    @property
    def env_file(self) -> Path:
        return self.directory / "relkd.env"

    def env(self, mtls: bool = True) -> dict[str, str]:
        """The ``RELKD_GRPC_*`` variables that secure servers and clients with this set."""
        env = {
            "RELKD_GRPC_TLS_CERT_FILE": str(self.server_cert),
            "RELKD_GRPC_TLS_KEY_FILE": str(self.server_key),
            "RELKD_GRPC_AUTH_TOKENS_FILE": str(self.tokens),
            "RELKD_GRPC_TLS_CA_FILE": str(self.ca),
            "RELKD_GRPC_AUTH_TOKEN_FILE": str(self.token),
        }
        if mtls:
            env |= {
                "RELKD_GRPC_TLS_CLIENT_CA_FILE": str(self.ca),
                "RELKD_GRPC_TLS_CLIENT_CERT_FILE": str(self.client_cert),
                "RELKD_GRPC_TLS_CLIENT_KEY_FILE": str(self.client_key),
            }
        return env


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "relevance-kd test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_secret(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def _issue(
    subject: str,
    ca_name: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier,
    hosts: tuple[str, ...],
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def generate(
    directory: Path, hosts: tuple[str, ...] = DEFAULT_HOSTS, days: int = 30
) -> CertificateSet:
    """Writes a CA, server and client certificates, tokens and relkd.env into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = CertificateSet(directory.resolve())
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("relevance-kd test CA")
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    # The CA key is not written: nothing more is ever signed with this throw-away CA.
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, subject, usage, names in (
        (
            certs.server_cert,
            certs.server_key,
            "relkd-server",
            ExtendedKeyUsageOID.SERVER_AUTH,
            hosts,
        ),
        (certs.client_cert, certs.client_key, OPERATOR, ExtendedKeyUsageOID.CLIENT_AUTH, ()),
    ):
        cert, key = _issue(subject, ca_name, ca_key, usage, names, days)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
    token = secrets.token_urlsafe(32)
    _write_secret(certs.tokens, f"{OPERATOR}:{token}\n")
    _write_secret(certs.token, f"{token}\n")
    certs.env_file.write_text("".join(f"{k}={v}\n" for k, v in certs.env().items()))
    return certs


app = typer.Typer(help="Test certificates and tokens for a secured embedded stack.")


@app.command("generate")
def generate_command(
    directory: Annotated[Path, typer.Argument(help="Where to write the files.")],
    host: Annotated[
        list[str] | None,
        typer.Option(help="Name or IP the server certificate is valid for (repeatable)."),
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="Validity in days.")] = 30,
) -> None:
    """Writes a test CA, server/client certificates, tokens and relkd.env into DIRECTORY."""
    certs = generate(directory, tuple(host) if host else DEFAULT_HOSTS, days)
    typer.echo(f"wrote {certs.directory}; load it with: set -a; . {certs.env_file}; set +a")
