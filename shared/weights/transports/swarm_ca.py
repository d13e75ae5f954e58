"""The job's certificate authority for the swarm's SSL torrents, derived from the job's bearer token.

libtorrent's SSL torrents carry a root certificate in the torrent's info dict (so in its info-hash);
a peer is let in only over TLS with a certificate that root signed, both ways. The root's key is
derived from the job's token (HKDF into a P-256 key), so every holder of the token (the learner and
each worker) issues its own node certificate locally: no endpoint, no key distribution, and a node
without the token can neither get the torrent (the learner serves it behind the token) nor talk to
a peer. The root certificate is made by whoever creates the torrent (the learner); a node only needs
the key and the root's name to sign, since verification matches the issuer's name and signature.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

ROOT_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prefix-rft swarm CA")])
# libtorrent accepts a peer whose certificate names the torrent (our file name) or "*": one node
# certificate then serves every version of the job.
NODE_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "*")])
# libtorrent loads Diffie-Hellman parameters with every node certificate (and raises a torrent error
# without them, though ECDHE is what TLS picks): the public RFC 7919 group ffdhe2048.
DH_PARAMS = """-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""
_SECP256R1_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_NOT_BEFORE = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
_NOT_AFTER = datetime.datetime(2124, 1, 1, tzinfo=datetime.timezone.utc)


@dataclass(frozen=True)
class NodeCertificate:
    """A node's certificate and private key, PEM: what ``torrent_handle.set_ssl_certificate_buffer`` takes."""

    certificate: str
    private_key: str


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class JobAuthority:
    """The CA of the job whose bearer token is ``token``."""

    def __init__(self, token: str):
        if not token:
            raise ValueError("the swarm transport authenticates peers with the job's token: set auth.token")
        secret = HKDF(algorithm=hashes.SHA256(), length=48, salt=b"prefix-rft swarm CA", info=b"P-256 key").derive(
            token.encode()
        )
        # 48 bytes reduced modulo the order: uniform enough (bias below 2^-128), never zero.
        scalar = int.from_bytes(secret, "big") % (_SECP256R1_ORDER - 1) + 1
        self._key = ec.derive_private_key(scalar, ec.SECP256R1())

    def root_certificate(self) -> str:
        """The PEM root certificate an SSL torrent of this job embeds."""
        public = self._key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(ROOT_NAME)
            .issuer_name(ROOT_NAME)
            .public_key(public)
            .serial_number(1)
            .not_valid_before(_NOT_BEFORE)
            .not_valid_after(_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM).decode()

    def issue_node(self) -> NodeCertificate:
        """A fresh key and a certificate for it, signed by the job's root."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(NODE_NAME)
            .issuer_name(ROOT_NAME)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))  # tolerate clocks a little apart
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        return NodeCertificate(certificate.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key))
