"""age v1 encryption of backups: streaming round trips, the format's edge cases, tampering, interop, memory."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import os
import tracemalloc

import pyrage
import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from backups.core.compression import make_compressor, open_decompressed
from backups.core.encryption import (
    CHUNK_CT_SIZE,
    CHUNK_SIZE,
    AgeDecryptingReader,
    AgeEncryptor,
    AgeIdentity,
    DecryptionError,
    EncryptionConfigError,
    _chunk_nonce,
    _header_mac,
    _hkdf,
    generate_identity,
    load_identities,
    parse_identities,
    parse_recipients,
    recipients_fingerprint,
)
from backups.storage.sink import BackupSink

SECRET, PUBLIC = generate_identity()
SECRET2, PUBLIC2 = generate_identity()

# From the age specification (c2sp.org/age) and its test kit (FiloSottile/age testdata/testkit/x25519).
SPEC_SECRET = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SPEC_PUBLIC = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
KIT_IDENTITY = "AGE-SECRET-KEY-1XMWWC06LY3EE5RYTXM9MFLAZ2U56JJJ36S0MYPDRWSVLUL66MV4QX3S7F6"
KIT_FILE_KEY = bytes.fromhex("59454c4c4f57205355424d4152494e45")
KIT_HEADER = (b"age-encryption.org/v1\n"
              b"-> X25519 TEiF0ypqr+bpvcqXNyCVJpL7OuwPdVwPL7KQEbFDOCc\n"
              b"EmECAEcKN+n/Vs9SbWiV+Hu0r+E8R77DdWYyd83nw7U\n"
              b"--- Vn+54jqiiUCE+WZcEVY3f1sqHjlu/z1LCQ/T7Xm7qI0\n")


def encrypt(data: bytes, recipients=(PUBLIC,), pieces=None) -> bytes:
    enc = AgeEncryptor(list(recipients))
    if pieces is None:
        return enc.update(data) + enc.finish()
    out, pos = [], 0
    for size in itertools.cycle(pieces):
        if pos >= len(data):
            break
        out.append(enc.update(data[pos:pos + size]))
        pos += size
    out.append(enc.finish())
    return b"".join(out)


def decrypt(ct: bytes, identities=(SECRET,), reads=None) -> bytes:
    reader = AgeDecryptingReader(io.BytesIO(ct), list(identities))
    if reads is None:
        return reader.read()
    out = []
    for size in itertools.cycle(reads):
        data = reader.read(size)
        if not data:
            break
        assert len(data) <= size
        out.append(data)
    assert reader.read() == b"" and reader.read(10) == b""
    return b"".join(out)


def header_length(ct: bytes) -> int:
    return ct.index(b"\n---") + len(b"\n--- ") + 43 + 1


def pyrage_identity(secret: str):
    return pyrage.x25519.Identity.from_str(secret)


# --- Round trips and the STREAM chunking rules ---------------------------------------------------------


def test_round_trip_20mb_irregular_writes_and_reads():
    data = os.urandom(20 << 20)
    ct = encrypt(data, pieces=[1, 7, 65536, 65537, 1 << 20, 3, 65535, 131072, 500_001, 2])
    assert ct.startswith(b"age-encryption.org/v1\n-> X25519 ")
    chunks = -(-len(data) // CHUNK_SIZE)
    assert len(ct) == header_length(ct) + 16 + len(data) + 16 * chunks
    assert decrypt(ct, reads=[1, 13, 65536, 65537, 1 << 20, 100_000, 2, 3 << 20]) == data
    assert pyrage.decrypt(ct, [pyrage_identity(SECRET)]) == data


def test_output_comes_out_as_it_is_ready():
    enc = AgeEncryptor([PUBLIC])
    first = enc.update(b"")
    assert first.startswith(b"age-encryption.org/v1\n") and len(first) == header_length(first) + 16
    assert enc.update(b"x" * CHUNK_SIZE) == b""  # held: it may be the final chunk
    assert len(enc.update(b"y")) == CHUNK_CT_SIZE  # now known not to be
    assert len(enc.finish()) == 1 + 16
    with pytest.raises(RuntimeError):
        enc.update(b"z")


@pytest.mark.parametrize("size, chunks", [(0, 1), (1, 1), (CHUNK_SIZE - 1, 1), (CHUNK_SIZE, 1),
                                          (CHUNK_SIZE + 1, 2), (2 * CHUNK_SIZE, 2), (3 * CHUNK_SIZE + 5, 4)])
def test_final_chunk_rule(size, chunks):
    """The last chunk may be full; it is empty only when the whole payload is."""
    data = os.urandom(size)
    for pieces in (None, [1000], [CHUNK_SIZE]):
        ct = encrypt(data, pieces=pieces)
        assert len(ct) == header_length(ct) + 16 + size + 16 * chunks
        assert decrypt(ct) == data
        assert pyrage.decrypt(ct, [pyrage_identity(SECRET)]) == data


def test_empty_payload():
    enc = AgeEncryptor([PUBLIC])
    ct = enc.finish()  # no update at all: header, nonce, one empty final chunk
    assert len(ct) == header_length(ct) + 16 + 16
    assert decrypt(ct) == b""
    assert pyrage.decrypt(ct, [pyrage_identity(SECRET)]) == b""


def test_an_empty_final_chunk_after_data_is_refused():
    enc = AgeEncryptor([PUBLIC])
    ct = enc.update(b"a" * CHUNK_SIZE)
    ct += enc._seal(enc._buf, False) + enc._seal(b"", True)  # what a careless encoder would write
    with pytest.raises(DecryptionError, match="empty chunk"):
        decrypt(ct)
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(ct, [pyrage_identity(SECRET)])


def test_through_the_backup_sink_with_zstd():
    class Writer:
        def __init__(self):
            self.buf = io.BytesIO()

        def write(self, data):
            self.buf.write(data)

    data = b"".join(b"INSERT INTO t VALUES (%d, 'row');\n" % i for i in range(200_000))
    writer = Writer()
    sink = BackupSink(writer, make_compressor("zstd"), transforms=(AgeEncryptor([PUBLIC]),))
    for i in range(0, len(data), 100_000):
        sink.write(data[i:i + 100_000])
    result = sink.finish()
    stored = writer.buf.getvalue()
    assert result.size == len(stored) and result.plain_size == len(data)
    plain = open_decompressed(AgeDecryptingReader(io.BytesIO(stored), [SECRET]), "zstd")
    assert plain.read() == data


# --- Recipients and identities -------------------------------------------------------------------------


def test_two_recipients_each_identity_decrypts():
    data = os.urandom(300_000)
    ct = encrypt(data, recipients=[PUBLIC, PUBLIC2])
    assert ct.count(b"\n-> X25519 ") == 2
    assert decrypt(ct, identities=[SECRET]) == data
    assert decrypt(ct, identities=[SECRET2]) == data
    other, _ = generate_identity()
    assert decrypt(ct, identities=[other, SECRET2]) == data
    assert pyrage.decrypt(ct, [pyrage_identity(SECRET2)]) == data


def test_wrong_identity_fails():
    other, _ = generate_identity()
    ct = encrypt(b"secret rows")
    with pytest.raises(DecryptionError, match="BACKUPS_AGE_IDENTITY_FILE"):
        decrypt(ct, identities=[other])


def test_keys_match_the_specification():
    identity = AgeIdentity.from_string(SPEC_SECRET)
    assert identity.recipient == SPEC_PUBLIC
    assert AgeIdentity.from_string(SPEC_SECRET.lower()).recipient == SPEC_PUBLIC
    assert parse_recipients(SPEC_PUBLIC.upper()) == [SPEC_PUBLIC]
    assert SPEC_SECRET not in repr(identity) and "GFPYYSJZ" not in str(identity)


def test_generated_keys_agree_with_rage():
    secret, public = generate_identity()
    assert secret.startswith("AGE-SECRET-KEY-1") and public.startswith("age1") and len(public) == 62
    assert str(pyrage.x25519.Identity.from_str(secret).to_public()) == public
    rage_identity = pyrage.x25519.Identity.generate()
    assert AgeIdentity.from_string(str(rage_identity)).recipient == str(rage_identity.to_public())


def test_test_kit_header_unwraps_and_authenticates():
    identity = AgeIdentity.from_string(KIT_IDENTITY)
    lines = KIT_HEADER.split(b"\n")
    args = lines[1][3:].split(b" ")
    body = base64.b64decode(lines[2] + b"=")
    assert identity._unwrap(args, body) == KIT_FILE_KEY
    mac = base64.b64decode(lines[3][4:] + b"=")
    assert _header_mac(KIT_FILE_KEY, KIT_HEADER[:KIT_HEADER.index(b"---") + 3]) == mac
    # and the reader accepts that real header, followed by a payload made with its file key
    nonce = os.urandom(16)
    aead = ChaCha20Poly1305(_hkdf(KIT_FILE_KEY, nonce, b"payload"))
    ct = KIT_HEADER + nonce + aead.encrypt(_chunk_nonce(0, True), b"yellow submarine", None)
    assert decrypt(ct, identities=[KIT_IDENTITY]) == b"yellow submarine"


def test_parse_recipients():
    assert parse_recipients("") == []
    assert parse_recipients(f" {PUBLIC},{PUBLIC2}\n{PUBLIC} ") == [PUBLIC, PUBLIC2]
    assert recipients_fingerprint([PUBLIC2, PUBLIC, PUBLIC2.upper()]) == sorted([PUBLIC, PUBLIC2])
    assert recipients_fingerprint(f"{PUBLIC} {PUBLIC2}") == sorted([PUBLIC, PUBLIC2])


@pytest.mark.parametrize("bad", [
    "age1notakey",
    PUBLIC[:-1] + ("q" if PUBLIC[-1] != "q" else "p"),  # checksum
    PUBLIC[:10] + PUBLIC[10:].upper(),  # mixed case
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO",
    "age1pq1x34nzsvr0rxjsgdn8zgyhfe8j7ceq5r9rdelkjuh3y235jzxshfg87pzf5zrqtzdxz95paef6caq5aapd",
    SPEC_PUBLIC.replace("age1", "agf1"),
])
def test_malformed_recipient_names_the_setting(bad):
    with pytest.raises(EncryptionConfigError) as caught:
        parse_recipients(f"{PUBLIC}, {bad}")
    message = str(caught.value)
    assert "BACKUPS_AGE_RECIPIENTS" in message and repr(bad.split()[0][:12]) in message
    assert isinstance(caught.value, ValueError)


def test_a_secret_key_in_the_recipients_setting_is_not_echoed():
    with pytest.raises(EncryptionConfigError, match="BACKUPS_AGE_RECIPIENTS contains a secret key") as caught:
        parse_recipients(SECRET)
    assert SECRET[12:] not in str(caught.value)


def test_encryptor_needs_a_recipient():
    with pytest.raises(EncryptionConfigError, match="BACKUPS_AGE_RECIPIENTS"):
        AgeEncryptor([])


def test_load_identities(tmp_path):
    path = tmp_path / "key.txt"
    path.write_text(f"# created: today\n# public key: {PUBLIC}\n{SECRET}\n\n  {SECRET2}  \n")
    identities = load_identities(path)
    assert [i.recipient for i in identities] == [PUBLIC, PUBLIC2]
    assert decrypt(encrypt(b"x", recipients=[PUBLIC2]), identities=identities) == b"x"


@pytest.mark.parametrize("content, match", [
    (None, "does not exist"),
    ("", "no age secret key"),
    ("# only a comment\n\n", "no age secret key"),
    ("AGE-SECRET-KEY-1SECRETSTUFFTHATISMANGLED\n", "line 1 is not an age X25519 secret key"),
    (b"\xff\xfe\x00garbage", "cannot be read"),
    ("dir", "cannot be read"),
])
def test_bad_identity_file_names_the_setting(tmp_path, content, match):
    path = tmp_path / "key.txt"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(EncryptionConfigError, match=match) as caught:
        load_identities(path)
    assert "BACKUPS_AGE_IDENTITY_FILE" in str(caught.value)
    assert "SECRETSTUFF" not in str(caught.value)


def test_unset_identity_file():
    with pytest.raises(EncryptionConfigError, match="BACKUPS_AGE_IDENTITY_FILE is not set"):
        load_identities("")
    with pytest.raises(EncryptionConfigError, match="BACKUPS_AGE_IDENTITY_FILE"):
        parse_identities(f"{SECRET}\n{PUBLIC}\n")


# --- Truncation and tampering --------------------------------------------------------------------------


def test_truncation_is_detected_everywhere():
    data = os.urandom(3 * CHUNK_SIZE)  # three full chunks, the last one final
    ct = encrypt(data)
    head = header_length(ct)
    cuts = [0, 10, head - 1, head, head + 8, head + 16, head + 17, head + 16 + CHUNK_CT_SIZE,
            head + 16 + CHUNK_CT_SIZE + 1, head + 16 + 2 * CHUNK_CT_SIZE, len(ct) - 16, len(ct) - 1]
    for cut in cuts:
        with pytest.raises(DecryptionError):
            decrypt(ct[:cut], reads=[4096])


def test_trailing_data_is_refused():
    ct = encrypt(os.urandom(1000))
    with pytest.raises(DecryptionError):
        decrypt(ct + b"\x00")


def test_every_flipped_header_byte_fails():
    ct = encrypt(b"payload " * 100)
    for pos in range(header_length(ct)):
        damaged = bytearray(ct)
        damaged[pos] ^= 0x01
        with pytest.raises(DecryptionError):
            decrypt(bytes(damaged))


def test_flipped_payload_bytes_fail():
    data = os.urandom(2 * CHUNK_SIZE + 100)
    ct = encrypt(data)
    head = header_length(ct)
    positions = [head, head + 15, head + 16, head + 16 + CHUNK_SIZE + 5, head + 16 + CHUNK_CT_SIZE + 1000,
                 len(ct) - 17, len(ct) - 1]
    for pos in positions:
        damaged = bytearray(ct)
        damaged[pos] ^= 0x80
        reader = AgeDecryptingReader(io.BytesIO(bytes(damaged)), [SECRET])
        with pytest.raises(DecryptionError, match="authenticate"):
            while reader.read(CHUNK_SIZE):
                pass
        with pytest.raises(DecryptionError):  # and it stays failed
            reader.read(1)


def test_reordered_chunks_fail():
    data = os.urandom(3 * CHUNK_SIZE)
    ct = encrypt(data)
    start = header_length(ct) + 16
    first, second = ct[start:start + CHUNK_CT_SIZE], ct[start + CHUNK_CT_SIZE:start + 2 * CHUNK_CT_SIZE]
    swapped = ct[:start] + second + first + ct[start + 2 * CHUNK_CT_SIZE:]
    with pytest.raises(DecryptionError):
        decrypt(swapped)


@pytest.mark.parametrize("ct, match", [
    (b"", "not an age v1"),
    (b"PGDMP\x01\x0e\x00 a custom-format dump, not encrypted", "not an age v1"),
    (b"-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n", "ASCII-armored"),
    (b"age-encryption.org/v1\n--- " + b"A" * 43 + b"\n", "malformed"),
])
def test_not_an_age_file(ct, match):
    with pytest.raises(DecryptionError, match=match):
        decrypt(ct)


def test_other_recipient_kinds_are_named():
    body = base64.b64encode(os.urandom(32)).rstrip(b"=")
    ct = b"age-encryption.org/v1\n-> scrypt c2FsdHNhbHRzYWx0c2FsdA 18\n" + body + b"\n--- " + b"A" * 43 + b"\n"
    with pytest.raises(DecryptionError, match="scrypt"):
        decrypt(ct)


# --- Interop with rage (through pyrage) ----------------------------------------------------------------


def test_rage_decrypts_ours_and_we_decrypt_rages():
    data = os.urandom(5 * CHUNK_SIZE + 123)
    ours = encrypt(data, recipients=[PUBLIC, PUBLIC2], pieces=[70_000])
    assert pyrage.decrypt(ours, [pyrage_identity(SECRET2)]) == data
    rage_recipients = [pyrage.x25519.Recipient.from_str(PUBLIC), pyrage.x25519.Recipient.from_str(PUBLIC2)]
    for size in (0, 1, CHUNK_SIZE, 2 * CHUNK_SIZE, len(data)):
        theirs = pyrage.encrypt(data[:size], rage_recipients)  # rage also adds a "grease" stanza to ignore
        assert decrypt(theirs, reads=[1, 5000, CHUNK_SIZE + 3]) == data[:size]
        assert decrypt(theirs, identities=[SECRET2]) == data[:size]


def test_rage_streaming_io_output_decrypts():
    data = os.urandom(1_000_000)
    out = io.BytesIO()
    pyrage.encrypt_io(io.BytesIO(data), out, [pyrage.x25519.Recipient.from_str(PUBLIC)])
    out.seek(0)
    assert AgeDecryptingReader(out, [SECRET]).read() == data


# --- Memory --------------------------------------------------------------------------------------------


class _EncryptingSource:
    """A raw stream of ciphertext produced on demand, so nothing of the size of the payload is ever held."""

    def __init__(self, total: int, block: bytes) -> None:
        self.enc = AgeEncryptor([PUBLIC])
        self.left, self.block = total, block
        self.buf = b""

    def read(self, size: int = -1) -> bytes:
        while len(self.buf) < size and self.enc is not None:
            if self.left > 0:
                piece = self.block[:self.left]
                self.left -= len(piece)
                self.buf += self.enc.update(piece)
            else:
                self.buf += self.enc.finish()
                self.enc = None
        out, self.buf = self.buf[:size], self.buf[size:]
        return out


def test_memory_stays_flat_while_streaming_50mb():
    block = os.urandom(1 << 20)
    total = 50 << 20
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        reader = AgeDecryptingReader(_EncryptingSource(total, block), [SECRET])
        got, digest = 0, hashlib.sha256()
        while data := reader.read(300_000):
            digest.update(data)
            got += len(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == total
    expected = hashlib.sha256()
    for _ in range(total // len(block)):
        expected.update(block)
    assert digest.digest() == expected.digest()
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB while streaming 50 MiB"
