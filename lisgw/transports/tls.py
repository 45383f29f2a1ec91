"""TCP and TLS endpoints for the HIS link, with client certificates both ways.

Layer: transport (Twisted). Builds Twisted endpoints; no protocol logic.

The HIS link (HL7 over MLLP) runs in clear text by default, as most hospital networks still do,
and over TLS as an option. With TLS both sides authenticate:

* the gateway as a server (the order listener) presents its certificate and requires a client
  certificate signed by the configured CA (``CertificateOptions(trustRoot=…)`` makes the
  certificate mandatory: a client without one fails the handshake);
* the gateway as a client (the outbox dispatcher) checks the HIS server's certificate against
  the configured CA and its host name with service_identity (``optionsForClientTLS``), and
  presents its own client certificate.

TLS 1.2 is the minimum (HL7 gives no rule; IHE ATNA's secure node profile asks for TLS 1.2).
Certificates and keys are PEM. The CA file may hold several certificates (a bundle).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from OpenSSL import crypto
from twisted.internet._sslverify import IOpenSSLTrustRoot  # not re-exported by twisted.internet.ssl
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IReactorSSL,
    IReactorTCP,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    PrivateCertificate,
    TLSVersion,
    optionsForClientTLS,
    trustRootFromCertificates,
)

from lisgw.errors import ConfigError

__all__ = [
    "TlsMaterial",
    "client_endpoint",
    "client_tls_creator",
    "server_endpoint",
    "server_tls_options",
]

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """PEM bytes of one side of a TLS link: the CA to trust, our certificate and its key.

    ``cert_pem`` may carry intermediate certificates after the leaf; they are sent in the chain.
    """

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def from_files(cls, ca: Path, cert: Path, key: Path) -> TlsMaterial:
        """Read the three PEM files; every unreadable or empty file is reported at once."""
        problems: list[str] = []
        contents: list[bytes] = []
        for role, path in (("ca", ca), ("cert", cert), ("key", key)):
            try:
                data = path.read_bytes()
            except OSError as exc:
                problems.append(f"tls.{role}: cannot read {path}: {exc.strerror or exc}")
                data = b""
            else:
                if not data.strip():
                    problems.append(f"tls.{role}: {path} is empty")
            contents.append(data)
        if problems:
            raise ConfigError(problems)
        return cls(contents[0], contents[1], contents[2])


def _certificates(pem: bytes, role: str) -> list[Certificate]:
    blocks = _PEM_CERTIFICATE.findall(pem)
    if not blocks:
        raise ConfigError([f"tls.{role}: no PEM certificate found"])
    try:
        return [Certificate.loadPEM(block) for block in blocks]
    except crypto.Error as exc:
        raise ConfigError([f"tls.{role}: invalid certificate: {exc}"]) from exc


def _private_certificate(material: TlsMaterial) -> tuple[PrivateCertificate, list[Certificate]]:
    """Our leaf certificate with its key, and the intermediates that follow it."""
    leaf, *chain = _certificates(material.cert_pem, "cert")
    try:
        key = KeyPair.load(material.key_pem, crypto.FILETYPE_PEM)
        ours: PrivateCertificate = PrivateCertificate.fromCertificateAndKeyPair(  # type: ignore[no-untyped-call]
            leaf, key
        )
    except (crypto.Error, VerifyError) as exc:  # a bad key, or not the certificate's key
        raise ConfigError([f"tls.key: invalid private key for the certificate: {exc}"]) from exc
    return ours, chain


def _trust_root(material: TlsMaterial) -> IOpenSSLTrustRoot:
    certificates = _certificates(material.ca_pem, "ca")
    root: IOpenSSLTrustRoot = trustRootFromCertificates(certificates)  # type: ignore[no-untyped-call]
    return root


def server_tls_options(material: TlsMaterial) -> CertificateOptions:
    """Server side: present our certificate, require a client certificate from the CA."""
    ours, chain = _private_certificate(material)
    trust = _trust_root(material)
    return CertificateOptions(
        privateKey=ours.privateKey.original,
        certificate=ours.original,
        extraCertChain=[c.original for c in chain],
        trustRoot=trust,  # implies verify=True, requireCertificate=True
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )


def client_tls_creator(material: TlsMaterial, hostname: str) -> IOpenSSLClientConnectionCreator:
    """Client side: check the server against the CA and ``hostname``, present our certificate."""
    ours, chain = _private_certificate(material)
    trust = _trust_root(material)
    return optionsForClientTLS(
        hostname,
        trustRoot=trust,
        clientCertificate=ours,
        extraCertificateOptions={
            "extraCertChain": [c.original for c in chain],
            "raiseMinimumTo": TLSVersion.TLSv1_2,
        },
    )


def server_endpoint(
    reactor: IReactorTCP,
    *,
    host: str,
    port: int,
    tls: TlsMaterial | None = None,
    backlog: int = 50,
) -> IStreamServerEndpoint:
    """A listening endpoint on ``host:port`` (port 0 picks a free port), TLS when given."""
    if tls is None:
        endpoint: IStreamServerEndpoint = TCP4ServerEndpoint(  # type: ignore[no-untyped-call]
            reactor, port, backlog=backlog, interface=host
        )
        return endpoint
    if not IReactorSSL.providedBy(reactor):
        raise ConfigError(["tls: this reactor does not support TLS"])
    ssl_reactor: IReactorSSL = IReactorSSL(reactor)
    options = server_tls_options(tls)
    secure: IStreamServerEndpoint = SSL4ServerEndpoint(  # type: ignore[no-untyped-call]
        ssl_reactor, port, options, backlog=backlog, interface=host
    )
    return secure


def client_endpoint(
    reactor: IReactorTCP,
    *,
    host: str,
    port: int,
    tls: TlsMaterial | None = None,
    server_name: str | None = None,
    connect_timeout: float = 10.0,
) -> IStreamClientEndpoint:
    """An endpoint connecting to ``host:port``; with TLS the server must match ``server_name``
    (``host`` by default) — an IP address is matched against the certificate's IP SANs."""
    tcp = TCP4ClientEndpoint(reactor, host, port, timeout=connect_timeout)
    if tls is None:
        return tcp
    return wrapClientTLS(client_tls_creator(tls, server_name or host), tcp)
