"""TLS for the mesh: a service's certificate, key and CA from the environment; servers reload them on change.

With ROUTEMESH_TLS_CERT, ROUTEMESH_TLS_KEY and ROUTEMESH_TLS_CA set, a service serves TLS (mutual TLS on the
internal services: the caller must present a certificate of the same CA) and its channels to other services
present its certificate. Unset, everything is plaintext, as in `routemesh up` and `demo`. The certificate's
common name is the service's identity ("router", "executor", ..., "admin"): common.interceptors checks it
against the methods each identity may call.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)
ENV_CERT, ENV_KEY, ENV_CA = "ROUTEMESH_TLS_CERT", "ROUTEMESH_TLS_KEY", "ROUTEMESH_TLS_CA"
# The auth-context property that carries the peer certificate's common name.
_COMMON_NAME = "x509_common_name"


class TlsError(ValueError):
    """TLS settings that cannot be used; the message names the variable or file."""


@dataclass(frozen=True)
class TlsFiles:
    """Where a process's PEM certificate chain, private key and CA bundle are."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TlsFiles | None:
        """The files the environment names; None when it names none (plaintext); TlsError when only some."""
        env = os.environ if environ is None else environ
        values = {name: env.get(name, "") for name in (ENV_CERT, ENV_KEY, ENV_CA)}
        if not any(values.values()):
            return None
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise TlsError(f"TLS needs {ENV_CERT}, {ENV_KEY} and {ENV_CA}; {', '.join(missing)} not set")
        return cls(Path(values[ENV_CERT]), Path(values[ENV_KEY]), Path(values[ENV_CA]))

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, private key, CA bundle) as bytes; TlsError naming an unreadable file."""
        out = []
        for path in (self.cert, self.key, self.ca):
            try:
                out.append(path.read_bytes())
            except OSError as exc:
                raise TlsError(f"cannot read {path}: {exc.strerror or exc}") from None
        return out[0], out[1], out[2]

    def stamp(self) -> tuple[tuple[int, int], ...]:
        """(mtime, size) of each file: a change means new material to load."""
        stamps = []
        for path in (self.cert, self.key, self.ca):
            try:
                info = path.stat()
                stamps.append((info.st_mtime_ns, info.st_size))
            except OSError:
                stamps.append((0, 0))
        return tuple(stamps)


def server_credentials(files: TlsFiles, require_client_auth: bool) -> grpc.ServerCredentials:
    """Server credentials that reload the files when they change (checked as each new connection arrives).

    A reload that fails (a file half-written, a key that does not match) keeps the material in use and logs
    why; connections already open keep theirs.
    """
    cert, key, ca = files.read()
    initial = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)
    lock = threading.Lock()
    seen = [files.stamp()]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        stamp = files.stamp()
        with lock:
            if stamp == seen[0]:
                return None
            seen[0] = stamp
        try:
            cert, key, ca = files.read()
            log.info("TLS certificate files changed: %s reloaded", files.cert)
            return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)
        except TlsError as exc:
            log.error("TLS certificate files changed but cannot be loaded (%s); keeping the current ones", exc)
            return None

    return grpc.dynamic_ssl_server_credentials(initial, fetch, require_client_authentication=require_client_auth)


class ReloadingSslContext:
    """An SSL server context for HTTP (the gateway) that loads the files again when they change.

    `refresh()` is called as each connection arrives (a few stat calls); a reload that fails keeps the
    certificate in use and logs why. Callers are not asked for a certificate: applications use API keys.
    """

    def __init__(self, files: TlsFiles) -> None:
        import ssl

        self.files = files
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(files.cert, files.key)
        self._stamp = files.stamp()

    def refresh(self) -> None:
        import ssl

        stamp = self.files.stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self.context.load_cert_chain(self.files.cert, self.files.key)
            log.info("TLS certificate files changed: %s reloaded", self.files.cert)
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS certificate files changed but cannot be loaded (%s); keeping the current ones", exc)


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Credentials that check the server against the CA and present this process's certificate.

    Read when a channel opens: channels live as long as their service, so a rotated client certificate is
    used from the next start (servers pick theirs up at once).
    """
    cert, key, ca = files.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


_client_files: list[TlsFiles | None] = []


def client_files() -> TlsFiles | None:
    """This process's TLS files for its channels (read from the environment once)."""
    if not _client_files:
        _client_files.append(TlsFiles.from_env())
    return _client_files[0]


API_KEY_ENV = "ROUTEMESH_API_KEY"


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds "authorization: Bearer <token>" to every call (call credentials would need a TLS channel)."""

    def __init__(self, token: str):
        self._entry = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), self._entry]
        return details._replace(metadata=metadata)  # type: ignore[attr-defined]  # grpc's namedtuple

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)


def blocking_channel(address: str) -> grpc.Channel:
    """A blocking channel for the CLI: TLS with this process's certificate when the environment names one,
    and the caller's key (ROUTEMESH_API_KEY: an admin key for the operator's commands) on every call."""
    files = client_files()
    channel = grpc.insecure_channel(address) if files is None else grpc.secure_channel(
        address, channel_credentials(files))
    token = os.environ.get(API_KEY_ENV, "").strip()
    return grpc.intercept_channel(channel, _Bearer(token)) if token else channel


def peer_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The common name of the caller's verified certificate, or None (plaintext, or no certificate)."""
    names = context.auth_context().get(_COMMON_NAME)
    return names[0].decode(errors="replace") if names else None
