"""kerax.datasets: the digits, IDX/npz readers, cache and download, the text corpus.

Never touches the network: every test runs with KERAX_OFFLINE=1 and KERAX_HOME in a tmp
dir; the download path is exercised with file:// mirrors.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import inspect
import math
import struct
import types

import numpy as np
import pytest

import kerax.datasets as kd
from kerax import errors
from kerax.datasets import _cache, _idx, digits, fashion_mnist, mnist, text

DIGIT_TOTALS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture(autouse=True)
def _offline_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAX_OFFLINE", "1")
    monkeypatch.setenv("KERAX_HOME", str(tmp_path / "home"))


def test_public_names():
    assert sorted(kd.__all__) == ["cache_dir", "fashion_mnist", "load_digits", "mnist", "text"]
    assert kd.mnist.load_data is mnist.load_data and callable(kd.text.load_corpus)


# ---------------------------------------------------------------------------- digits

def test_digits_shapes_dtypes_range_and_class_counts():
    (xtr, ytr), (xte, yte) = kd.load_digits()
    assert xtr.shape == (1437, 8, 8, 1) and xte.shape == (360, 8, 8, 1)
    assert xtr.dtype == np.float32 and ytr.dtype == np.int32 and yte.dtype == np.int32
    assert xtr.min() == 0.0 and xtr.max() == 1.0 and xte.min() >= 0.0 and xte.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(ytr, minlength=10) + np.bincount(yte, minlength=10),
                                  DIGIT_TOTALS)
    # stratified: each class's test share is within one row of 20%
    assert np.all(np.abs(np.bincount(yte) - 0.2 * np.array(DIGIT_TOTALS)) < 1)
    assert np.all(np.bincount(ytr) > 0) and np.all(np.bincount(yte) > 0)


def test_digits_match_scikit_learn_and_partition_the_rows():
    from sklearn.datasets import load_digits as sk_load  # the independent reference

    sk = sk_load()
    (xtr, ytr), (xte, yte) = kd.load_digits(seed=3)
    ours = np.concatenate([np.concatenate([xtr, xte]).reshape(-1, 64) * 16,
                           np.concatenate([ytr, yte])[:, None]], axis=1)
    ref = np.concatenate([sk.data, sk.target[:, None]], axis=1)
    # same multiset of (pixels, label) rows: every row used exactly once across the split
    np.testing.assert_array_equal(ours[np.lexsort(ours.T)], ref[np.lexsort(ref.T)])
    train, test = digits.stratified_split(sk.target, 0.2, seed=3)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 1797
    np.testing.assert_array_equal(xte.reshape(-1, 64) * 16, sk.data[test])


def test_digits_split_is_deterministic_and_seeded():
    (a, ya), (b, yb) = kd.load_digits()
    (c, yc), (d, yd) = kd.load_digits()
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(yb, yd)
    (_, y1), (x1, _) = kd.load_digits(seed=1)
    assert not np.array_equal(x1, b)
    np.testing.assert_array_equal(np.bincount(y1), np.bincount(ya))  # same class counts
    (x5, _), (x5t, _) = kd.load_digits(test_fraction=0.5)
    assert len(x5t) == math.ceil(0.5 * 1797) and len(x5) + len(x5t) == 1797


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 0.9999, "0.2"])
def test_digits_bad_fraction(fraction):
    with pytest.raises(errors.ConfigError, match=r"test_fraction.*(must be in \(0, 1\)|no training rows)"):
        kd.load_digits(test_fraction=fraction)


def test_digits_without_scikit_learn(monkeypatch, tmp_path):
    monkeypatch.setattr(digits.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(errors.DatasetNotFoundError, match="pip install scikit-learn"):
        kd.load_digits()
    fake = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(digits.importlib.util, "find_spec", lambda name: fake)
    with pytest.raises(errors.DatasetNotFoundError, match=r"digits.csv.gz is missing.*reinstall"):
        kd.load_digits()


def test_digits_corrupt_table(monkeypatch, tmp_path):
    bad = tmp_path / "digits.csv.gz"
    bad.write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    monkeypatch.setattr(digits, "digits_file", lambda: bad)
    with pytest.raises(errors.CorruptFileError, match=r"expected a table of shape \(1797, 65\), got \(2, 3\)"):
        kd.load_digits()
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(errors.CorruptFileError, match="not a readable digits table"):
        kd.load_digits()


# ---------------------------------------------------------------------------- IDX files

def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file written from the format's definition: magic, big-endian dims, values."""
    dtype = {0x08: ">u1", 0x0D: ">f4"}[code]
    head = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(dtype).tobytes()


