"""Ed25519 signatures (RFC 8032) in pure Python, for minting EdDSA benchmark tokens
without third-party packages. Signing only, with a precomputed table of the base
point's multiples: about 0.3 ms a signature, so thousands of distinct tokens take a few
seconds. Not constant-time: for test keys only, never for a key that protects anything.
"""

import base64
import hashlib
import os

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
# Extended coordinates (X, Y, Z, T): x = X/Z, y = Y/Z, x*y = T/Z.
_BASE = (_BX, _BY, 1, _BX * _BY % P)
_IDENTITY = (0, 1, 1, 0)
# PKCS#8 DER of an Ed25519 private key is this prefix and the 32-byte seed (RFC 8410).
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
# SubjectPublicKeyInfo DER of an Ed25519 public key: this prefix and the 32-byte key.
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def _add(p, q):
    """Point addition on the twisted Edwards curve (a = -1), RFC 8032 section 5.1.4."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _table():
    """_TABLE[i][j] = j * 16^i * B, for the 64 hex digits of a scalar."""
    table = []
    step = _BASE
    for _ in range(64):
        row = [_IDENTITY]
        for _ in range(15):
            row.append(_add(row[-1], step))
        table.append(row)
        step = _add(row[15], step)  # 16 * step
    return table


_TABLE = _table()


def _base_mult(scalar):
    point = _IDENTITY
    for i in range(64):
        digit = (scalar >> (4 * i)) & 15
        if digit:
            point = _add(point, _TABLE[i][digit])
    return point


def _encode(point):
    x, y, z, _ = point
    inverse = pow(z, -1, P)
    x, y = x * inverse % P, y * inverse % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _sha512_int(*parts):
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little")


class SigningKey:
    """An Ed25519 key pair from a 32-byte seed (random when none is given)."""

    def __init__(self, seed=None):
        self.seed = seed if seed is not None else os.urandom(32)
        if len(self.seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        digest = hashlib.sha512(self.seed).digest()
        self._scalar = (int.from_bytes(digest[:32], "little") & ((1 << 254) - 8)) | (1 << 254)
        self._prefix = digest[32:]
        self.public = _encode(_base_mult(self._scalar))

    def sign(self, message):
        r = _sha512_int(self._prefix, message) % L
        encoded_r = _encode(_base_mult(r))
        k = _sha512_int(encoded_r, self.public, message) % L
        return encoded_r + ((r + k * self._scalar) % L).to_bytes(32, "little")

    def private_pem(self):
        """PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes it."""
        return _pem("PRIVATE KEY", _PKCS8_PREFIX + self.seed)

    def public_pem(self):
        """SubjectPublicKeyInfo PEM, as `openssl pkey -pubout` writes it."""
        return _pem("PUBLIC KEY", _SPKI_PREFIX + self.public)

    def jwk(self, kid):
        """The public key as svc-users publishes it in its JWK Set (RFC 8037)."""
        return {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(self.public).rstrip(b"=").decode(),
                "kid": kid, "alg": "EdDSA", "use": "sig"}


def _pem(label, der):
    body = base64.b64encode(der).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"
