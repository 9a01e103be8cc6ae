"""The Arrow C ABIs in ctypes: the C data interface (ArrowSchema, ArrowArray), the C device
interface (ArrowDeviceArray) and the C stream interface (ArrowArrayStream), with the PyCapsules that
carry them.

This module knows nothing about ``Column`` or ``Table``: it builds and reads the raw structs
(`ArrowSchema`, `ArrowArray`, `ArrowDeviceArray`, `ArrowArrayStream`) described in
https://arrow.apache.org/docs/format/CDataInterface.html and
https://arrow.apache.org/docs/format/CDeviceDataInterface.html, and wraps them in PyCapsules
named as the Arrow PyCapsule protocol requires.

Ownership model
---------------
Every struct we export carries ``private_data`` = a key into ``_STATES``; the state holds every
ctypes object the struct points to (format and name strings, buffer-pointer arrays, child structs)
and the Python objects that keep the memory alive (our ``Buffer`` objects, a CUDA event). The
struct's ``release`` callback (a ctypes ``CFUNCTYPE`` kept alive for the life of the process)
releases the children that were not moved out, drops the state and sets ``release`` to NULL, as
the specification requires. A consumer may move the struct anywhere: the release callback only
uses ``private_data``. The capsule owns the top-level struct memory; its destructor calls
``release`` if the struct was never moved out (``release`` still set) and then frees the struct.
"""
from __future__ import annotations

import ctypes
import errno
import itertools
import sys
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char_p, c_int, c_int32, c_int64, c_void_p)
from typing import Any, Callable, Optional

ARROW_DEVICE_CPU = 1
ARROW_DEVICE_CUDA = 2
ARROW_DEVICE_CUDA_HOST = 3
ARROW_DEVICE_CUDA_MANAGED = 13

ARROW_FLAG_DICTIONARY_ORDERED = 1
ARROW_FLAG_NULLABLE = 2


class ArrowSchema(Structure):
    pass


class ArrowArray(Structure):
    pass


class ArrowArrayStream(Structure):
    pass


SCHEMA_RELEASE = CFUNCTYPE(None, POINTER(ArrowSchema))
ARRAY_RELEASE = CFUNCTYPE(None, POINTER(ArrowArray))
STREAM_GET_SCHEMA = CFUNCTYPE(c_int, POINTER(ArrowArrayStream), POINTER(ArrowSchema))
STREAM_GET_NEXT = CFUNCTYPE(c_int, POINTER(ArrowArrayStream), POINTER(ArrowArray))
# `const char*` is returned as a plain address: ctypes cannot return c_char_p from a callback safely.
STREAM_GET_LAST_ERROR = CFUNCTYPE(c_void_p, POINTER(ArrowArrayStream))
STREAM_RELEASE = CFUNCTYPE(None, POINTER(ArrowArrayStream))

# Strings are kept as raw addresses (c_void_p) so that the struct never owns Python bytes objects:
# the memory they point to lives in the export state, which outlives any move of the struct.
ArrowSchema._fields_ = [
    ("format", c_void_p),
    ("name", c_void_p),
    ("metadata", c_void_p),
    ("flags", c_int64),
    ("n_children", c_int64),
    ("children", POINTER(POINTER(ArrowSchema))),
    ("dictionary", POINTER(ArrowSchema)),
    ("release", SCHEMA_RELEASE),
    ("private_data", c_void_p),
]

ArrowArray._fields_ = [
    ("length", c_int64),
    ("null_count", c_int64),
    ("offset", c_int64),
    ("n_buffers", c_int64),
    ("n_children", c_int64),
    ("buffers", POINTER(c_void_p)),
    ("children", POINTER(POINTER(ArrowArray))),
    ("dictionary", POINTER(ArrowArray)),
    ("release", ARRAY_RELEASE),
    ("private_data", c_void_p),
]


