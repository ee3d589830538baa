"""A certificate authority and server certificates made in the test (with `cryptography`), for
loopback HTTPS fakes: `make_ca(dir)`, then `ca.issue("127.0.0.1", days=30)` -> an ssl context."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Issued:
    context: ssl.SSLContext
    not_after: datetime.datetime
    subject_cn: str


@dataclass
class TestAuthority:
    directory: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def pem_path(self) -> Path:
        return self.directory / "test-ca.pem"

    def issue(self, host: str = "127.0.0.1", days: float = 90, common_name: str = "fake-provider.test") -> Issued:
        """A server certificate for `host` valid for `days` more days, as an ssl context to serve with."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        not_after = now + datetime.timedelta(days=days)
        try:
            san = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        certificate = (x509.CertificateBuilder()
                       .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                       .issuer_name(self.certificate.subject).public_key(key.public_key())
                       .serial_number(x509.random_serial_number())
                       .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(not_after)
                       .add_extension(x509.SubjectAlternativeName([san]), critical=False)
                       .sign(self.key, hashes.SHA256()))
        stem = self.directory / f"server-{x509.random_serial_number()}"
        cert_path, key_path = stem.with_suffix(".pem"), stem.with_suffix(".key")
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        return Issued(context, not_after, common_name)


def make_ca(directory: Path, name: str = "Registry Test CA") -> TestAuthority:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    authority = TestAuthority(directory, key, certificate)
    authority.pem_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return authority
