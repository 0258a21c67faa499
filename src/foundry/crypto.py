"""Encryption at rest: files and database fields under the key in FOUNDRY_ENCRYPTION_KEY.

    write_bytes(path, data) / write_text(path, text)   encrypted when a key is set
    read_bytes(path) / read_text(path)                  either kind, decrypted on load
    read_buffer(path, digest)                           large files: one buffer, hashed
    write_tensors(path, tensors) / read_tensors(path)   safetensors files
    EncryptingWriter(path, master)                      a file written a piece at a time
    ChunkReader(path)                                   random access, by plaintext offset
    seal_file(path)                                     encrypt a file a library wrote
    plain_directory(folder)                             a folder a library reads by path
    encrypt_field(text) / decrypt_field(value)          database columns
    rewrap_file(path, new) / rewrap_field(value, new)   key rotation (`foundry keys
                                                        rotate-encryption`)

Database fields are encrypted directly under the master key (see `encrypt_field`).

Envelope encryption (docs/SECURITY.md): every file gets its own random 256-bit data key;
the payload is AES-256-GCM under that data key, and the data key is stored in the file's
header wrapped (AES-256-GCM again) by the master key. Rotating the master key rewrites
the 81-byte header of each file in place and never the payload.

File layout (all integers big-endian):

    magic      8  b"FNDRYENC"
    version    1  1
    key id     8  which master key wrapped the data key (sha256 of the key, first 8 bytes)
    wrap nonce 12 random
    wrapped   48  the data key (32) + GCM tag (16), AAD = magic + version + key id
    chunk size 4  plaintext bytes per chunk (1 MiB)
    payload       chunks: ciphertext + 16-byte tag each; chunk i's nonce is i (11 bytes)
                  + a last-chunk flag (1 byte), so chunks cannot be reordered, dropped or
                  the file truncated without the tag check failing.

Chunks, not one GCM message: `cryptography` encrypts at most 2**31-1 bytes per call, and
language-model weights exceed that; a chunk of 1 MiB costs a 16-byte tag (0.0015%).

The master key: 32 random bytes, base64 (`foundry keys new-encryption-key` prints one).
FOUNDRY_ENCRYPTION_KEY holds it, or FOUNDRY_ENCRYPTION_KEY_FILE names a file holding it;
several keys separated by commas or new lines form a key ring: the first encrypts, any of
them decrypts (by key id), so a rotation that stopped half-way leaves nothing unreadable.

Files with no header are read as they are (written before a key was set), so turning
encryption on needs no migration; checksums (registry/integrity.py) are taken over the
plaintext, so they hold across encryption and rotation.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from foundry.errors import FoundryError
from foundry.extras import install_command

ENV_KEY = "FOUNDRY_ENCRYPTION_KEY"
ENV_KEY_FILE = "FOUNDRY_ENCRYPTION_KEY_FILE"
MAGIC = b"FNDRYENC"
VERSION = 1
CHUNK = 1 << 20
"""Plaintext bytes per GCM chunk: large enough that per-call overhead vanishes (~1 µs a
call against ~0.3 ms of AES at 3 GB/s), small enough to stream a file's hash."""
TAG = 16
_PREFIX = struct.Struct(">8sB8s12s48sI")  # magic, version, key id, wrap nonce, wrapped, chunk
HEADER_BYTES = _PREFIX.size
FIELD_PREFIX = "enc1:"
"""Database fields that are encrypted start with this (see `encrypt_field`)."""


Buffer = np.ndarray
"""A file's plaintext in memory (uint8, writable): what `read_buffer` returns."""


class EncryptionError(FoundryError):
    """A file or field cannot be decrypted (no key, wrong key, damaged), or a key is malformed."""


@dataclass(frozen=True)
class MasterKey:
    key: bytes
    key_id: bytes

    @classmethod
    def parse(cls, text: str, *, source: str) -> MasterKey:
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise EncryptionError(
                f"{source}: an encryption key must be 32 random bytes in base64 (44 characters)",
                hint="`foundry keys new-encryption-key` prints one",
            )
        return cls(key, hashlib.sha256(b"foundry-key-id" + key).digest()[:8])