class ArrowDeviceArray(Structure):
    _fields_ = [
        ("array", ArrowArray),
        ("device_id", c_int64),
        ("device_type", c_int32),
        ("sync_event", c_void_p),
        ("reserved", c_int64 * 3),
    ]


ArrowArrayStream._fields_ = [
    ("get_schema", STREAM_GET_SCHEMA),
    ("get_next", STREAM_GET_NEXT),
    ("get_last_error", STREAM_GET_LAST_ERROR),
    ("release", STREAM_RELEASE),
    ("private_data", c_void_p),
]

# ---------------------------------------------------------------------------------------------
# export state registry

_STATES: dict[int, list[Any]] = {}
_KEYS = itertools.count(1)


def _new_state(keep: list[Any]) -> int:
    key = next(_KEYS)
    _STATES[key] = keep
    return key


def live_exports() -> int:
    """Number of exported structs not yet released (for tests: release must free everything)."""
    return len(_STATES)


def _cstr(text: str, keep: list[Any]) -> int:
    buf = ctypes.create_string_buffer(text.encode("utf-8"))
    keep.append(buf)
    return ctypes.addressof(buf)


def _immortal(obj: Any) -> Any:
    # Release callbacks and capsule names may be reached from C after this module is torn down
    # at interpreter exit (pyarrow frees imported arrays late): never let them be deallocated.
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    return obj


@SCHEMA_RELEASE
def _release_schema(ptr: Any) -> None:
    try:
        s = ptr.contents
        for i in range(s.n_children):
            child = s.children[i]
            if child and child.contents.release:
                child.contents.release(child)
        if s.dictionary and s.dictionary.contents.release:
            s.dictionary.contents.release(s.dictionary)
        _STATES.pop(s.private_data, None)
        s.release = SCHEMA_RELEASE()
    except Exception:  # pragma: no cover - never let an exception cross into C
        pass


class _Owned(list):
    """The child and dictionary structs of an exported ArrowArray node, kept in its state so that
    release finds them through ``private_data`` alone (never through fields a consumer may have
    changed, such as ``n_children`` or ``children``)."""


@ARRAY_RELEASE
def _release_array(ptr: Any) -> None:
    try:
        a = ptr.contents
        state = _STATES.pop(a.private_data, None) or []
        for owned in state:
            if isinstance(owned, _Owned):
                for st in owned:
                    if st.release:
                        st.release(ctypes.pointer(st))
        a.release = ARRAY_RELEASE()
    except Exception:  # pragma: no cover
        pass


_immortal(_release_schema)
_immortal(_release_array)

# ---------------------------------------------------------------------------------------------
# schema export


def fill_schema(out: ArrowSchema, fmt: str, name: str, *, flags: int = ARROW_FLAG_NULLABLE,
                children: tuple = (), dictionary: Optional[Callable[[ArrowSchema], None]] = None) -> None:
    """Fill ``out`` (any ArrowSchema, ours or a consumer's) with one schema node.

    ``children`` is a sequence of callables ``fill(child_struct)``; ``dictionary`` one such callable.
    """
    keep: list[Any] = []
    out.format = _cstr(fmt, keep)
    out.name = _cstr(name, keep)
    out.metadata = None
    out.flags = flags
    out.n_children = len(children)
    if children:
        structs = [ArrowSchema() for _ in children]
        for fill, st in zip(children, structs):
            fill(st)
        ptrs = (POINTER(ArrowSchema) * len(structs))(*[ctypes.pointer(st) for st in structs])
        keep += [structs, ptrs]
        out.children = ctypes.cast(ptrs, POINTER(POINTER(ArrowSchema)))
    else:
        out.children = None
    if dictionary is not None:
        dst = ArrowSchema()
        dictionary(dst)
        keep.append(dst)
        out.dictionary = ctypes.pointer(dst)
    else:
        out.dictionary = None
    out.private_data = _new_state(keep)
    out.release = _release_schema


# ---------------------------------------------------------------------------------------------
# array export


