"""`routemesh certs`: a development CA and one certificate per mesh identity, for mutual TLS between services.

Made with `cryptography` (ECDSA P-256 keys, SHA-256 signatures). The common name is the identity the
services check (common.interceptors.CALLERS); the subject alternative names are the names callers dial.
For production, issue the same shapes from your own CA (cert-manager, Vault, ...): nothing here is special.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path

IDENTITIES = ("router", "classifier", "executor", "telemetry", "control", "gateway", "admin")
CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
DEFAULT_DAYS = 365
# Every certificate may be dialled as localhost and on the loopback addresses (routemesh up, tests).
LOCAL_NAMES = ("localhost",)
LOCAL_IPS = ("127.0.0.1", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for ca.pem, ca-key.pem and NAME.pem, NAME-key.pem")
    parser.add_argument("--host", action="append", default=[], metavar="NAME",
                        help="another DNS name every service certificate answers to (repeatable); each service's "
                             "own name (router, executor, ...) is always included")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"validity (default {DEFAULT_DAYS})")
    parser.add_argument("--identity", action="append", choices=IDENTITIES, metavar="NAME",
                        help=f"only these identities (repeatable; default all: {', '.join(IDENTITIES)})")


def _libraries():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _write(path: Path, data: bytes, private: bool) -> None:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


def _ca(out: Path, days: int):
    """The CA in `out`, made when absent (so identities can be issued again under the same CA)."""
    x509, hashes, serialization, ec, _, name_oid = _libraries()
    cert_path, key_path = out / CA_CERT, out / CA_KEY
    if cert_path.exists() and key_path.exists():
        return (x509.load_pem_x509_certificate(cert_path.read_bytes()),
                serialization.load_pem_private_key(key_path.read_bytes(), password=None))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, "routemesh development CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), private=True)
    return cert, key


def issue(out: Path, identity: str, hosts: Sequence[str] = (), days: int = DEFAULT_DAYS) -> tuple[Path, Path]:
    """Issue `identity`'s certificate and key under the CA in `out` (made if needed); their paths."""
    x509, hashes, serialization, ec, eku, name_oid = _libraries()
    out.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _ca(out, days)
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(n) for n in dict.fromkeys([identity, *LOCAL_NAMES, *hosts])]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in LOCAL_IPS]
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, identity)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([eku.SERVER_AUTH, eku.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = out / f"{identity}.pem", out / f"{identity}-key.pem"
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), private=True)
    return cert_path, key_path


def tls_env(out: Path, identity: str) -> dict[str, str]:
    """The environment that makes a routemesh process use `identity`'s certificate from `out`."""
    from routemesh.common.tls import ENV_CA, ENV_CERT, ENV_KEY

    return {ENV_CERT: str(out / f"{identity}.pem"), ENV_KEY: str(out / f"{identity}-key.pem"),
            ENV_CA: str(out / CA_CERT)}


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.days < 1:
        print("routemesh certs: --days must be at least 1", file=sys.stderr)
        return 2
    for identity in args.identity or IDENTITIES:
        cert, _ = issue(out, identity, args.host, args.days)
        print(f"{identity}: {cert}")
    env = tls_env(out.resolve(), "admin")
    print(f"CA: {out / CA_CERT} (keep {out / CA_KEY} private)\n"
          "each service: ROUTEMESH_TLS_CERT=DIR/NAME.pem ROUTEMESH_TLS_KEY=DIR/NAME-key.pem ROUTEMESH_TLS_CA=DIR/ca.pem;\n"
          "the CLI as admin: " + " ".join(f"{k}={v}" for k, v in env.items()))
    return 0