@dataclass(frozen=True)
class Keyring:
    keys: tuple[MasterKey, ...]
    """The first encrypts; any decrypts."""

    @property
    def current(self) -> MasterKey:
        return self.keys[0]

    def find(self, key_id: bytes) -> MasterKey | None:
        return next((k for k in self.keys if k.key_id == key_id), None)


def new_key() -> str:
    """A new master key, base64 text."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def keyring() -> Keyring | None:
    """The key ring from the environment, or None when encryption is off."""
    text, source = os.environ.get(ENV_KEY), ENV_KEY
    if not text and os.environ.get(ENV_KEY_FILE):
        source = os.environ[ENV_KEY_FILE]
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise EncryptionError(
                f"{ENV_KEY_FILE}={source}: cannot read the key file: {exc.strerror or exc}"
            ) from exc
    return parse_keyring(text, source=source) if text and text.strip() else None


@lru_cache(maxsize=8)
def parse_keyring(text: str, *, source: str) -> Keyring:
    parts = [p for p in text.replace(",", "\n").split() if p]
    return Keyring(tuple(MasterKey.parse(p, source=source) for p in parts))


def enabled() -> bool:
    return keyring() is not None


# --------------------------------------------------------------------------- blobs


def _aesgcm(key: bytes) -> Any:
    """AES-256-GCM under `key`; `cryptography` is imported only when a key is in use."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise EncryptionError(
            f"{ENV_KEY} is set but the cryptography package is not installed",
            hint=install_command("encryption"),
        ) from None
    return AESGCM(key)