def toy_split(seed: int = 0):
    rng = np.random.default_rng(seed)
    return ((rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), rng.integers(0, 10, 7).astype(np.uint8)),
            (rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), rng.integers(0, 10, 3).astype(np.uint8)))


def write_split(directory, split, gz=(False, True, True, False)):
    directory.mkdir(parents=True, exist_ok=True)
    arrays = [split[0][0], split[0][1], split[1][0], split[1][1]]
    for name, array, z in zip(IDX_NAMES, arrays, gz):
        data = idx_bytes(array)
        (directory / (name + ".gz" if z else name)).write_bytes(gzip.compress(data) if z else data)
    return directory


def assert_split_equal(got, want):
    for (gx, gy), (wx, wy) in zip(got, want):
        assert gx.dtype == np.uint8 and gy.dtype == np.uint8
        np.testing.assert_array_equal(gx, wx)
        np.testing.assert_array_equal(gy, wy)


@pytest.mark.parametrize("gz", [(False,) * 4, (True,) * 4, (False, True, True, False)])
def test_idx_round_trip(tmp_path, gz):
    split = toy_split()
    write_split(tmp_path / "d", split, gz)
    assert_split_equal(mnist.load_data(path=tmp_path / "d"), split)
    assert_split_equal(fashion_mnist.load_data(path=str(tmp_path / "d")), split)


def test_gzip_detected_by_magic_not_name(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    (tmp_path / "plain-name").write_bytes(gzip.compress(idx_bytes(a)))
    np.testing.assert_array_equal(_idx.read_idx(tmp_path / "plain-name", _idx.IMAGES_MAGIC), a)


def test_idx_other_dtypes_are_native_endian(tmp_path):
    a = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    (tmp_path / "f").write_bytes(idx_bytes(a, code=0x0D))
    got = _idx.read_idx(tmp_path / "f")
    assert got.dtype == np.float32 and got.dtype.isnative
    np.testing.assert_array_equal(got, a)


def _bad(tmp_path, data: bytes, name="x") -> str:
    (tmp_path / name).write_bytes(data)
    return str(tmp_path / name)


def test_idx_rejections(tmp_path):
    images = idx_bytes(np.zeros((7, 28, 28), np.uint8))
    cases = [  # (file bytes, expected message)
        (images[:-5], r"size mismatch: the header declares dims \(7, 28, 28\) = 5488 bytes of values, "
                      r"the file holds 5483"),
        (images + b"abc", r"declares dims \(7, 28, 28\) = 5488 bytes.*holds 5491"),
        (gzip.compress(images[:-5]), r"truncated: the header declares 5488 bytes of values, the file holds 5483"),
        (gzip.compress(images + b"abc"), r"holds more \(at least 3 extra bytes\)"),
        (gzip.compress(images)[:-30], "not a valid gzip stream"),
        (idx_bytes(np.zeros(7, np.uint8)), r"bad IDX magic number: expected 0x00000803, got 0x00000801"),
        (b"\x00\x00\x07\x03" + images[4:], r"bad IDX magic number: expected 0x00000803, got 0x00000703"),
        (b"\x00\x00", r"too short for an IDX header: expected at least 4 bytes, got 2"),
        (images[:10], r"truncated header: expected 12 bytes of dimensions, got 6"),
        (np.random.default_rng(1).bytes(2000), "bad IDX magic number"),
        (gzip.compress(np.random.default_rng(2).bytes(2000)), "bad IDX magic number"),
        (b"\x1f\x8b" + np.random.default_rng(3).bytes(200), "not a valid gzip stream"),
    ]
    for i, (data, message) in enumerate(cases):
        path = _bad(tmp_path, data, f"f{i}")
        with pytest.raises(errors.CorruptFileError, match=message) as info:
            _idx.read_idx(path, _idx.IMAGES_MAGIC)
        assert path in str(info.value)


def test_idx_huge_declared_size_is_refused_before_allocating(tmp_path):
    head = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 2**31, 28)
    with pytest.raises(errors.CorruptFileError, match=r"declares dims \(2147483648, 2147483648, 28\)"):
        _idx.read_idx(_bad(tmp_path, head + b"\0" * 100))
    with pytest.raises(errors.CorruptFileError,
                       match=rf"truncated: the header declares {2**62 * 28} bytes of values, the file holds 100"):
        _idx.read_idx(_bad(tmp_path, gzip.compress(head + b"\0" * 100), "g"))


