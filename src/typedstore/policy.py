"""The I/O policy: every size threshold and cache bound, named and explained once.

Each constant says which choice it drives. They were set by the benchmarks in
``benchmarks/`` (see ``benchmarks/README.md``); change them only with a benchmark run
that shows the gain.
"""

from __future__ import annotations

__all__ = [
    "CACHED_HEADERS",
    "CACHED_HEADER_BYTES",
    "CACHED_HEADER_MAX",
    "CACHED_HEADER_TENSORS",
    "CACHED_STORAGES",
    "CHECK_PIECE",
    "COPY_MAX",
    "FOOTER_FIRST_READ",
    "HEADER_FIRST_READ",
    "INFLATE_MAX",
    "KNOWN_FOLDERS",
    "LARGE",
    "ONE_REQUEST_MAX",
    "OPEN_FOLDERS",
    "PAGE",
    "PART",
    "PARTS_IN_FLIGHT",
    "REMOTE_CHECK_PIECE",
    "REMOTE_RESUMES",
    "SMALL",
    "SYNC_THREADS",
]

#: An object of at least this many bytes is large. Large objects are written to a
#: preallocated, named temporary file (small ones to an unnamed file linked into place),
#: read a tensor at a time straight into each array and memory-mapped for codecs that
#: decode from memory (small ones are read whole with one call), and their safetensors
#: data starts at a page boundary.
LARGE = 1 << 20

#: Up to this size, chunks are joined and written with one system call, and a
#: safetensors file is read whole into one buffer that its arrays share (so a kept array
#: pins at most this much memory).
SMALL = 64 << 10

#: Arrays up to this size are copied into the encoded bytes instead of being referenced:
#: a copy costs less than a view of its memory.
COPY_MAX = 4 << 10

#: The page size that large objects' data is aligned to.
PAGE = 4096

#: The first read of a safetensors header: its length and, most often, all of it.
HEADER_FIRST_READ = 16 << 10

#: A compressed file may declare at most this many times its size in decompressed
#: buffers, which bounds the memory a hostile file can make a read allocate. Writes check
#: their own files against it, so that what is written can be read. (LZ4's frames cannot
#: exceed about 255:1; zstd's can, for nearly constant data.)
INFLATE_MAX = 256

#: The first read of a table's footer, from the end of the file: its length and, most
#: often, all of it (about 180 bytes a column), so that reading some columns of a remote
#: table takes three requests: footer, batch header, columns.
FOOTER_FIRST_READ = 64 << 10

#: Transfers piece by piece go in parts of this size: uploads and ranged downloads of
#: remote storages (S3 needs 5 MiB per part at least), and the command line's ``get`` and
#: ``copy``. It bounds the memory a transfer needs beyond its buffers.
PART = 8 << 20

#: Large reads are checksummed a piece of this size at a time, on another thread while
#: the next piece is read: large enough that handing a piece over and the read call per
#: piece cost little, small enough that the last piece, summed after the read ends,
#: costs little too (benchmarks/bench.py --only integrity).
CHECK_PIECE = 16 << 20

#: Parts a remote storage transfers at once (uploads: threads, each sending one part;
#: S3 reads: ranged requests, each streamed into the result as its bytes arrive).
PARTS_IN_FLIGHT = 4

#: Checked reads from S3 go in calls of up to this size, each fetched as PARTS_IN_FLIGHT
#: ranges at once and summed on another thread while the next one is fetched: large
#: enough that a call takes few requests, small enough that summing the last one after
#: the transfer costs little.
REMOTE_CHECK_PIECE = 256 << 20

#: Times a ranged S3 read whose body breaks off is asked again for the rest (from where
#: it stopped) before the read fails.
REMOTE_RESUMES = 3

#: Objects up to this size are uploaded to S3 with one request, larger ones in parts (as
#: s3fs does): a multipart upload takes three kinds of request, and the server assembles
#: the parts in a second pass over the bytes.
ONE_REQUEST_MAX = 100 << 20

#: Folders a remote storage remembers having written under (past it, it forgets them
#: all), to skip the requests that check that no object lies there.
KNOWN_FOLDERS = 4096

#: Files flushed to disk at once when a folder of them is synced: the filesystem's journal
#: commits concurrent flushes together, so several in flight cost little more than one.
SYNC_THREADS = 8

#: Storages kept for reuse, one per URL and options (each holds open folders or a
#: connection pool); past it they are all dropped and made again as used.
CACHED_STORAGES = 64

#: Folders a local storage keeps open (processes may commonly hold 1024 descriptors).
OPEN_FOLDERS = 64

#: Objects of one layout (the checkpoints of a model, a run's results) have equal headers:
#: the encoder keeps the headers of this many layouts of up to CACHED_HEADER_TENSORS
#: tensors, and the parser keeps its results for headers of up to CACHED_HEADER_MAX
#: bytes, up to CACHED_HEADER_BYTES of them in all.
CACHED_HEADERS = 128
CACHED_HEADER_TENSORS = 32
CACHED_HEADER_MAX = 64 << 10
CACHED_HEADER_BYTES = 256 << 10