def _chunk_nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def encrypt(data: bytes, master: MasterKey) -> bytes:
    """`data` as one encrypted blob (header + chunks), under a fresh data key."""
    data_key = secrets.token_bytes(32)
    nonce = secrets.token_bytes(12)
    aad = MAGIC + bytes([VERSION]) + master.key_id
    wrapped = _aesgcm(master.key).encrypt(nonce, data_key, aad)
    parts = [_PREFIX.pack(MAGIC, VERSION, master.key_id, nonce, wrapped, CHUNK)]
    cipher = _aesgcm(data_key)
    view = memoryview(data)
    n_chunks = max(1, -(-len(data) // CHUNK))
    for i in range(n_chunks):
        chunk = view[i * CHUNK : (i + 1) * CHUNK]
        parts.append(cipher.encrypt(_chunk_nonce(i, i == n_chunks - 1), chunk, None))
    return b"".join(parts)


def is_encrypted_bytes(head: bytes) -> bool:
    return head[: len(MAGIC)] == MAGIC


def _master_key(ring: Keyring | None, key_id: bytes, *, what: str) -> MasterKey:
    """The key of `ring` that wrote `what` (files and database fields alike)."""
    if ring is None:
        raise EncryptionError(
            f"{what} is encrypted and no key is set",
            hint=f"set {ENV_KEY} or {ENV_KEY_FILE} to the key it was written with",
        )
    master = ring.find(key_id)
    if master is None:
        raise EncryptionError(
            f"{what} was encrypted with another key (key id "
            f"{key_id.hex()}) than the one(s) set in {ENV_KEY} / {ENV_KEY_FILE}",
            hint="set the key it was written with; during a rotation "
            "list both keys, new first, separated by a comma",
        )
    return master


def _unwrap(header: bytes, ring: Keyring | None, *, what: str) -> tuple[bytes, int]:
    """The data key and chunk size of an encrypted blob's header."""
    if len(header) < HEADER_BYTES:
        raise EncryptionError(f"{what}: truncated encryption header")
    magic, version, key_id, nonce, wrapped, chunk = _PREFIX.unpack(header[:HEADER_BYTES])
    if version != VERSION:
        raise EncryptionError(
            f"{what}: encryption format version {version} is not known to this foundry",
            hint="upgrade foundry",
        )
    master = _master_key(ring, key_id, what=what)
    from cryptography.exceptions import InvalidTag

    try:
        key = _aesgcm(master.key).decrypt(nonce, wrapped, magic + bytes([version]) + key_id)
    except InvalidTag as exc:
        raise EncryptionError(f"{what}: the encryption header is damaged") from exc
    return key, chunk


def decrypt(blob: bytes, ring: Keyring | None, *, what: str) -> bytes:
    """The plaintext of an encrypted blob; EncryptionError naming `what` if it cannot be."""
    return b"".join(_decrypt_chunks(memoryview(blob), ring, what=what))


def _decrypt_chunks(blob: memoryview, ring: Keyring | None, *, what: str) -> Iterator[bytes]:
    from cryptography.exceptions import InvalidTag

    key, chunk = _unwrap(bytes(blob[:HEADER_BYTES]), ring, what=what)
    cipher = _aesgcm(key)
    body = blob[HEADER_BYTES:]
    step = chunk + TAG
    n_chunks = max(1, -(-len(body) // step))
    for i in range(n_chunks):
        try:
            yield cipher.decrypt(
                _chunk_nonce(i, i == n_chunks - 1), body[i * step : (i + 1) * step], None
            )
        except InvalidTag as exc:
            raise EncryptionError(
                f"{what} is damaged or truncated (chunk {i} fails its authentication tag)",
                hint="restore it from a backup",
            ) from exc


# --------------------------------------------------------------------------- files


def write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> None:
    """Write `data` at `path`, encrypted when a key is set; fsynced by default."""
    ring = keyring()
    payload = encrypt(data, ring.current) if ring is not None else data
    with open(path, "wb") as f:
        f.write(payload)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | Path, text: str, *, fsync: bool = True) -> None:
    write_bytes(path, text.encode("utf-8"), fsync=fsync)


def read_bytes(path: str | Path) -> bytes:
    """The plaintext of the file at `path`, encrypted or not."""
    raw = Path(path).read_bytes()
    if not is_encrypted_bytes(raw):
        return raw
    return decrypt(raw, keyring(), what=str(path))


def read_buffer(path: str | Path, digest: Any = None, *, overlap: bool = True) -> Buffer:
    """The plaintext of the file at `path` in one buffer, fed to `digest` (a hashlib
    object) on the way (benchmarks/encryption.py):

    - the file is read a chunk at a time into one reused buffer, never whole (a second
      copy of a large file in fresh memory cost more than the AES);
    - each chunk is decrypted straight into its place in the output (numpy.empty: not
      zero-filled first, as a bytearray would be);
    - `overlap`: a second thread reads and decrypts while this one hashes what is done,
      in order (both let go of the GIL), so the load costs about the larger of the two
      rather than their sum: about what hashing the plain file costs.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
        if not is_encrypted_bytes(head):
            plain = np.frombuffer(bytearray(head + f.read()), dtype=np.uint8)
            if digest is not None:
                digest.update(plain)
            return plain
        key, chunk = _unwrap(head, keyring(), what=str(path))
        body = size - HEADER_BYTES
        n_chunks = max(1, -(-body // (chunk + TAG)))
        plain = np.empty(max(0, body - TAG * n_chunks), dtype=np.uint8)
        out = memoryview(plain)
        chunks = _decrypt_into(f, _aesgcm(key), chunk, n_chunks, out, what=str(path))
        if digest is None or not overlap:
            for target in chunks:
                if digest is not None:
                    digest.update(target)
            return plain
        import queue
        import threading

        done: queue.Queue = queue.Queue()

        def decrypt_all() -> None:
            try:
                for target in chunks:
                    done.put(target)
                done.put(None)
            except BaseException as exc:  # handed to the hashing thread, raised there
                done.put(exc)

        worker = threading.Thread(target=decrypt_all, name="foundry-decrypt", daemon=True)
        worker.start()
        try:
            while (item := done.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                digest.update(item)
        finally:
            worker.join()
    return plain


def _decrypt_into(
    f: Any, cipher: Any, chunk: int, n_chunks: int, out: memoryview, *, what: str
) -> Iterator[memoryview]:
    """Read and decrypt each chunk of the open file `f` (past its header) into its place
    in `out`; yields each decrypted slice in order."""
    from cryptography.exceptions import InvalidTag

    sealed = memoryview(bytearray(chunk + TAG))
    for i in range(n_chunks):
        n = f.readinto(sealed)
        target = out[i * chunk : i * chunk + max(0, n - TAG)]
        nonce = _chunk_nonce(i, i == n_chunks - 1)
        try:
            if hasattr(cipher, "decrypt_into"):  # cryptography 45+: no intermediate copy
                cipher.decrypt_into(nonce, sealed[:n], None, target)
            else:
                target[:] = cipher.decrypt(nonce, sealed[:n], None)
        except (InvalidTag, ValueError) as exc:
            raise EncryptionError(
                f"{what} is damaged or truncated (chunk {i} fails its authentication tag)",
                hint="restore it from a backup",
            ) from exc
        yield target


class EncryptingWriter:
    """A file written a piece at a time (`write`, then `close`), encrypted chunk by chunk
    as it goes: the same bytes `encrypt` gives for the whole plaintext (under another
    data key), so `read_bytes`, `ChunkReader`, `rewrap_file` and rotation read it. Holds
    at most one chunk: a chunk is sealed only once more data follows it, because the last
    one carries the last-chunk flag in its nonce and which is last is known at `close`."""

    def __init__(self, path: str | Path, master: MasterKey, *, chunk: int | None = None) -> None:
        chunk = chunk or CHUNK
        data_key = secrets.token_bytes(32)
        nonce = secrets.token_bytes(12)
        wrapped = _aesgcm(master.key).encrypt(
            nonce, data_key, MAGIC + bytes([VERSION]) + master.key_id
        )
        self._cipher, self._chunk, self._index = _aesgcm(data_key), chunk, 0
        self._pending = bytearray()
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._file.write(_PREFIX.pack(MAGIC, VERSION, master.key_id, nonce, wrapped, chunk))

    def write(self, data: bytes | memoryview) -> None:
        self._pending += data
        while len(self._pending) > self._chunk:  # more follows: this chunk is not the last
            self._seal(memoryview(self._pending)[: self._chunk], last=False)
            del self._pending[: self._chunk]

    def _seal(self, plain: memoryview | bytearray, *, last: bool) -> None:
        nonce = _chunk_nonce(self._index, last)
        self._file.write(self._cipher.encrypt(nonce, bytes(plain), None))
        self._index += 1

    def close(self) -> None:
        if self._file.closed:
            return
        self._seal(self._pending, last=True)  # an empty file is one empty chunk, as encrypt
        self._pending = bytearray()
        self._file.close()

    def __enter__(self) -> EncryptingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChunkReader:
    """Random access to an encrypted file's plaintext by offset (`read(offset, size)`),
    decrypting only the chunks that cover the range, each checked against its tag. Each
    chunk has its own nonce (its index) and tag, so any one decrypts alone. The last
    decrypted chunks are kept, up to `cache_bytes` (at least one; least recently used
    dropped first), so reading a file in order decrypts every chunk once. Reads with
    `os.pread`: no shared file position, so it keeps working in forked DataLoader
    workers."""

    def __init__(self, path: str | Path, *, cache_bytes: int = 4 << 20) -> None:
        self.path = str(path)
        self._fd = os.open(path, os.O_RDONLY)
        try:
            header = os.pread(self._fd, HEADER_BYTES, 0)
            if not is_encrypted_bytes(header):
                raise EncryptionError(f"{path}: not an encrypted file (no foundry header)")
            key, self.chunk = _unwrap(header, keyring(), what=self.path)
        except BaseException:
            os.close(self._fd)
            raise
        self._cipher = _aesgcm(key)
        body = os.fstat(self._fd).st_size - HEADER_BYTES
        self.n_chunks = max(1, -(-body // (self.chunk + TAG)))
        self.size = max(0, body - TAG * self.n_chunks)
        """Plaintext bytes."""
        self._cache: dict[int, bytes] = {}  # insertion order = recency (moved on a hit)
        self._keep = max(1, cache_bytes // self.chunk)

    def _plain_chunk(self, i: int) -> bytes:
        hit = self._cache.pop(i, None)
        if hit is None:
            from cryptography.exceptions import InvalidTag

            step = self.chunk + TAG
            sealed = os.pread(self._fd, step, HEADER_BYTES + i * step)
            try:
                hit = self._cipher.decrypt(_chunk_nonce(i, i == self.n_chunks - 1), sealed, None)
            except InvalidTag as exc:
                raise EncryptionError(
                    f"{self.path} is damaged or truncated (chunk {i} fails its authentication tag)",
                    hint="restore it from a backup, or delete it to have it rebuilt",
                ) from exc
            if len(self._cache) >= self._keep:
                del self._cache[next(iter(self._cache))]
        self._cache[i] = hit
        return hit

    def read(self, offset: int, size: int) -> bytes:
        """Plaintext bytes [offset, offset + size) (fewer past the end)."""
        stop = min(offset + size, self.size)
        parts = []
        while offset < stop:
            i, start = divmod(offset, self.chunk)
            plain = self._plain_chunk(i)
            take = min(stop - offset, len(plain) - start)
            if take <= 0:  # cannot happen with a file that passed its tags; never spin
                break
            parts.append(plain[start : start + take])
            offset += take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def read_text(path: str | Path) -> str:
    return read_bytes(path).decode("utf-8")


def is_encrypted(path: str | Path) -> bool:
    with open(path, "rb") as f:
        return is_encrypted_bytes(f.read(len(MAGIC)))


def plain_sha256(path: str | Path) -> str:
    """sha256 (hex) of the file's plaintext, streamed a chunk at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
        if not is_encrypted_bytes(head):
            digest.update(head)
            while block := f.read(CHUNK):
                digest.update(block)
            return digest.hexdigest()
        raw = head + f.read()
    for block in _decrypt_chunks(memoryview(raw), keyring(), what=str(path)):
        digest.update(block)
    return digest.hexdigest()


def seal_file(path: str | Path) -> None:
    """Encrypt in place a file a library wrote in plaintext (to_parquet, save_pretrained,
    ONNX export), when a key is set; a no-op otherwise or if it already is."""
    if keyring() is None or is_encrypted(path):
        return
    path = Path(path)
    tmp = path.with_name(f".{path.name}.enc-tmp")
    write_bytes(tmp, path.read_bytes())
    os.replace(tmp, path)


def seal_tree(folder: str | Path) -> None:
    """`seal_file` every file under `folder`."""
    if keyring() is None:
        return
    for item in sorted(Path(folder).rglob("*")):
        if item.is_file():
            seal_file(item)


@contextlib.contextmanager
def plain_directory(folder: str | Path) -> Iterator[Path]:
    """`folder` itself when none of its files is encrypted; else a private temporary copy
    with every file decrypted, deleted on exit. For libraries that only read folders by
    path (transformers' from_pretrained, PEFT): the plaintext exists on disk only while
    they load."""
    folder = Path(folder)
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    if not any(is_encrypted(p) for p in files):
        yield folder
        return
    tmp = Path(tempfile.mkdtemp(prefix="foundry-plain-"))  # mode 0700
    try:
        for item in files:
            target = tmp / item.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(read_bytes(item))
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def rewrap_file(path: str | Path, new: MasterKey, ring: Keyring | None = None) -> bool:
    """Re-wrap the data key of an encrypted file under `new`, rewriting its header in place
    (the payload is untouched). False for a plaintext file or one already under `new`."""
    ring = ring or keyring()
    with open(path, "r+b") as f:
        header = f.read(HEADER_BYTES)
        if not is_encrypted_bytes(header):
            return False
        new_header = _rewrapped_header(header, new, ring, what=str(path))
        if new_header is None:
            return False
        f.seek(0)
        f.write(new_header)
        f.flush()
        os.fsync(f.fileno())
    return True


def _rewrapped_header(
    header: bytes, new: MasterKey, ring: Keyring | None, *, what: str
) -> bytes | None:
    _, _, key_id, _, _, _ = _PREFIX.unpack(header[:HEADER_BYTES])
    if key_id == new.key_id:
        return None
    data_key, chunk = _unwrap(header, ring, what=what)
    nonce = secrets.token_bytes(12)
    wrapped = _aesgcm(new.key).encrypt(nonce, data_key, MAGIC + bytes([VERSION]) + new.key_id)
    return _PREFIX.pack(MAGIC, VERSION, new.key_id, nonce, wrapped, chunk)


def write_tensors(path: str | Path, tensors: dict, *, fsync: bool = False) -> None:
    """safetensors at `path` (contiguous CPU tensors), encrypted when a key is set."""
    from safetensors.torch import save, save_file

    if keyring() is not None:
        write_bytes(path, save(tensors), fsync=fsync)
        return
    save_file(tensors, str(path))
    if fsync:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_tensors(path: str | Path, device: str = "cpu") -> dict:
    """The tensors of a safetensors file, encrypted or not (plaintext is memory-mapped)."""
    from safetensors.torch import load_file

    if not is_encrypted(path):
        return load_file(str(path), device=device)
    tensors = tensors_from_buffer(read_buffer(path), source=str(path))
    return tensors if device == "cpu" else {k: v.to(device) for k, v in tensors.items()}


_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
"""safetensors dtype names read without a copy (others go through safetensors.load)."""


def tensors_from_buffer(buffer: Buffer, *, source: str) -> dict:
    """The tensors of a decrypted safetensors file, as views of `buffer` (no copy: what a
    memory map gives a plaintext file). The format is an 8-byte little-endian header
    length, a JSON header of {name: {dtype, shape, data_offsets}}, then the data; the
    file's checksum was verified before this runs."""
    import json

    import torch

    try:
        (size,) = struct.unpack("<Q", buffer[:8].tobytes())
        header = json.loads(buffer[8 : 8 + size].tobytes())
        start = 8 + size
        tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in _DTYPES:
                raise KeyError(info["dtype"])
            dtype = getattr(torch, _DTYPES[info["dtype"]])
            begin, end = info["data_offsets"]
            count = (end - begin) // dtype.itemsize
            flat = (
                torch.frombuffer(buffer, dtype=dtype, count=count, offset=start + begin)
                if count
                else torch.empty(0, dtype=dtype)
            )
            tensors[name] = flat.reshape(info["shape"])
        return tensors
    except KeyError:  # a dtype read above through safetensors itself (a copy)
        from safetensors.torch import load

        return load(buffer.tobytes())
    except (ValueError, TypeError, RuntimeError, struct.error) as exc:
        raise EncryptionError(f"{source}: not a readable safetensors file: {exc}") from exc


def rotate_tree(root: str | Path, new: MasterKey, ring: Keyring | None = None) -> int:
    """`rewrap_file` every encrypted file under `root` (a file or a folder); how many
    were re-wrapped. Headers only: a 10 GB package costs the same as a 10 KB one."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return sum(rewrap_file(path, new, ring) for path in files)


# --------------------------------------------------------------------------- fields


def encrypt_field(value: str | None) -> str | None:
    """A database column's value, encrypted when a key is set: `enc1:` + base64 of key id
    (8) + nonce (12) + AES-256-GCM ciphertext and tag. Directly under the master key, not
    enveloped: a field is small, its column has a width, and rotation rewrites it anyway."""
    ring = keyring()
    if value is None or ring is None:
        return value
    return _seal_field(value.encode("utf-8"), ring.current)


def _seal_field(plain: bytes, master: MasterKey) -> str:
    nonce = secrets.token_bytes(12)
    blob = master.key_id + nonce + _aesgcm(master.key).encrypt(nonce, plain, master.key_id)
    return FIELD_PREFIX + base64.b64encode(blob).decode()


def decrypt_field(value: str | None, *, what: str = "a database field") -> str | None:
    """The plaintext of a column written by `encrypt_field` (plaintext passes through)."""
    if value is None or not value.startswith(FIELD_PREFIX):
        return value
    return _open_field(value, keyring(), what=what).decode("utf-8")


def _open_field(value: str, ring: Keyring | None, *, what: str) -> bytes:
    from cryptography.exceptions import InvalidTag

    blob = base64.b64decode(value[len(FIELD_PREFIX) :])
    key_id, nonce, sealed = blob[:8], blob[8:20], blob[20:]
    master = _master_key(ring, key_id, what=what)
    try:
        return _aesgcm(master.key).decrypt(nonce, sealed, key_id)
    except InvalidTag as exc:
        raise EncryptionError(f"{what} is damaged (its authentication tag fails)") from exc


def rewrap_field(value: str | None, new: MasterKey, ring: Keyring | None = None) -> str | None:
    """`value` encrypted under `new` instead; None when nothing changes (plaintext, or
    already under `new`)."""
    if value is None or not value.startswith(FIELD_PREFIX):
        return None
    if base64.b64decode(value[len(FIELD_PREFIX) :])[:8] == new.key_id:
        return None
    return _seal_field(_open_field(value, ring or keyring(), what="a database field"), new)
