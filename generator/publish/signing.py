"""Signatures of pushed images in the sigstore format cosign reads, stored in the registry.

For each manifest gen pushes (every platform's image and the index) a signature artifact goes
beside it under the tag `sha256-<manifest hex>.sig`: an OCI manifest whose one layer is the
"simple signing" payload (the image's repository and manifest digest) of media type
`application/vnd.dev.cosign.simplesigning.v1+json`, its ECDSA P-256 signature (SHA-256, DER,
base64) in the layer's annotation `dev.cosignproject.cosign/signature`. That is what `cosign sign
--key` writes and `cosign verify --key`, and containers/image with `use-sigstore-attachments`,
read.

gen signs in Python rather than with skopeo's `--sign-by-sigstore-private-key`: Debian 12's skopeo
1.9.3 answers "Debian-local change: sigstore disabled" when signing and when verifying such a
signature. The private key file is the format cosign and skopeo read: a PEM block "ENCRYPTED
SIGSTORE PRIVATE KEY" around a JSON document holding the PKCS#8 key sealed with NaCl secretbox
under a scrypt key from the passphrase. The passphrase comes from the environment or a file,
never from a flag, and is never printed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from generator.errors import GenError, UsageError

PRIVATE_PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"
ACCEPTED_PEM_TYPES = (PRIVATE_PEM_TYPE, "ENCRYPTED COSIGN PRIVATE KEY")  # cosign before 2.0 wrote the latter
SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
# scrypt as cosign sets it (N=2^15, r=8, p=1): about 0.1 s and 32 MiB to open a key.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 32768, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024

KEY_ENV = "GEN_SIGNING_KEY"
PASSPHRASE_ENV = "GEN_KEY_PASSPHRASE"
PASSPHRASE_FILE_ENV = "GEN_KEY_PASSPHRASE_FILE"


class SigningError(GenError):
    """A key that cannot be read or used; exit 2 (bad input), one line."""

    exit_code = 2


def passphrase_from(env: dict[str, str]) -> bytes:
    """The passphrase: from the file GEN_KEY_PASSPHRASE_FILE names, else GEN_KEY_PASSPHRASE."""
    path = Path(env[PASSPHRASE_FILE_ENV]) if env.get(PASSPHRASE_FILE_ENV) else None
    if path is not None:
        try:
            value = path.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise SigningError(f"cannot read the passphrase file {path}: {exc.strerror}") from None
    else:
        value = env.get(PASSPHRASE_ENV, "").encode()
    if not value:
        raise SigningError(
            f"no passphrase: set {PASSPHRASE_FILE_ENV} (a file holding it) or {PASSPHRASE_ENV}, never a flag"
        )
    return value


def _imports():
    """cryptography and PyNaCl, imported only where keys are used (gen's start-up stays fast)."""
    import nacl.exceptions
    import nacl.secret
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return nacl, hashes, serialization, ec


def _scrypt(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, dklen=32, maxmem=SCRYPT_MAXMEM)


def new_key_pair(passphrase: bytes) -> tuple[str, str]:
    """(encrypted private key PEM, public key PEM) of a new ECDSA P-256 key."""
    nacl, _, serialization, ec = _imports()
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    salt, nonce = secrets.token_bytes(32), secrets.token_bytes(24)
    sealed = nacl.secret.SecretBox(_scrypt(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)).encrypt(der, nonce)
    document = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(sealed.ciphertext).decode(),
    }
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _pem(PRIVATE_PEM_TYPE, json.dumps(document).encode()), public.decode()


def _pem(kind: str, data: bytes) -> str:
    body = base64.b64encode(data).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----", ""])


def _pem_body(text: str, path: Path) -> tuple[str, bytes]:
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 3 or not lines[0].startswith("-----BEGIN ") or not lines[-1].startswith("-----END "):
        raise SigningError(f"{path}: not a PEM file")
    kind = lines[0][len("-----BEGIN ") :].rstrip("-")
    try:
        return kind, base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError:
        raise SigningError(f"{path}: its PEM body is not base64") from None