def test_idx_split_inconsistent(tmp_path):
    (xtr, ytr), test = toy_split()
    write_split(tmp_path / "a", ((xtr, ytr[:6]), test))
    with pytest.raises(errors.CorruptFileError,
                       match=r"train-images-idx3-ubyte holds 7 images but train-labels-idx1-ubyte.gz holds 6"):
        mnist.load_data(path=tmp_path / "a")
    write_split(tmp_path / "b", ((xtr, np.full(7, 10, np.uint8)), test))
    with pytest.raises(errors.CorruptFileError, match=r"class ids in \[0, 10\); got values in \[10, 10\]"):
        mnist.load_data(path=tmp_path / "b")
    write_split(tmp_path / "c", toy_split())
    (tmp_path / "c" / IDX_NAMES[0]).write_bytes(idx_bytes(ytr))  # labels where images belong
    with pytest.raises(errors.CorruptFileError, match=r"train-images.*expected 0x00000803, got 0x00000801"):
        mnist.load_data(path=tmp_path / "c")


# ---------------------------------------------------------------------------- npz files

def save_npz(path, split, **override):
    arrays = dict(x_train=split[0][0], y_train=split[0][1], x_test=split[1][0], y_test=split[1][1])
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_npz_round_trip(tmp_path):
    split = toy_split(5)
    assert_split_equal(mnist.load_data(path=save_npz(tmp_path / "mnist.npz", split)), split)
    assert_split_equal(mnist.load_data(path=tmp_path), split)  # a directory holding mnist.npz
    wide = save_npz(tmp_path / "w.npz", split, y_train=split[0][1].astype(np.int64))
    assert_split_equal(fashion_mnist.load_data(path=wide), split)  # labels cast to uint8


def test_npz_rejections(tmp_path):
    split = toy_split()
    cases = [
        (save_npz(tmp_path / "a.npz", split, y_test=None),
         r"missing arrays \['y_test'\]: expected keys \['x_train', 'y_train', 'x_test', 'y_test'\]"),
        (save_npz(tmp_path / "b.npz", split, x_train=split[0][0].astype(np.float32)),
         r"x_train must be uint8 images of shape \(n, rows, cols\); got float32 of shape \(7, 28, 28\)"),
        (save_npz(tmp_path / "c.npz", split, y_train=np.array([None] * 7, dtype=object)),
         r"not a readable .npz archive"),
        (save_npz(tmp_path / "d.npz", split, y_test=split[1][1][:2]),
         r"x_test holds 3 images but y_test holds 2 labels"),
        (_bad(tmp_path, b"PK\x03\x04 not really a zip", "e.npz"), r"not a readable .npz archive"),
    ]
    for path, message in cases:
        with pytest.raises(errors.CorruptFileError, match=message):
            mnist.load_data(path=path)
    with pytest.raises(errors.CorruptFileError, match=r"not an .npz archive: expected a zip file"):
        _idx.read_npz_split(_bad(tmp_path, b"\x93NUMPY", "f.npy"))
    with pytest.raises(errors.CorruptFileError, match="path= must be a directory of the four IDX files or an .npz"):
        mnist.load_data(path=_bad(tmp_path, b"hello", "g.txt"))


# ---------------------------------------------------------------------------- cache and download

