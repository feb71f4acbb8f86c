"""A local certificate authority and a server certificate it signs (with the ``cryptography``
package), for nginx to terminate TLS in `make cluster` and in docker compose:

    python -m deploy.tls DIR [--host NAME ...] [--ip ADDRESS ...]

writes DIR/ca.pem (what clients trust), DIR/server.pem (the server's certificate, then the
CA's) and DIR/server.key (readable by its owner only). A production deployment uses its own
CA's certificates (or an ACME client's) in the same three places.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cinerec local"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def make_certificates(
    folder: Path,
    *,
    hosts: tuple[str, ...] = ("localhost",),
    ips: tuple[str, ...] = ("127.0.0.1", "::1"),
    days: int = 397,
) -> Certificates:
    """A new CA (its key is thrown away once it has signed: nothing else can be issued under
    it) and a server certificate for ``hosts`` and ``ips``, valid ``days`` (browsers' limit)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC) - timedelta(minutes=5)  # clocks a little behind still accept it
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("cinerec local CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0] if hosts else ips[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    made = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    made.ca.write_bytes(ca.public_bytes(pem))
    made.cert.write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    made.key.touch(mode=0o600)
    os.chmod(made.key, 0o600)
    made.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return made


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument(
        "--host", action="append", default=None, help="a DNS name (repeat; default localhost)"
    )
    parser.add_argument(
        "--ip", action="append", default=None, help="an address (repeat; default 127.0.0.1, ::1)"
    )
    args = parser.parse_args()
    made = make_certificates(
        args.folder, hosts=tuple(args.host or ("localhost",)), ips=tuple(args.ip or ("127.0.0.1", "::1"))
    )
    print(f"CA {made.ca}\ncertificate {made.cert}\nkey {made.key}")


if __name__ == "__main__":
    main()
