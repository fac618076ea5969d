"""The streaming multipart parser of uploads: what it accepts, what it refuses, and that
a delimiter is found wherever the blocks it reads happen to split the body."""

import io
import os

import pytest
from django.core.exceptions import RequestDataTooBig

from django_fluvius.exceptions import InvalidUpload
from django_fluvius.rest.multipart import StreamingMultipartParser

BOUNDARY = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"


class Sink:
    def __init__(self, record, field, name, content_type, charset):
        self.record = record
        self.meta = (field, name, content_type, charset)
        self.data = bytearray()
        self.writes = 0

    def write(self, view):
        assert isinstance(view, memoryview)  # views of the block, not copies
        self.data += view
        self.writes += 1

    def finish(self):
        self.record.append(self)
        return self


def parse(body, *, block_size=None, boundary=BOUNDARY):
    files = []
    parser = StreamingMultipartParser(io.BytesIO(body), boundary)
    if block_size:
        parser.block_size = block_size
    post, uploaded = parser.parse(lambda *meta: Sink(files, *meta))
    return post, uploaded, files


def part(name, data, filename=None, content_type=None, extra=b""):
    disposition = f'form-data; name="{name}"'.encode()
    if filename is not None:
        disposition += b'; filename="' + filename.encode() + b'"'
    head = b"Content-Disposition: " + disposition + b"\r\n"
    if content_type:
        head += b"Content-Type: " + content_type.encode() + b"\r\n"
    return b"--" + BOUNDARY + b"\r\n" + head + extra + b"\r\n" + data + b"\r\n"


def body(*parts, preamble=b"", epilogue=b""):
    return preamble + b"".join(parts) + b"--" + BOUNDARY + b"--\r\n" + epilogue


@pytest.mark.parametrize("block_size", [1, 2, 7, 41, 64, 4096, 1024 * 1024])
def test_fields_and_a_file_whatever_the_block_size(block_size):
    data = os.urandom(10_000) + b"\r\n--" + BOUNDARY[:-1] + b"\r\n--"  # near-delimiters inside the data
    post, uploaded, files = parse(body(
        part("note", b"hello world"),
        part("file", data, filename="scan.png", content_type="image/png; charset=binary"),
        part("tags", b"a"), part("tags", "é".encode()),
        preamble=b"ignored preamble\r\n", epilogue=b"ignored epilogue",
    ), block_size=block_size)
    assert post["note"] == "hello world" and post.getlist("tags") == ["a", "é"]
    assert [f.meta for f in files] == [("file", "scan.png", "image/png", "binary")]
    assert bytes(files[0].data) == data
    assert uploaded["file"] is files[0]


def test_large_data_goes_in_a_few_block_sized_writes():
    data = os.urandom(5 * 1024 * 1024 + 3)
    _, _, files = parse(body(part("file", data, filename="big.bin")))
    assert bytes(files[0].data) == data
    assert files[0].writes <= 7


@pytest.mark.parametrize("disposition,expected", [
    (b'form-data; name="file"; filename="a;b \\"c\\".txt"', 'a;b "c".txt'),
    (b"form-data; name=\"file\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf", "résumé.pdf"),
    (b'form-data; name="file"; filename="../../etc/passwd"', "passwd"),
    (b'form-data; name="file"; filename="C:\\\\x\\\\photo.png"', "photo.png"),
    (b'form-data; name="file"; filename=".."', ""),  # nothing left: the handler refuses it
])
def test_file_names(disposition, expected):
    raw = b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\nx\r\n--" + BOUNDARY + b"--"
    _, _, files = parse(raw)
    assert files[0].meta[1] == expected


def test_an_empty_file_input_is_skipped():
    post, uploaded, files = parse(body(part("file", b"", filename=""), part("a", b"1")))
    assert files == [] and not uploaded and post["a"] == "1"


def test_an_empty_form():
    post, uploaded, _ = parse(b"--" + BOUNDARY + b"--\r\n")
    assert not post and not uploaded


def test_a_delimiter_must_start_a_line():
    # The boundary's text after "preamble" is not a delimiter: the first real one is the
    # closing delimiter, so this is a form without parts.
    raw = b"preamble--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--" + BOUNDARY + b"--"
    post, uploaded, _ = parse(raw, block_size=16)
    assert not post and not uploaded


@pytest.mark.parametrize("raw", [
    b"no delimiter at all",
    b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunfinished",
    b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"a\"",          # headers cut off
    b"--" + BOUNDARY + b"XX",                                                       # bad delimiter end
    b"--" + BOUNDARY + b"\r\nno colon here\r\n\r\nx\r\n--" + BOUNDARY + b"--",
    b"--" + BOUNDARY + b"\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--" + BOUNDARY + b"--",
    b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data\r\n\r\nx\r\n--" + BOUNDARY + b"--",
    b"--" + BOUNDARY + b"\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\nx\r\n--" + BOUNDARY + b"--",
    body(part("file", b"aGVsbG8=", filename="a.txt", extra=b"Content-Transfer-Encoding: base64\r\n")),
    body(*[part(f"f{i}", b"x") for i in range(101)]),
], ids=["no-delimiter", "truncated-data", "truncated-headers", "bad-delimiter", "bad-header", "not-form-data",
        "no-name", "long-headers", "base64", "too-many-parts"])
def test_malformed_bodies_are_refused(raw):
    with pytest.raises(InvalidUpload) as caught:
        parse(raw, block_size=16)
    assert caught.value.status_code == 400 and caught.value.code == "invalid_multipart"


def test_plain_fields_count_against_the_memory_limit(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    parse(body(part("a", b"x" * 1000)))
    with pytest.raises(RequestDataTooBig):
        parse(body(part("a", b"x" * 600), part("b", b"x" * 600)))