def fill_array(out: ArrowArray, *, length: int, null_count: int, offset: int, buffers: list[int],
               children: tuple = (), dictionary: Optional[Callable[[ArrowArray], None]] = None,
               keepalive: Any = None) -> None:
    """Fill ``out`` with one array node whose buffers are the given addresses (0 for NULL).

    ``keepalive`` is held until the consumer releases this node (the memory behind ``buffers``).
    """
    keep: list[Any] = [keepalive]
    out.length = length
    out.null_count = null_count
    out.offset = offset
    out.n_buffers = len(buffers)
    bufs = (c_void_p * max(len(buffers), 1))(*[b or None for b in buffers])
    keep.append(bufs)
    out.buffers = ctypes.cast(bufs, POINTER(c_void_p))
    out.n_children = len(children)
    if children:
        structs = [ArrowArray() for _ in children]
        for fill, st in zip(children, structs):
            fill(st)
        ptrs = (POINTER(ArrowArray) * len(structs))(*[ctypes.pointer(st) for st in structs])
        keep += [_Owned(structs), ptrs]
        out.children = ctypes.cast(ptrs, POINTER(POINTER(ArrowArray)))
    else:
        out.children = None
    if dictionary is not None:
        dst = ArrowArray()
        dictionary(dst)
        keep.append(_Owned([dst]))
        out.dictionary = ctypes.pointer(dst)
    else:
        out.dictionary = None
    out.private_data = _new_state(keep)
    out.release = _release_array


def attach(struct: Any, obj: Any) -> None:
    """Keep ``obj`` alive until ``struct`` (an exported ArrowArray or ArrowSchema) is released."""
    _STATES[struct.private_data].append(obj)


# ---------------------------------------------------------------------------------------------
# capsules

_PyCapsule_New = ctypes.pythonapi.PyCapsule_New
_PyCapsule_New.restype = ctypes.py_object
CAPSULE_DESTRUCTOR = CFUNCTYPE(None, c_void_p)
_PyCapsule_New.argtypes = [c_void_p, c_char_p, CAPSULE_DESTRUCTOR]

_PyCapsule_GetPointer = ctypes.pythonapi.PyCapsule_GetPointer
_PyCapsule_GetPointer.restype = c_void_p
_PyCapsule_GetPointer.argtypes = [ctypes.py_object, c_char_p]

_PyCapsule_IsValid = ctypes.pythonapi.PyCapsule_IsValid
_PyCapsule_IsValid.restype = c_int
_PyCapsule_IsValid.argtypes = [ctypes.py_object, c_char_p]

# The destructor receives the dying capsule: read it through raw-pointer prototypes so that
# ctypes never touches the reference count of an object being deallocated.
_raw_get_pointer = ctypes.PYFUNCTYPE(c_void_p, c_void_p, c_char_p)(("PyCapsule_GetPointer", ctypes.pythonapi))
_raw_get_name = ctypes.PYFUNCTYPE(c_void_p, c_void_p)(("PyCapsule_GetName", ctypes.pythonapi))

SCHEMA_CAPSULE = b"arrow_schema"
ARRAY_CAPSULE = b"arrow_array"
DEVICE_ARRAY_CAPSULE = b"arrow_device_array"
STREAM_CAPSULE = b"arrow_array_stream"

_NAME_BUFFERS = {n: _immortal(ctypes.create_string_buffer(n)) for n in
                 (SCHEMA_CAPSULE, ARRAY_CAPSULE, DEVICE_ARRAY_CAPSULE, STREAM_CAPSULE)}
_NAME_KIND = {ctypes.addressof(b): n for n, b in _NAME_BUFFERS.items()}

# capsule-owned top-level structs, by address
_CAPSULE_STRUCTS: dict[int, Any] = {}


