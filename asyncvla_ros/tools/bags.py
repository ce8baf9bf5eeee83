"""rosbag2 files through the rosbags library (no rclpy): the type store, opening bags with clear errors,
writing them, and making CDR payloads strict-reader clean.

Types: the ROS 2 Kilted store plus any message found as `<package>/msg/<Name>.msg` in a share folder on
AMENT_PREFIX_PATH (ours included), so bags carry every definition and any rosbag2 reader decodes them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.errors import ReaderError, WriterError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from asyncvla_ros.paths import share_dir

STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}


class BagError(ValueError):
    """A bag that cannot be read or written as asked: the message names the bag and the reason."""


def _message_file(msgtype: str) -> Path | None:
    package, kind, name = msgtype.split('/')
    shares = [share_dir()] if package == 'asyncvla_ros' else []
    shares += [
        Path(prefix) / 'share' / package
        for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)
        if prefix
    ]
    return next((s / kind / f'{name}.msg' for s in shares if (s / kind / f'{name}.msg').is_file()), None)


def register_types(store: Typestore, msgtypes: Iterable[str]) -> None:
    """Adds the definitions of `msgtypes` that the store lacks, from their .msg files."""
    missing = {t for t in msgtypes if t not in store.fielddefs}
    types = {}
    for msgtype in sorted(missing):
        if msgtype.count('/') != 2:
            raise BagError(f'unknown message type {msgtype!r}: expected <package>/msg/<Name>')
        path = _message_file(msgtype)
        if path is None:
            raise BagError(
                f'unknown message type {msgtype}: not in the ROS 2 Kilted type store and no '
                f'{msgtype}.msg on AMENT_PREFIX_PATH (source the workspace that defines it)'
            )
        types.update(get_types_from_msg(path.read_text(), msgtype))
    if types:
        store.register(types)


def typestore(
    msgtypes: Iterable[str] = (
        'asyncvla_ros/msg/ActionChunk',
        'asyncvla_ros/msg/PolicyStatus',
        'asyncvla_ros/msg/ExecutorState',
    ),
) -> Typestore:
    store = get_typestore(Stores.ROS2_KILTED)
    register_types(store, msgtypes)
    return store


def clean_cdr(raw: bytes | memoryview, msgtype: str, store: Typestore) -> bytes:
    """The CDR payload cut to its real length. rclpy's serialize_message in the pip wheels appends up to
    8 uninitialised bytes for some types (ros_toolchain.md §6), which strict readers (rosbags) reject;
    bytes that went through such a publisher keep them. Raises BagError when the bytes do not decode."""
    definition = store.get_msgdef(msgtype)
    view = memoryview(raw)
    try:
        _, end = definition.deserialize_cdr_le(view[4:], 0, definition.cls, store)
    except Exception as exc:  # rosbags raises several types for truncated or foreign bytes
        raise BagError(f'a {msgtype} message does not decode: {exc}') from exc
    end += 4
    return bytes(view[: end + (-end % 4)])


@dataclass
class TopicInfo:
    msgtype: str
    count: int


@contextmanager
def open_bag(path: str | Path, store: Typestore | None = None) -> Iterator[AnyReader]:
    """An open AnyReader (rosbag2 sqlite3 or mcap, definitions from the bag), or BagError saying why not."""
    path = Path(path)
    if not path.exists():
        raise BagError(f'{path}: no such bag')
    try:
        reader = AnyReader([path], default_typestore=store or typestore())
        reader.open()
    except (AnyReaderError, ReaderError, OSError, ValueError, KeyError) as exc:
        raise BagError(f'{path}: not a readable rosbag2 bag ({exc})') from exc
    try:
        yield reader
    finally:
        reader.close()


def bag_topics(reader: AnyReader) -> dict[str, TopicInfo]:
    return {name: TopicInfo(info.msgtype or '?', info.msgcount) for name, info in reader.topics.items()}


def require_topics(reader: AnyReader, topics: Iterable[str], path) -> None:
    present = bag_topics(reader)
    missing = [t for t in topics if t not in present]
    if missing:
        listing = ', '.join(f'{t} ({i.msgtype}, {i.count})' for t, i in sorted(present.items())) or 'none'
        raise BagError(f'{path}: topic(s) {", ".join(missing)} not in the bag; it has: {listing}')


class BagWriter:
    """A rosbag2 bag written from CDR payloads, connections added as topics appear."""

    def __init__(self, path: str | Path, storage: str = 'mcap', store: Typestore | None = None):
        if storage not in STORAGES:
            raise BagError(f'storage must be one of {sorted(STORAGES)}, got {storage!r}')
        self.path, self.store = Path(path), store or typestore()
        if self.path.exists():
            raise BagError(f'{self.path}: exists; choose a new output path')
        self.writer = Writer(self.path, version=9, storage_plugin=STORAGES[storage])
        self.connections = {}
        self.counts: dict[str, int] = {}
        try:
            self.writer.open()
        except WriterError as exc:
            raise BagError(f'{self.path}: cannot write ({exc})') from exc

    def add_topic(self, topic: str, msgtype: str) -> None:
        register_types(self.store, [msgtype])
        self.connections[topic] = (self.writer.add_connection(topic, msgtype, typestore=self.store), msgtype)
        self.counts[topic] = 0

    def write(self, topic: str, stamp_ns: int, raw: bytes) -> None:
        connection, msgtype = self.connections[topic]
        self.writer.write(connection, stamp_ns, clean_cdr(raw, msgtype, self.store))
        self.counts[topic] += 1

    def close(self) -> None:
        self.writer.close()
