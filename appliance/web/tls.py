"""The page's certificate: made once on the door (the install's first start) when the site has not
installed its own. Self-signed, so a browser asks the installer to trust it once; its SHA-256
fingerprint is printed so that can be checked rather than clicked through."""

import datetime
import os
import socket
import ssl
from pathlib import Path
from typing import Tuple

from appliance.errors import FaceGateError


def fingerprint(cert_file: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    return ":".join("%02X" % b for b in cert.fingerprint(hashes.SHA256()))


def make_certificate(cert_file: Path, key_file: Path, years: int = 10) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())  # small and fast on a Cortex-A7
    host = socket.gethostname()
    names = [x509.DNSName(host), x509.DNSName(host + ".local"), x509.DNSName("localhost"),
             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FaceGate door %s" % host)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365 * years))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(key_file), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def server_context(cert_file: str, key_file: str) -> Tuple[ssl.SSLContext, bool]:
    """The TLS context, making the certificate first when neither file exists; (context, made)."""
    cert, key = Path(cert_file), Path(key_file)
    made = False
    if not cert.exists() and not key.exists():
        make_certificate(cert, key)
        made = True
    elif not cert.exists() or not key.exists():
        raise FaceGateError("web.cert_file %s and web.key_file %s go together: one is missing (remove the other to "
                            "have a new certificate made, or install both)" % (cert, key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as err:
        raise FaceGateError("cannot use the page's certificate %s with key %s: %s (install a matching PEM pair)"
                            % (cert, key, err)) from err
    return context, made
