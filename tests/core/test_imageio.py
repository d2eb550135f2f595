import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from zoo.imageio import ImageDecodeError, decode_image, load_image, to_image, to_tensor, to_uint8_array


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_modes_become_rgb():
    gray = Image.fromarray(np.full((4, 5), 100, np.uint8), "L")
    assert decode_image(_png(gray)).mode == "RGB"
    rgba = Image.fromarray(np.zeros((4, 5, 4), np.uint8), "RGBA")  # fully transparent -> white
    assert np.asarray(decode_image(_png(rgba)))[0, 0].tolist() == [255, 255, 255]
    sixteen = Image.fromarray(np.full((4, 5), 65535, np.uint16))
    decoded = decode_image(_png(sixteen))
    assert decoded.mode == "RGB" and np.asarray(decoded)[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_applied():
    image = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    assert decode_image(buffer.getvalue()).size == (10, 20)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but which carries one tiny compressed row."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_pixel_limit_checked_before_decoding():
    with pytest.raises(ImageDecodeError, match="5000x5000 = 25000000 pixels, over the 1000000-pixel limit") as info:
        decode_image(_png_claiming(5000, 5000), max_pixels=1_000_000)
    assert info.value.too_large
    # far past Pillow's own bomb limit: still a clear "too large" error, never a decode
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_png_claiming(100_000, 100_000))
    assert info.value.too_large


def test_pixel_limit_quoted_is_ours_not_pillows():
    from PIL import Image

    # 60000 x 60000 is past Pillow's bomb limit (Image.open refuses it before we see the size)
    with pytest.raises(ImageDecodeError, match=r"image is 3600000000 pixels, over the 40000000-pixel limit") as info:
        decode_image(_png_claiming(60_000, 60_000), max_pixels=40_000_000)
    assert info.value.too_large and str(2 * Image.MAX_IMAGE_PIXELS) not in str(info.value)
    # in Pillow's warning band (above its MAX_IMAGE_PIXELS, below twice that): our limit, not Pillow's warning
    side = int((Image.MAX_IMAGE_PIXELS * 1.5) ** 0.5)
    with pytest.raises(ImageDecodeError, match=f"{side}x{side} = {side * side} pixels, over the 1000-pixel limit"):
        decode_image(_png_claiming(side, side), max_pixels=1000)


def test_byte_limit():
    with pytest.raises(ImageDecodeError, match="byte limit"):
        decode_image(b"x" * 100, max_bytes=10)


def test_truncated_and_non_image_bytes():
    data = _png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(b"hello, this is text")
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")


def test_sources_and_tensors(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.full((6, 8, 3), 255, np.uint8)).save(path)
    assert load_image(path).size == (8, 6)
    with pytest.raises(ImageDecodeError, match="no such image file"):
        load_image(tmp_path / "missing.png")
    assert load_image("skimage:camera").mode == "RGB"
    with pytest.raises(ImageDecodeError, match="unknown example"):
        load_image("skimage:nope")
    tensor = to_tensor(load_image(np.zeros((3, 6, 8), np.float32)), 4)
    assert tensor.shape == (3, 4, 4) and float(tensor.max()) == 0.0
    assert to_image(tensor).size == (4, 4)


def test_uint8_array_rounds_and_clamps_instead_of_wrapping():
    import torch

    # a decoder overshoots [0, 1]: 1.2 must be white and -0.1 black, not 50 and 230 (uint8 wrap-around)
    tensor = torch.tensor([1.2, -0.1, 0.5, 0.0]).reshape(1, 2, 2).expand(3, 2, 2)
    array = to_uint8_array(tensor)
    assert array.dtype == np.uint8 and array.shape == (2, 2, 3)
    assert array[..., 0].tolist() == [[255, 0], [128, 0]]
    assert np.array_equal(np.asarray(to_image(tensor)), array)