@CAPSULE_DESTRUCTOR
def _capsule_destructor(cap: int) -> None:
    try:
        name_ptr = _raw_get_name(cap)
        ptr = _raw_get_pointer(cap, ctypes.cast(name_ptr, c_char_p))
        struct = _CAPSULE_STRUCTS.pop(ptr, None)
        if struct is None:
            return
        kind = _NAME_KIND.get(name_ptr)
        if kind == DEVICE_ARRAY_CAPSULE:
            if struct.array.release:
                struct.array.release(ctypes.pointer(struct.array))
        elif struct.release:
            struct.release(ctypes.pointer(struct))
    except Exception:  # pragma: no cover - interpreter teardown
        pass


_immortal(_capsule_destructor)


def new_capsule(struct: Any, name: bytes) -> Any:
    """A PyCapsule named ``name`` that owns ``struct`` (a filled ctypes struct)."""
    addr = ctypes.addressof(struct)
    _CAPSULE_STRUCTS[addr] = struct
    return _PyCapsule_New(addr, ctypes.cast(_NAME_BUFFERS[name], c_char_p), _capsule_destructor)


def capsule_pointer(capsule: Any, name: bytes) -> int:
    """The struct address inside ``capsule``; ``TypeError`` if it is not a capsule named ``name``."""
    if type(capsule).__name__ != "PyCapsule" or not _PyCapsule_IsValid(capsule, name):
        raise TypeError(f"expected a PyCapsule named {name.decode()!r}, got {capsule!r}")
    return int(_PyCapsule_GetPointer(capsule, name))


def schema_format(schema_capsule: Any) -> str:
    """The format string of the top-level ArrowSchema in a capsule (the capsule is untouched)."""
    s = ArrowSchema.from_address(capsule_pointer(schema_capsule, SCHEMA_CAPSULE))
    if not s.release:
        raise ValueError("the ArrowSchema in this capsule was already released")
    return ctypes.string_at(s.format).decode("utf-8")


def schema_name(s: ArrowSchema) -> str:
    return ctypes.string_at(s.name).decode("utf-8") if s.name else ""


def peek_device(array_capsule: Any) -> tuple[int, int]:
    """``(device_type, device_id)`` of the ArrowDeviceArray in a capsule (the capsule is untouched)."""
    d = ArrowDeviceArray.from_address(capsule_pointer(array_capsule, DEVICE_ARRAY_CAPSULE))
    if not d.array.release:
        raise ValueError("the ArrowDeviceArray in this capsule was already released")
    return int(d.device_type), int(d.device_id)


class ImportedDeviceArray:
    """An ArrowDeviceArray moved out of a producer's capsule; released when this object dies.

    Every buffer imported from it keeps this object alive (as the ``Buffer.owner``, and as the
    owner of the CuPy ``UnownedMemory`` on a real GPU).
    """

    __slots__ = ("struct", "__weakref__")

    def __init__(self, array_capsule: Any) -> None:
        src = ArrowDeviceArray.from_address(capsule_pointer(array_capsule, DEVICE_ARRAY_CAPSULE))
        if not src.array.release:
            raise ValueError("the ArrowDeviceArray in this capsule was already released (moved)")
        self.struct = ArrowDeviceArray()
        ctypes.memmove(ctypes.addressof(self.struct), ctypes.addressof(src), ctypes.sizeof(ArrowDeviceArray))
        src.array.release = ARRAY_RELEASE()  # moved: the producer's capsule must not release it again

    @property
    def array(self) -> ArrowArray:
        return self.struct.array

    def release(self) -> None:
        a = self.struct.array
        if a.release:
            a.release(ctypes.pointer(a))

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # pragma: no cover
            pass


def buffer_address(arr: ArrowArray, i: int) -> int:
    if i >= arr.n_buffers:
        raise ValueError(f"ArrowArray has {arr.n_buffers} buffers, buffer {i} was asked for")
    return int(arr.buffers[i] or 0)