def test_cache_dir(tmp_path, monkeypatch):
    assert kd.cache_dir("mnist") == tmp_path / "home" / "datasets" / "mnist"
    monkeypatch.delenv("KERAX_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert kd.cache_dir() == tmp_path / "user" / ".kerax" / "datasets"
    for value, expected in [("1", True), ("true", True), ("0", False), ("", False)]:
        monkeypatch.setenv("KERAX_OFFLINE", value)
        assert _cache.offline() is expected


def test_missing_files_offline_says_what_to_put_where(tmp_path):
    for module, name in [(mnist, "mnist"), (fashion_mnist, "fashion_mnist")]:
        where = tmp_path / "home" / "datasets" / name
        with pytest.raises(errors.DatasetNotFoundError) as info:
            module.load_data()
        message = str(info.value)
        assert isinstance(info.value, FileNotFoundError)
        assert f"files not found in {where}" in message and "KERAX_OFFLINE" in message
        for file in IDX_NAMES:
            assert f"{file}.gz" in message
        assert "path=" in message
        with pytest.raises(errors.DatasetNotFoundError, match=r"missing train-images-idx3-ubyte.gz, "):
            module.load_data()
    with pytest.raises(errors.DatasetNotFoundError, match=r"path='.*nowhere' does not exist"):
        mnist.load_data(path=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.DatasetNotFoundError, match=r"files not found in .*empty: missing train-images"):
        mnist.load_data(path=tmp_path / "empty")


def test_cache_is_read_without_download(tmp_path):
    split = toy_split(2)
    write_split(kd.cache_dir("mnist"), split)
    assert_split_equal(mnist.load_data(), split)
    kd.cache_dir("fashion_mnist").mkdir(parents=True)
    save_npz(kd.cache_dir("fashion_mnist") / "fashion_mnist.npz", split)
    assert_split_equal(fashion_mnist.load_data(), split)


def _mirror(tmp_path, split):
    mirror = write_split(tmp_path / "mirror", split, gz=(True,) * 4)
    files = tuple((f"{n}.gz", "md5:" + hashlib.md5((mirror / f"{n}.gz").read_bytes()).hexdigest())
                  for n in IDX_NAMES)
    return mirror, files


def test_download_from_second_mirror_with_checksums(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAX_OFFLINE")
    split = toy_split(4)
    mirror, files = _mirror(tmp_path, split)
    source = mnist.IdxSource("toy", "Toy", files, ((tmp_path / "absent").as_uri(), mirror.as_uri()), "toy.npz")
    assert_split_equal(mnist.load_idx_source(source), split)
    assert sorted(p.name for p in kd.cache_dir("toy").iterdir()) == sorted(f for f, _ in files)
    bad = dataclasses.replace(source, name="bad", files=((files[0][0], "md5:" + "0" * 32), *files[1:]))
    with pytest.raises(errors.DatasetNotFoundError,
                       match=r"missing train-images-idx3-ubyte.gz\. Download failed:(.|\n)*"
                             r"md5 checksum mismatch: expected 0{32}, got [0-9a-f]{32}"):
        mnist.load_idx_source(bad)
    # the mismatching file never reaches the cache, nor does a partial one
    assert sorted(p.name for p in kd.cache_dir("bad").iterdir()) == sorted(f for f, _ in files[1:])


def test_download_over_http_and_unreachable_mirrors(tmp_path, monkeypatch):
    import functools
    import http.server
    import threading

    monkeypatch.delenv("KERAX_OFFLINE")
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # the local server must be reached directly
    split = toy_split(6)
    mirror, files = _mirror(tmp_path, split)
    (mirror / files[3][0]).unlink()  # the server answers 404 for this one
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        dead = (tmp_path / "absent").as_uri()
        source = mnist.IdxSource("web", "Web", files, (dead, url), "web.npz")
        with pytest.raises(errors.DatasetNotFoundError) as info:
            mnist.load_idx_source(source)
    finally:
        server.shutdown()
        server.server_close()
    message = str(info.value)
    assert "missing t10k-labels-idx1-ubyte.gz. Download failed:" in message
    assert f"{url}t10k-labels-idx1-ubyte.gz (HTTP 404" in message
    assert f"{dead}/t10k-labels-idx1-ubyte.gz (skipped: unreachable above)" in message
    assert sorted(p.name for p in kd.cache_dir("web").iterdir()) == sorted(f for f, _ in files[:3])


def test_download_one_file(tmp_path):
    src = _bad(tmp_path, b"payload" * 100, "src")
    url, digest = (tmp_path / "src").as_uri(), hashlib.sha256(b"payload" * 100).hexdigest()
    out = _cache.download(url, tmp_path / "c" / "out", f"sha256:{digest}")
    assert out.read_bytes() == open(src, "rb").read()
    with pytest.raises(errors.CorruptFileError, match=r"larger than expected: over 10 bytes"):
        _cache.download(url, tmp_path / "c" / "big", f"sha256:{digest}", max_bytes=10)
    with pytest.raises(errors.CorruptFileError, match=rf"sha256 checksum mismatch: expected {'1' * 64}, got {digest}"):
        _cache.download(url, tmp_path / "c" / "x", "sha256:" + "1" * 64)
    with pytest.raises(errors.ConfigError, match=r"checksum must look like 'sha256:<hex>'.*'crc32:1'"):
        _cache.download(url, tmp_path / "c" / "y", "crc32:1")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["out"]
    assert _cache.file_checksum(out, "sha256") == digest


# ---------------------------------------------------------------------------- text corpus

def test_corpus_vocab_encode_decode():
    s = "héllo wörld ✓\nhello"
    c = text.Corpus(s)
    assert c.vocab == tuple(sorted(set(s))) and c.vocab_size == len(set(s)) and len(c) == len(s)
    ref = np.array([c.vocab.index(ch) for ch in s])
    np.testing.assert_array_equal(c.ids, ref)
    assert c.ids.dtype == np.int32 and c.decode(c.ids) == s and c.decode(list(c.encode("öl✓"))) == "öl✓"
    with pytest.raises(errors.DataError,
                       match=r"character 'Z' \(U\+005A\) at position 2 is not in the corpus vocabulary of 12 characters"):
        c.encode("heZ")
    with pytest.raises(errors.DataError,
                       match=r"ids must be integers in \[0, 12\); received int64 values in \[-1, 3\]"):
        c.decode(np.array([3, -1]))
    with pytest.raises(ValueError):
        c.ids[0] = 1  # read-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.text = "x"


@pytest.mark.parametrize("length,stride,limit", [(3, 1, None), (3, 2, None), (5, 7, None), (4, 1, 5), (25, 1, None)])
def test_corpus_windows_against_reference(length, stride, limit):
    c = text.Corpus("the quick brown fox jumps.")
    ids = c.ids
    starts = [i for i in range(0, len(ids) - length, stride)][:limit]
    x, y = c.windows(length, stride, limit)
    assert x.dtype == np.int32 and y.dtype == np.int32 and x.shape == (len(starts), length)
    np.testing.assert_array_equal(x, np.array([ids[i:i + length] for i in starts]))
    np.testing.assert_array_equal(y, np.array([ids[i + length] for i in starts]))


def test_corpus_window_errors():
    c = text.Corpus("abcd")
    for kwargs, message in [({"length": 0}, "length must be a positive int; received length=0"),
                            ({"length": 2, "stride": True}, "stride must be a positive int"),
                            ({"length": 2, "limit": 0}, "limit must be a positive int"),
                            ({"length": 4}, "a text of 4 characters has no window of length 4.*at least 5")]:
        with pytest.raises(errors.DataError, match=message):
            c.windows(**kwargs)


def test_corpus_entropy_split_and_construction_errors():
    assert text.Corpus("aab").unigram_entropy() == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert text.Corpus("abcd" * 3).unigram_entropy() == pytest.approx(math.log(4))
    assert text.Corpus("zzz").unigram_entropy() == 0.0
    c = text.Corpus("abcabcabxy")
    train, test = c.split(0.25)
    assert train.text + test.text == c.text and len(test) == 3 and train.vocab == test.vocab == c.vocab
    np.testing.assert_array_equal(np.concatenate([train.ids, test.ids]), c.ids)
    for bad in (0, 1.0, 0.99):
        with pytest.raises(errors.ConfigError, match=r"test_fraction.*(must be in \(0, 1\)|leaves no training)"):
            c.split(bad)
    with pytest.raises(errors.DataError, match="at least one character; received an empty text"):
        text.Corpus("")
    with pytest.raises(errors.DataError, match="a corpus needs a str; received bytes"):
        text.Corpus(b"abc")
    with pytest.raises(errors.DataError, match="vocab must be distinct single characters"):
        text.Corpus("ab", ("a", "bb"))
    with pytest.raises(errors.DataError, match=r"character 'c' \(U\+0063\) at position 2"):
        text.Corpus("abc", ("b", "a"))


@pytest.fixture(scope="module")
def default_corpus():
    return text.load_corpus()


def test_default_corpus_is_stdlib_docs_and_deterministic(default_corpus):
    c = default_corpus
    assert len(c.text) == 200_000 and c.vocab == tuple(sorted(set(c.text)))
    assert c.text.startswith(inspect.cleandoc(argparse.__doc__))  # argparse is first
    small = text.load_corpus(max_chars=3000)
    assert small.text == c.text[:3000]
    assert 2.0 < c.unigram_entropy() < math.log(c.vocab_size)  # English-like, far from uniform
    np.testing.assert_array_equal(text.Corpus(c.text).ids, c.ids)


def test_corpus_from_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffnaïve text\n".encode("utf-8"))
    c = text.load_corpus(path, max_chars=None)
    assert c.text == "naïve text\n"
    assert text.load_corpus(str(path), max_chars=3).text == "naï"
    for data, message in [(b"", r"t.txt is empty"), (b"ab\xffc", r"not UTF-8 text: byte 0xff at offset 2")]:
        path.write_bytes(data)
        with pytest.raises(errors.DataError, match=message):
            text.load_corpus(path)
    with pytest.raises(errors.DatasetNotFoundError, match=r"path='.*nope.txt' does not exist"):
        text.load_corpus(tmp_path / "nope.txt")
    with pytest.raises(errors.DataError, match="is not a file; expected a UTF-8 text file"):
        text.load_corpus(tmp_path)
    with pytest.raises(errors.DataError, match="max_chars must be a positive int or None; received max_chars=0"):
        text.load_corpus(max_chars=0)


def test_default_corpus_without_stdlib_sources(tmp_path, monkeypatch):
    monkeypatch.setattr(text.sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    with pytest.raises(errors.DatasetNotFoundError, match=r"none of .*'argparse.py'.* pass load_corpus\(path=...\)"):
        text.load_corpus()