@dataclass(frozen=True)
class Signer:
    """A private key opened with its passphrase; signs payloads."""

    key: object  # cryptography's EllipticCurvePrivateKey
    path: Path

    def sign(self, payload: bytes) -> str:
        _, hashes, _, ec = _imports()
        return base64.b64encode(self.key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()  # type: ignore[attr-defined]

    def public_key(self):
        return self.key.public_key()


def open_private_key(path: Path, passphrase: bytes) -> Signer:
    """The key file `gen keys new` (or cosign, or skopeo generate-sigstore-key) wrote, opened."""
    nacl, _, serialization, ec = _imports()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise SigningError(f"cannot read the signing key {path}: {why}") from None
    kind, body = _pem_body(text, path)
    if kind not in ACCEPTED_PEM_TYPES:
        raise SigningError(f"{path}: a {kind}, not an {PRIVATE_PEM_TYPE} (make one with `gen keys new`)")
    try:
        document = json.loads(body)
        kdf, cipher = document["kdf"], document["cipher"]
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise ValueError(f"kdf {kdf['name']} and cipher {cipher['name']}: only scrypt and nacl/secretbox")
        params = kdf["params"]
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
        if not (2 <= n <= 1 << 20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
            raise ValueError("scrypt parameters out of range")
        box = nacl.secret.SecretBox(_scrypt(passphrase, base64.b64decode(kdf["salt"]), n, r, p))
        sealed = base64.b64decode(document["ciphertext"])
        nonce = base64.b64decode(cipher["nonce"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SigningError(f"{path}: not an encrypted sigstore key ({exc})") from None
    try:
        der = box.decrypt(sealed, nonce)
    except (nacl.exceptions.CryptoError, ValueError):
        raise SigningError(f"{path}: the passphrase does not open this key") from None
    key = serialization.load_der_private_key(der, None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SigningError(f"{path}: gen signs with ECDSA keys only, this is a {type(key).__name__}")
    return Signer(key, path)


def signer_from_env(env: dict[str, str]) -> Signer | None:
    """The signer GEN_SIGNING_KEY names (with its passphrase), or None when it is not set."""
    if not env.get(KEY_ENV):
        return None
    return open_private_key(Path(env[KEY_ENV]), passphrase_from(env))


def read_public_key(path: Path):
    """A public key PEM (what `gen keys new` writes as .pub, or cosign's cosign.pub)."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read the public key {path}: {exc}") from None
    return load_public_key(pem, str(path))


def load_public_key(pem: bytes, where: str):
    """The ECDSA public key in pem; where names it in errors."""
    _, _, serialization, ec = _imports()
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise SigningError(f"cannot read the public key {where}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SigningError(f"{where}: gen verifies ECDSA keys only, this is a {type(key).__name__}")
    return key


def verify_signature(public_key, payload: bytes, signature_b64: str) -> bool:
    """Whether signature_b64 is public_key's signature of payload."""
    from cryptography.exceptions import InvalidSignature

    _, hashes, _, ec = _imports()
    try:
        public_key.verify(base64.b64decode(signature_b64, validate=True), payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def signature_payload(repository: str, digest: str) -> bytes:
    """The simple-signing payload for one manifest: which repository, which digest."""
    document = {
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": None,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def payload_subject(payload: bytes) -> tuple[str, str]:
    """(repository, digest) a simple-signing payload names; ValueError when it is not one."""
    try:
        critical = json.loads(payload)["critical"]
        if critical["type"] != PAYLOAD_TYPE:
            raise ValueError(f"payload type {critical['type']!r}")
        return critical["identity"]["docker-reference"], critical["image"]["docker-manifest-digest"]
    except (KeyError, TypeError, RecursionError) as exc:
        raise ValueError(f"not a simple-signing payload ({exc})") from None


def signature_tag(digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    return f"{algorithm}-{hex_digest}.sig"


def write_key_pair(prefix: Path, passphrase: bytes) -> tuple[Path, Path]:
    """PREFIX.key (0600, encrypted) and PREFIX.pub; refuses to overwrite either."""
    key_path, pub_path = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    for path in (key_path, pub_path):
        if path.exists() or path.is_symlink():
            raise UsageError(f"{path} exists: gen never overwrites a key; move it away or choose another --output")
    private, public = new_key_pair(passphrase)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    _write_new(key_path, private, 0o600)
    _write_new(pub_path, public, 0o644)
    return key_path, pub_path


def _write_new(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


@dataclass(frozen=True)
class ManifestCheck:
    """One manifest of a checked image: its digest, what it is, and the problem ("" when signed)."""

    digest: str
    what: str  # "image", "index", or the platform of an index's image
    problem: str = ""


def check_signed(signatures: list[tuple[bytes, str]], public_key, repository: str, digest: str) -> str:
    """ "" when one of signatures is public_key's, over a payload naming repository and digest;
    else what is wrong."""
    if not signatures:
        return "no signature"
    said = "signed by another key"
    for payload, signature in signatures:
        if not verify_signature(public_key, payload, signature):
            continue
        try:
            named = payload_subject(payload)
        except ValueError as exc:
            said = f"a valid signature over something else ({exc})"
            continue
        if named == (repository, digest):
            return ""
        said = f"a valid signature for {named[0]}@{named[1]}, not this image"
    return said


SIGSTORE_DISABLED = b"Debian-local change: sigstore disabled"


def tools_without_sigstore(tools: tuple[str, ...] = ("skopeo", "podman", "buildah")) -> list[str]:
    """The tools on PATH built without sigstore (Debian 12's: their binaries carry the message
    they answer every sigstore signature with); a policy requiring sigstore signatures makes them
    refuse every image it covers."""
    import shutil

    found = []
    for tool in tools:
        path = shutil.which(tool)
        if path is None:
            continue
        try:
            if SIGSTORE_DISABLED in Path(path).read_bytes():
                found.append(tool)
        except OSError:
            continue
    return found
