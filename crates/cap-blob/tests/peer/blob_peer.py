"""Reference-peer helper for cap-blob's interop tests.

Drives cap-sdk-python's own RedisBlobStore and pointer helpers (cap.runtime), so the
Rust side can check it reads what the SDK writes and vice versa, byte for byte.

Usage (blob bytes travel raw on stdin/stdout):
  blob_peer.py write <redis_url> <key>        < bytes   store stdin under key
  blob_peer.py read <redis_url> <key>         > bytes   exit 3 if missing
  blob_peer.py read-ptr <redis_url> <pointer> > bytes   resolve like the SDK worker does
  blob_peer.py pointer <key>                            print pointer_for_key(key)
  blob_peer.py key <pointer>                            print key_from_pointer(ptr), exit 4 on error
  blob_peer.py version                                  print the SDK version
"""

import asyncio
import sys
from importlib.metadata import version

from cap.runtime import RedisBlobStore, key_from_pointer, pointer_for_key


async def _write(url: str, key: str, data: bytes) -> None:
    store = RedisBlobStore(url)
    try:
        await store.set(key, data)
    finally:
        await store.close()


async def _read(url: str, key: str) -> bytes | None:
    store = RedisBlobStore(url)
    try:
        return await store.get(key)
    finally:
        await store.close()


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "write" and len(argv) == 4:
        asyncio.run(_write(argv[2], argv[3], sys.stdin.buffer.read()))
        return 0
    if cmd in ("read", "read-ptr") and len(argv) == 4:
        key = argv[3] if cmd == "read" else key_from_pointer(argv[3])
        data = asyncio.run(_read(argv[2], key))
        if data is None:
            return 3
        sys.stdout.buffer.write(data)
        return 0
    if cmd == "pointer" and len(argv) == 3:
        print(pointer_for_key(argv[2]))
        return 0
    if cmd == "key" and len(argv) == 3:
        try:
            print(key_from_pointer(argv[2]))
        except Exception as exc:  # the SDK raises InvalidInputError
            print(f"error: {exc}")
            return 4
        return 0
    if cmd == "version":
        print(version("cap-sdk-python"))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
