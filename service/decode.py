"""Image bytes -> PIL image: format, size and pixel limits, first frame, EXIF orientation."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ClientError

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """The first frame of a PNG, JPEG, GIF, BMP, WebP or TIFF file, upright, fully loaded."""
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
            image.seek(0)  # multi-frame GIF/TIFF/WebP: the first frame
            image.load()
            return ImageOps.exif_transpose(image)
    except ClientError:
        raise
    except UnidentifiedImageError:
        raise ClientError(415, f"not an image in a supported format ({', '.join(FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ClientError(413, f"image has more pixels than the limit of {max_pixels}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        # What Pillow raises for truncated or corrupt data varies by format.
        raise ClientError(400, f"corrupt or truncated image: {exc}") from None
