"""Image bytes -> an upright PIL image at a working size: format, byte and pixel limits, first frame, EXIF.

A phone photo is far larger than a digit needs: a JPEG is decoded at 1/2, 1/4 or 1/8 scale by the JPEG decoder
itself (DCT scaling, `Image.draft`), and any image is then reduced to a long side of a few hundred pixels
(MIN_SIDE to MAX_SIDE), so a 12-megapixel photo costs milliseconds and a few MB of memory.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import pillow_heif
from PIL import Image, UnidentifiedImageError

from service.errors import ClientError

pillow_heif.register_heif_opener()  # HEIC/HEIF, what many phones send; Pillow itself reads AVIF

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "HEIF", "AVIF")
MIN_SIDE, MAX_SIDE = 240, 480  # the working size's long side (a digit needs far less than a photo has)
LINE_SIDES = (480, 960)  # a line of up to 32 digits needs more (service/segment.py)
ORIENTATION = 0x0112  # the EXIF tag
T = Image.Transpose
UPRIGHT = {
    2: T.FLIP_LEFT_RIGHT,
    3: T.ROTATE_180,
    4: T.FLIP_TOP_BOTTOM,
    5: T.TRANSPOSE,
    6: T.ROTATE_270,
    7: T.TRANSVERSE,
    8: T.ROTATE_90,
}
TRANSPOSING = {5, 6, 7, 8}  # orientations that swap width and height


@dataclass(frozen=True)
class Decoded:
    image: Image.Image  # upright, fully loaded, reduced to the working size if it was larger
    size: tuple[int, int]  # the upright image's full width and height, before any reduction

    @property
    def scale(self) -> tuple[float, float]:
        """Full-size pixels per working pixel, horizontally and vertically."""
        return self.size[0] / self.image.width, self.size[1] / self.image.height


def choose_reduction(side: int, max_side: int = MAX_SIDE) -> int:
    """The smallest whole factor that brings a long side of `side` pixels to `max_side` or less."""
    return max(1, -(-side // max_side))


def decode_image(data: bytes, max_pixels: int, sides: tuple[int, int] = (MIN_SIDE, MAX_SIDE)) -> Decoded:
    """The first frame of a PNG, JPEG, GIF, BMP, WebP, TIFF, HEIF/HEIC or AVIF file, upright, at working size:
    a long side of at most `sides[1]`, from a JPEG decoded at a scale that keeps at least `sides[0]`."""
    min_side, max_side = sides
    if not data:
        raise ClientError(400, "empty body: send an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            # Checked from the header, before any pixel is decompressed.
            if width * height > max_pixels:
                raise ClientError(413, f"image has {width}x{height} pixels, more than the limit of {max_pixels}")
            image.seek(0)  # multi-frame GIF/TIFF/WebP/HEIF: the first frame
            if image.format == "JPEG" and max(width, height) >= 2 * min_side:
                # Luminance only (all the rest of the path uses), at the smallest DCT scale (1/2, 1/4, 1/8) that
                # keeps a long side of min_side: the decoder skips the work, not just the output.
                most = max(width, height) // min_side
                # (at least 1 pixel a side: a strip 1 pixel high must not ask the decoder for 0)
                image.draft("L" if image.mode == "RGB" else image.mode, (max(1, width // most), max(1, height // most)))
            image.load()
            orientation = image.getexif().get(ORIENTATION)
            factor = choose_reduction(max(image.size), max_side)
            if factor > 1:
                image = make_reducible(image).reduce(factor)
            if orientation in UPRIGHT:
                image = image.transpose(UPRIGHT[orientation])
    except ClientError:
        raise
    except UnidentifiedImageError:
        if data[4:8] == b"ftyp":  # an HEIF/AVIF container that libheif cannot read: cut short or damaged
            raise ClientError(400, "corrupt or truncated HEIF/AVIF image") from None
        raise ClientError(415, f"not an image in a supported format ({', '.join(FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ClientError(413, f"image has more pixels than the limit of {max_pixels}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, RuntimeError) as exc:
        # What Pillow (and libheif) raise for truncated or corrupt data varies by format.
        raise ClientError(400, f"corrupt or truncated image: {exc}") from None
    return Decoded(image, (height, width) if orientation in TRANSPOSING else (width, height))


def make_reducible(image: Image.Image) -> Image.Image:
    """`Image.reduce` takes 8-bit grey, RGB(A) and 32-bit modes: convert the others, keeping transparency."""
    if image.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
        return image
    if image.mode.startswith("I;16"):
        return image.convert("I")
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")
