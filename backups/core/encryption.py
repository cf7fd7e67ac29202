"""Client-side encryption of backups in the age v1 format (https://age-encryption.org/v1), streamed.

Backups are encrypted on the worker to one or more age X25519 recipients (`age1...` public keys) and
decrypted with an identity file (`AGE-SECRET-KEY-1...` lines). The output is a standard binary age file,
so `age -d -i key.txt backup.sql.zst.age` decrypts it too.

The format is implemented here on `cryptography`'s primitives (X25519, HKDF-SHA-256, HMAC-SHA-256,
ChaCha20-Poly1305) rather than with pyrage: pyrage's streaming calls (`encrypt_io`/`decrypt_io`) own
the copy loop (they pull from a reader and push to a writer until EOF), which fits neither the sink's
`Transform.update()` push model nor a `read(n)` pull model without a thread per stream. Here memory
stays at one 64 KiB chunk plus the piece being passed through, and every chunk is authenticated
before any of its plaintext is released. Interoperability with the reference implementation (rage,
through pyrage) is checked by the tests.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
from collections.abc import Iterable, Sequence
from hashlib import sha256
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from backups.core.errors import BackupConfigError, BackupError

__all__ = [
    "AgeDecryptingReader",
    "AgeEncryptor",
    "AgeIdentity",
    "DecryptionError",
    "EncryptionConfigError",
    "Transform",
    "generate_identity",
    "load_identities",
    "parse_identities",
    "parse_recipients",
    "recipients_fingerprint",
]

RECIPIENTS_SETTING = "BACKUPS_AGE_RECIPIENTS"
IDENTITY_SETTING = "BACKUPS_AGE_IDENTITY_FILE"

VERSION_LINE = b"age-encryption.org/v1"
CHUNK_SIZE = 64 * 1024  # plaintext bytes per STREAM chunk
TAG_SIZE = 16
CHUNK_CT_SIZE = CHUNK_SIZE + TAG_SIZE
FILE_KEY_SIZE = 16
PAYLOAD_NONCE_SIZE = 16
X25519_LABEL = b"age-encryption.org/v1/X25519"
MAX_HEADER_SIZE = 1 << 20  # far above any real header (an X25519 stanza is ~100 bytes)
_ZERO_NONCE = bytes(12)
_PUBLIC_HRP = "age"
_SECRET_HRP = "age-secret-key-"


class EncryptionConfigError(BackupConfigError, ValueError):
    """An age recipient or identity setting cannot be used."""


class DecryptionError(BackupError):
    """An encrypted backup cannot be decrypted: wrong identity, or damaged or tampered data."""


# --- Bech32 (BIP 173, without its 90-character limit, as age uses it) ---------------------------------

_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_VALUES = {c: i for i, c in enumerate(_BECH32_CHARSET)}


def _bech32_polymod(values: Iterable[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: Iterable[int], from_bits: int, to_bits: int, pad: bool) -> bytes | None:
    acc = bits = 0
    out = bytearray()
    maxv = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits or (acc << (to_bits - bits)) & maxv:
        return None  # leftover bits must be zero padding of less than one group
    return bytes(out)


def _bech32_encode(hrp: str, data: bytes) -> str:
    values = list(_convert_bits(data, 8, 5, True) or b"")
    polymod = _bech32_polymod(_hrp_expand(hrp) + values + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[v] for v in values + checksum)


def _bech32_decode(text: str) -> tuple[str, bytes] | None:
    """(hrp, data) of a valid Bech32 string, else None."""
    if not text or any(ord(c) < 33 or ord(c) > 126 for c in text):
        return None
    if text.lower() != text and text.upper() != text:
        return None  # mixed case
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        return None
    hrp, rest = text[:pos], text[pos + 1:]
    if any(c not in _BECH32_VALUES for c in rest):
        return None
    values = [_BECH32_VALUES[c] for c in rest]
    if _bech32_polymod(_hrp_expand(hrp) + values) != 1:
        return None
    data = _convert_bits(values[:-6], 5, 8, False)
    return None if data is None else (hrp, data)


# --- Keys ---------------------------------------------------------------------------------------------


def _public_key_bytes(recipient: str) -> bytes | None:
    decoded = _bech32_decode(recipient)
    if decoded is None or decoded[0] != _PUBLIC_HRP or len(decoded[1]) != 32:
        return None
    return decoded[1]


def _encode_recipient(public: bytes) -> str:
    return _bech32_encode(_PUBLIC_HRP, public)


class AgeIdentity:
    """An X25519 age identity (secret key). Its repr and str never show the secret."""

    __slots__ = ("_key", "recipient")

    def __init__(self, secret: bytes) -> None:
        self._key = X25519PrivateKey.from_private_bytes(secret)
        self.recipient = _encode_recipient(self._key.public_key().public_bytes_raw())  # the public key, age1...

    @classmethod
    def from_string(cls, text: str) -> AgeIdentity | None:
        """Parse `AGE-SECRET-KEY-1...`; None if it is not one."""
        decoded = _bech32_decode(text.strip())
        if decoded is None or decoded[0] != _SECRET_HRP or len(decoded[1]) != 32:
            return None
        return cls(decoded[1])

    def __repr__(self) -> str:
        return f"<AgeIdentity for {self.recipient}>"

    __str__ = __repr__

    def _unwrap(self, args: list[bytes], body: bytes) -> bytes | None:
        """The file key from an X25519 stanza addressed to this identity, else None."""
        if len(args) != 2 or len(body) != FILE_KEY_SIZE + TAG_SIZE:
            raise DecryptionError("The encrypted backup's header has a malformed X25519 stanza: it is damaged.")
        share = _b64decode(args[1])
        if share is None or len(share) != 32:
            raise DecryptionError("The encrypted backup's header has a malformed X25519 stanza: it is damaged.")
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:  # an all-zero shared secret (low-order point): the spec says abort
            raise DecryptionError("The encrypted backup's header has an invalid X25519 share: it is damaged.") \
                from None
        ours = self._key.public_key().public_bytes_raw()
        wrap_key = _hkdf(shared, share + ours, X25519_LABEL)
        try:
            return ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, body, None)
        except InvalidTag:
            return None


def generate_identity() -> tuple[str, str]:
    """A new X25519 identity: (`AGE-SECRET-KEY-1...`, `age1...`), as `age-keygen` makes them."""
    secret = os.urandom(32)
    return _bech32_encode(_SECRET_HRP, secret).upper(), AgeIdentity(secret).recipient


def parse_recipients(text: str) -> list[str]:
    """The `age1...` public keys in a comma/whitespace-separated setting value, checked and lower-cased.

    An empty value gives an empty list (no encryption). Duplicates are dropped, order kept.
    """
    keys: list[str] = []
    for item in re.split(r"[\s,]+", text or ""):
        if not item:
            continue
        if item.upper().startswith("AGE-SECRET-KEY-"):
            raise EncryptionConfigError(
                f"{RECIPIENTS_SETTING} contains a secret key ({item[:12]!r}...): put its public age1... key there.")
        if _public_key_bytes(item) is None:
            raise EncryptionConfigError(
                f"{RECIPIENTS_SETTING} has {item[:12]!r}..., which is not an age X25519 public key (age1...).")
        key = item.lower()
        if key not in keys:
            keys.append(key)
    return keys


def parse_identities(text: str, source: str = IDENTITY_SETTING) -> list[AgeIdentity]:
    """The identities in the text of an age identity file (one key a line; blank lines and `#` comments)."""
    identities = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        identity = AgeIdentity.from_string(line)
        if identity is None:  # the line is not echoed: it may be a mangled secret
            raise EncryptionConfigError(
                f"{source}: line {number} is not an age X25519 secret key (AGE-SECRET-KEY-1...).")
        identities.append(identity)
    return identities


def load_identities(path: str | os.PathLike[str]) -> list[AgeIdentity]:
    """The identities in the age identity file at `path` (the BACKUPS_AGE_IDENTITY_FILE setting)."""
    if not path:
        raise EncryptionConfigError(f"{IDENTITY_SETTING} is not set, so encrypted backups cannot be decrypted.")
    source = f"{IDENTITY_SETTING} ({path})"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EncryptionConfigError(f"{source} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a UTF-8 text file"
        raise EncryptionConfigError(f"{source} cannot be read: {reason}.") from None
    identities = parse_identities(text, source)
    if not identities:
        raise EncryptionConfigError(f"{source} holds no age secret key (AGE-SECRET-KEY-1...).")
    return identities


def recipients_fingerprint(recipients: Iterable[str]) -> list[str]:
    """What to record in a manifest about who can decrypt: the normalized public keys, sorted. No secrets."""
    text = recipients if isinstance(recipients, str) else ",".join(recipients)
    return sorted(parse_recipients(text))


# --- Primitives ---------------------------------------------------------------------------------------


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _b64encode(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _b64decode(text: bytes) -> bytes | None:
    """Canonical unpadded standard base64, else None."""
    if b"=" in text or not re.fullmatch(rb"[A-Za-z0-9+/]*", text):
        return None
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if _b64encode(data) == text else None


def _header_mac(file_key: bytes, header_up_to_dashes: bytes) -> bytes:
    return hmac.new(_hkdf(file_key, b"", b"header"), header_up_to_dashes, sha256).digest()


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


# --- Encryption ---------------------------------------------------------------------------------------


class Transform:
    """A streaming byte transform (encryption) between compression and storage."""

    def update(self, data: bytes) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        raise NotImplementedError


class AgeEncryptor(Transform):
    """Streams plaintext into an age v1 file for `recipients` (`age1...` keys).

    `update()` returns the ciphertext that is ready (the header first), `finish()` the final chunk.
    Holds at most one 64 KiB chunk besides the piece being passed in.
    """

    def __init__(self, recipients: Sequence[str]) -> None:
        keys = parse_recipients(",".join(recipients))
        if not keys:
            raise EncryptionConfigError(f"{RECIPIENTS_SETTING} names no recipient, so nothing can be encrypted.")
        self.recipients = keys
        file_key = os.urandom(FILE_KEY_SIZE)
        header = bytearray(VERSION_LINE + b"\n")
        for key in keys:
            public = _public_key_bytes(key)
            assert public is not None
            ephemeral = X25519PrivateKey.generate()
            share = ephemeral.public_key().public_bytes_raw()
            shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public))
            body = ChaCha20Poly1305(_hkdf(shared, share + public, X25519_LABEL)).encrypt(_ZERO_NONCE, file_key, None)
            header += b"-> X25519 " + _b64encode(share) + b"\n"
            encoded = _b64encode(body)
            for i in range(0, len(encoded) + 1, 64):  # ends with a line shorter than 64, maybe empty
                header += encoded[i:i + 64] + b"\n"
        header += b"---"
        header += b" " + _b64encode(_header_mac(file_key, bytes(header))) + b"\n"
        nonce = os.urandom(PAYLOAD_NONCE_SIZE)
        self._pending: bytes | None = bytes(header) + nonce  # sent with the first output
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._buf = bytearray()
        self._counter = 0
        self._finished = False

    def _seal(self, chunk, last: bool) -> bytes:
        out = self._aead.encrypt(_chunk_nonce(self._counter, last), chunk, None)
        self._counter += 1
        return out

    def update(self, data: bytes) -> bytes:
        if self._finished:
            raise RuntimeError("AgeEncryptor.update() after finish().")
        out: list[bytes] = []
        if self._pending is not None:
            out.append(self._pending)
            self._pending = None
        view = memoryview(data).cast("B")
        if self._buf:  # top up the held chunk; it is sealed only once more data shows it is not the last
            take = CHUNK_SIZE - len(self._buf)
            self._buf += view[:take]
            view = view[take:]
            if not view:
                return b"".join(out)
            out.append(self._seal(self._buf, False))
            self._buf.clear()
        while len(view) > CHUNK_SIZE:
            out.append(self._seal(view[:CHUNK_SIZE], False))
            view = view[CHUNK_SIZE:]
        self._buf += view
        return b"".join(out)

    def finish(self) -> bytes:
        """The final chunk (which may be a full 64 KiB; it is empty only for an empty payload)."""
        if self._finished:
            raise RuntimeError("AgeEncryptor.finish() called twice.")
        self._finished = True
        head, self._pending = self._pending or b"", None
        tail = self._seal(self._buf, True)
        self._buf = bytearray()
        return head + tail


# --- Decryption ---------------------------------------------------------------------------------------

_DAMAGED = "The encrypted backup's header is malformed: it is damaged or not an age file."


class AgeDecryptingReader:
    """The plaintext of an age v1 file read from `raw`, authenticated chunk by chunk.

    `identities` are `AgeIdentity` objects (see `load_identities`) or `AGE-SECRET-KEY-1...` strings.
    The header is read on the first `read()`. Any failure raises `DecryptionError`; a file cut short
    (no final chunk) is an error, never a silent short read.
    """

    def __init__(self, raw: BinaryIO, identities: Iterable[AgeIdentity | str]) -> None:
        self.raw = raw
        self.identities: list[AgeIdentity] = []
        for identity in identities:
            if isinstance(identity, str):
                parsed = AgeIdentity.from_string(identity)
                if parsed is None:
                    raise EncryptionConfigError(f"{IDENTITY_SETTING}: a key is not an age X25519 secret key.")
                identity = parsed
            self.identities.append(identity)
        if not self.identities:
            raise EncryptionConfigError(f"{IDENTITY_SETTING} holds no identity to decrypt with.")
        self._in = bytearray()  # ciphertext read ahead (at most one chunk and one byte)
        self._raw_eof = False
        self._aead: ChaCha20Poly1305 | None = None
        self._counter = 0
        self._plain = b""
        self._pos = 0
        self._done = False  # the final chunk was verified
        self._header_size = 0
        self._failed: DecryptionError | None = None

    # raw input

    def _fill(self, size: int) -> None:
        """Read until `size` bytes are buffered or the raw stream ends."""
        while len(self._in) < size and not self._raw_eof:
            data = self.raw.read(size - len(self._in))
            if not data:
                self._raw_eof = True
            else:
                self._in += data

    def _line(self) -> bytes:
        """One header line, without its LF."""
        start = 0
        while True:
            end = self._in.find(b"\n", start)
            if end >= 0:
                line = bytes(self._in[:end])
                del self._in[:end + 1]
                self._header_size += end + 1
                if self._header_size > MAX_HEADER_SIZE:
                    raise DecryptionError(_DAMAGED)
                return line
            start = len(self._in)
            if self._raw_eof or start > MAX_HEADER_SIZE:
                raise DecryptionError("The encrypted backup ends inside its header: it is truncated or not age.")
            self._fill(start + 4096)

    def _read_header(self) -> None:
        self._header_size = 0
        self._fill(64)
        if self._in.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----"):
            raise DecryptionError("The backup is an ASCII-armored age file; only binary age files are supported.")
        if not self._in.startswith(b"age-encryption.org/"):
            raise DecryptionError("The backup is not an age v1 encrypted file (it does not start with the age header).")
        first = self._line()
        if first != VERSION_LINE:
            raise DecryptionError("The backup is not an age v1 encrypted file (its first line is not the age header).")
        header = bytearray(first + b"\n")
        stanzas: list[tuple[list[bytes], bytes]] = []
        while True:
            line = self._line()
            if line.startswith(b"---"):
                if not stanzas or line[3:4] != b" ":
                    raise DecryptionError(_DAMAGED)
                header += b"---"
                mac = _b64decode(line[4:])
                if mac is None or len(mac) != 32:
                    raise DecryptionError(_DAMAGED)
                break
            if not line.startswith(b"-> "):
                raise DecryptionError(_DAMAGED)
            args = line[3:].split(b" ")
            if any(not arg or not all(33 <= b <= 126 for b in arg) for arg in args):
                raise DecryptionError(_DAMAGED)
            header += line + b"\n"
            body = bytearray()
            while True:
                part = self._line()
                header += part + b"\n"
                if len(part) > 64:
                    raise DecryptionError(_DAMAGED)
                body += part
                if len(part) < 64:
                    break
            decoded = _b64decode(bytes(body))
            if decoded is None:
                raise DecryptionError(_DAMAGED)
            stanzas.append((args, decoded))

        file_key = self._unwrap(stanzas)
        if not hmac.compare_digest(_header_mac(file_key, bytes(header)), mac):
            raise DecryptionError("The encrypted backup's header fails its MAC check: it was tampered with or damaged.")
        self._fill(PAYLOAD_NONCE_SIZE)
        if len(self._in) < PAYLOAD_NONCE_SIZE:
            raise DecryptionError("The encrypted backup ends before its payload: it is truncated.")
        nonce = bytes(self._in[:PAYLOAD_NONCE_SIZE])
        del self._in[:PAYLOAD_NONCE_SIZE]
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))

    def _unwrap(self, stanzas: list[tuple[list[bytes], bytes]]) -> bytes:
        x25519 = [(args, body) for args, body in stanzas if args[0] == b"X25519"]
        for args, body in x25519:
            for identity in self.identities:
                file_key = identity._unwrap(args, body)
                if file_key is not None:
                    return file_key
        if x25519:
            raise DecryptionError("None of the identities in BACKUPS_AGE_IDENTITY_FILE can decrypt this backup: "
                                  "it was encrypted to other age recipients.")
        kinds = ", ".join(sorted({args[0].decode("ascii") for args, _ in stanzas}))
        raise DecryptionError(f"This backup was encrypted to recipients of another kind ({kinds}), "
                              "not to an age X25519 key.")

    # payload

    def _next_chunk(self) -> None:
        assert self._aead is not None
        self._fill(CHUNK_CT_SIZE + 1)  # one byte of look-ahead: a full chunk followed by EOF is the last one
        last = len(self._in) <= CHUNK_CT_SIZE
        if last:
            chunk = bytes(self._in)
            self._in.clear()
        else:
            chunk = bytes(self._in[:CHUNK_CT_SIZE])
            del self._in[:CHUNK_CT_SIZE]
        if len(chunk) < TAG_SIZE:
            raise DecryptionError("The encrypted backup is truncated: its last chunk is missing or cut short.")
        try:
            plain = self._aead.decrypt(_chunk_nonce(self._counter, last), chunk, None)
        except InvalidTag:
            if last:
                raise DecryptionError("The encrypted backup's last chunk does not authenticate: it is truncated "
                                      "or was tampered with.") from None
            raise DecryptionError(f"The encrypted backup's chunk {self._counter} does not authenticate: it was "
                                  "tampered with or damaged.") from None
        if last and not plain and self._counter > 0:
            raise DecryptionError("The encrypted backup ends with an empty chunk, which age forbids: it is damaged.")
        self._counter += 1
        self._plain, self._pos = plain, 0
        self._done = last

    def read(self, size: int = -1) -> bytes:
        """Up to `size` plaintext bytes (all the rest if negative); fewer only at the end."""
        if self._failed is not None:  # a damaged stream stays failed: no reading past a bad chunk
            raise self._failed
        try:
            return self._read(size)
        except DecryptionError as exc:
            self._failed = exc
            raise

    def _read(self, size: int) -> bytes:
        if self._aead is None:
            self._read_header()
        pieces: list[bytes] = []
        want = size if size is not None and size >= 0 else -1
        while want != 0:
            if self._pos >= len(self._plain):
                if self._done:
                    break
                self._next_chunk()
                continue
            available = len(self._plain) - self._pos
            take = available if want < 0 else min(want, available)
            if self._pos == 0 and take == len(self._plain):
                pieces.append(self._plain)
            else:
                pieces.append(self._plain[self._pos:self._pos + take])
            self._pos += take
            if want > 0:
                want -= take
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> AgeDecryptingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
