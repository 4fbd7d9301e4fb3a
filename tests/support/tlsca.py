"""A throw-away certificate authority for TLS tests.

``make_test_ca(directory)`` writes, into ``directory``:

* ``ca.key`` / ``ca.pem``      a self-signed CA (basicConstraints CA:TRUE),
* ``server.key`` / ``server.pem`` a server certificate signed by it for
  ``IP:127.0.0.1`` and ``DNS:localhost`` (serverAuth),

and returns a :class:`TestCA` with those paths.  Keys are P-256 (fast to
generate) and never leave the directory.  The ``openssl`` command line tool is
used when present; otherwise the ``cryptography`` package, if it is already
installed.  Neither is installed on demand.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TestCA", "TLSUnavailable", "make_test_ca"]


class TLSUnavailable(RuntimeError):
    """Neither the openssl CLI nor the cryptography package is available."""


@dataclass(frozen=True)
class TestCA:
    __test__ = False  # not a pytest test class

    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @property
    def server_pair(self) -> tuple[Path, Path]:
        """``(cert, key)`` as ``Nginx(tls=...)`` wants it."""
        return self.server_cert, self.server_key


_CA_SUBJECT = "/CN=segdl test CA"
_SERVER_SUBJECT = "/CN=127.0.0.1"
_SERVER_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


def make_test_ca(directory: str | Path, *, days: int = 7) -> TestCA:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca = TestCA(d, d / "ca.pem", d / "ca.key", d / "server.pem", d / "server.key")
    openssl = shutil.which("openssl")
    if openssl:
        _with_openssl(openssl, ca, days)
    else:
        _with_cryptography(ca, days)
    for key in (ca.ca_key, ca.server_key):
        key.chmod(0o600)
    return ca


def _run(args: list[str]) -> None:
    p = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stderr}")


def _with_openssl(openssl: str, ca: TestCA, days: int) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run([openssl, "req", "-x509", *ec, "-keyout", str(ca.ca_key), "-out", str(ca.ca_cert),
          "-days", str(days), "-subj", _CA_SUBJECT, "-sha256",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign",
          "-addext", "subjectKeyIdentifier=hash"])
    csr = ca.dir / "server.csr"
    ext = ca.dir / "server.ext"
    ext.write_text(_SERVER_EXT)
    _run([openssl, "req", "-new", *ec, "-keyout", str(ca.server_key), "-out", str(csr),
          "-subj", _SERVER_SUBJECT])
    _run([openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca.ca_cert),
          "-CAkey", str(ca.ca_key), "-CAcreateserial", "-out", str(ca.server_cert),
          "-days", str(days), "-sha256", "-extfile", str(ext)])


def _with_cryptography(ca: TestCA, days: int) -> None:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as e:
        raise TLSUnavailable("need the openssl CLI or the cryptography package") from e

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)

    def write_key(key, path: Path) -> None:
        path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "segdl test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_key(ca_key, ca.ca_key)
    write_key(srv_key, ca.server_key)
    ca.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    ca.server_cert.write_bytes(srv_cert.public_bytes(serialization.Encoding.PEM))