def child(arr: ArrowArray, i: int) -> ArrowArray:
    if not 0 <= i < arr.n_children or not arr.children or not arr.children[i]:
        raise ValueError(f"ArrowArray has {arr.n_children} children, child {i} was asked for (or is NULL)")
    return arr.children[i].contents


def check_node(arr: ArrowArray, what: str, *, n_buffers: int, n_children: int, dictionary: bool = False,
               required: tuple = ()) -> None:
    """Structural checks of one imported ArrowArray node, made before anything it points to is read.

    ``what`` names the node in the error; ``required`` lists the buffers that must not be NULL
    when the node has rows (buffer 0, the validity bitmap, is required when ``null_count > 0``).
    Raises ``ValueError`` with the expected and the actual value.
    """
    length, offset, nulls = int(arr.length), int(arr.offset), int(arr.null_count)
    if length < 0:
        raise ValueError(f"{what}: length must be >= 0, got {length}")
    if offset < 0:
        raise ValueError(f"{what}: offset must be >= 0, got {offset}")
    if nulls < -1 or nulls > length:
        raise ValueError(f"{what}: null_count must be in [-1, {length}] (length {length}), got {nulls}")
    if arr.n_buffers != n_buffers:
        raise ValueError(f"{what}: expected {n_buffers} buffers, the ArrowArray has {arr.n_buffers}")
    if n_buffers and not arr.buffers:
        raise ValueError(f"{what}: the buffers pointer is NULL, expected an array of {n_buffers} buffer pointers")
    if arr.n_children != n_children:
        raise ValueError(f"{what}: expected {n_children} children, the ArrowArray has {arr.n_children}")
    if n_children and not arr.children:
        raise ValueError(f"{what}: the children pointer is NULL, expected {n_children} children")
    for i in range(n_children):
        if not arr.children[i]:
            raise ValueError(f"{what}: child {i} is NULL")
    if dictionary and not arr.dictionary:
        raise ValueError(f"{what}: a dictionary type needs a dictionary ArrowArray, got NULL")
    if not dictionary and arr.dictionary:
        raise ValueError(f"{what}: the type has no dictionary, but the ArrowArray carries one")
    if nulls > 0 and not arr.buffers[0]:
        raise ValueError(f"{what}: null_count is {nulls} but the validity buffer is NULL")
    if length > 0:
        for i in required:
            if not arr.buffers[i]:
                raise ValueError(f"{what}: buffer {i} is NULL, expected memory for {length} rows")


_LIBCUDA: list = []


def _libcuda() -> Any:
    if not _LIBCUDA:
        try:
            lib = ctypes.CDLL("libcuda.so.1" if sys.platform != "win32" else "nvcuda.dll")
            fn = lib.cuMemGetAddressRange_v2
            fn.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_size_t), ctypes.c_uint64]
            fn.restype = c_int
            _LIBCUDA.append(fn)
        except (OSError, AttributeError):
            _LIBCUDA.append(None)
    return _LIBCUDA[0]


def check_device_range(ptr: int, nbytes: int, device_id: int) -> None:
    """Raise ``ValueError`` unless ``[ptr, ptr + nbytes)`` lies inside one allocation of device memory
    (asked of the CUDA driver, ``cuMemGetAddressRange``), so that a producer's wrong length can never
    make a kernel read past its allocation. Call with the device's context current."""
    fn = _libcuda()
    if fn is None:  # pragma: no cover - a CUDA import without a driver cannot happen
        raise ValueError("cannot check a CUDA buffer's bounds: libcuda was not found")
    base, size = ctypes.c_uint64(0), ctypes.c_size_t(0)
    rc = fn(ctypes.byref(base), ctypes.byref(size), ctypes.c_uint64(ptr))
    if rc != 0:
        raise ValueError(f"ArrowDeviceArray buffer at 0x{ptr:x} ({nbytes} bytes) is not in device memory of "
                         f"cuda:{device_id} (cuMemGetAddressRange returned {rc})")
    end = base.value + size.value
    if ptr + nbytes > end:
        raise ValueError(f"ArrowDeviceArray buffer at 0x{ptr:x} needs {nbytes} bytes, its allocation ends "
                         f"{end - ptr} bytes after it")


# ---------------------------------------------------------------------------------------------
# stream export


class _StreamState:
    __slots__ = ("fill_schema", "batches", "pos", "error")

    def __init__(self, fill_schema: Callable[[ArrowSchema], None], batches: list[Callable[[ArrowArray], None]]):
        self.fill_schema = fill_schema
        self.batches = batches
        self.pos = 0
        self.error = ctypes.create_string_buffer(1024)

    def fail(self, exc: BaseException) -> int:
        msg = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")[:1023]
        ctypes.memmove(self.error, msg + b"\0", len(msg) + 1)
        return errno.EINVAL if isinstance(exc, (TypeError, ValueError)) else errno.EIO


def _stream_state(ptr: Any) -> _StreamState:
    return _STATES[ptr.contents.private_data][0]


@STREAM_GET_SCHEMA
def _stream_get_schema(ptr: Any, out: Any) -> int:
    st = None
    try:
        st = _stream_state(ptr)
        st.fill_schema(out.contents)
        return 0
    except Exception as exc:  # noqa: BLE001 - reported through get_last_error
        return st.fail(exc) if st is not None else errno.EIO


@STREAM_GET_NEXT
def _stream_get_next(ptr: Any, out: Any) -> int:
    st = None
    try:
        st = _stream_state(ptr)
        if st.pos >= len(st.batches):
            out.contents.release = ARRAY_RELEASE()  # end of stream
            return 0
        fill = st.batches[st.pos]
        st.batches[st.pos] = None  # a batch is handed out once; drop our reference to it
        st.pos += 1
        fill(out.contents)
        return 0
    except Exception as exc:  # noqa: BLE001
        return st.fail(exc) if st is not None else errno.EIO


@STREAM_GET_LAST_ERROR
def _stream_get_last_error(ptr: Any) -> Optional[int]:
    try:
        st = _stream_state(ptr)
        return ctypes.addressof(st.error) if st.error.value else None
    except Exception:  # pragma: no cover
        return None


@STREAM_RELEASE
def _stream_release(ptr: Any) -> None:
    try:
        s = ptr.contents
        _STATES.pop(s.private_data, None)
        s.release = STREAM_RELEASE()
    except Exception:  # pragma: no cover
        pass


for _cb in (_stream_get_schema, _stream_get_next, _stream_get_last_error, _stream_release):
    _immortal(_cb)


def stream_capsule(fill_schema: Callable[[ArrowSchema], None],
                   batches: list[Callable[[ArrowArray], None]]) -> Any:
    """An ``arrow_array_stream`` capsule yielding one struct batch per callable in ``batches``."""
    s = ArrowArrayStream()
    s.get_schema = _stream_get_schema
    s.get_next = _stream_get_next
    s.get_last_error = _stream_get_last_error
    s.private_data = _new_state([_StreamState(fill_schema, list(batches))])
    s.release = _stream_release
    return new_capsule(s, STREAM_CAPSULE)


__all__ = [
    "ARROW_DEVICE_CPU", "ARROW_DEVICE_CUDA", "ARROW_FLAG_DICTIONARY_ORDERED", "ARROW_FLAG_NULLABLE",
    "ArrowArray", "ArrowArrayStream", "ArrowDeviceArray", "ArrowSchema", "ImportedDeviceArray",
    "attach", "buffer_address", "capsule_pointer", "check_device_range", "check_node", "child",
    "fill_array", "fill_schema",
    "live_exports", "new_capsule", "peek_device", "schema_format", "schema_name", "stream_capsule",
]

if sys.byteorder != "little":  # pragma: no cover - Arrow bitmaps are read byte-wise below
    raise ImportError("gpuframe's Arrow C interface supports little-endian machines only")
