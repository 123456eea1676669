"""Class-id masks <-> what Gradio's ImageEditor shows and sends back.

Gradio 6.31's ImageEditor does not load layers passed in its value into the canvas (checked in chromium:
"No draw texture found for layer"; the layer never appears and a later stroke comes back alone). So the
pre-annotation is baked into the background (`overlay`: palette colours at `LAYER_ALPHA` over the photo) and
the person paints corrections on an empty layer. Reading back, the mask starts from the pre-annotation and
every layer paints over it, later layers winning where they overlap:

- a pixel is painted where its alpha is at least `MIN_ALPHA`; below that it is the faint anti-aliased rim of
  a stroke; unpainted pixels keep the pre-annotation (the eraser removes strokes, it does not un-label);
- its class is the palette colour it equals, up to `COLOUR_TOLERANCE` per channel (the canvas rounds
  translucent colours); the extra `ignore_colour` brush un-labels (255). A painted pixel farther from every
  brush colour (a stroke blended over another stroke at its soft edge) takes the class of the nearest clean
  pixel of the same layer, or, if the layer has none, the nearest colour. So a blend never invents a third
  class whose colour lies between two.

The same rules read a layer that holds a whole mask (`mask_to_layer`), should Gradio load such layers later.
Palettes must have distinct colours, otherwise a colour could not name one class.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..data.masks import IGNORE
from ..errors import DataError

LAYER_ALPHA = 0.55  # display opacity of the mask and of brush strokes: enough to see the image through
MIN_ALPHA = 64  # alpha (0..255) from which a pixel counts as painted
# the canvas stores colours premultiplied by alpha, so a translucent palette colour comes back off by up to
# 255 / (2 * alpha) per channel (2 at MIN_ALPHA); a blend of two classes is much farther from both
COLOUR_TOLERANCE = 6


def check_palette(palette: list[tuple[int, int, int]]) -> np.ndarray:
    """The palette as an (C, 3) uint8 array; refuse duplicates, which would make colours ambiguous."""
    pal = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    if pal.size and (pal.min() < 0 or pal.max() > 255):
        raise DataError("palette colours must be [r, g, b] with values 0..255")
    _, first, counts = np.unique(pal, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = pal[first[counts > 1][0]].tolist()
        same = [i for i, c in enumerate(pal.tolist()) if c == dup]
        raise DataError(f"classes {same} share the palette colour {dup}; give every class its own colour in "
                        "dataset.palette so the editor can tell them apart")
    return pal.astype(np.uint8)


def ignore_colour(palette) -> tuple[int, int, int]:
    """A brush colour for 'ignore' that no class uses: white, else the VOC void colour, else magenta..."""
    used = {tuple(int(v) for v in c) for c in palette}
    for c in [(255, 255, 255), (224, 224, 192), (255, 0, 255), (0, 255, 255), (255, 255, 0)]:
        if c not in used:
            return c
    raise DataError("no free colour for the ignore brush: the palette uses white, (224, 224, 192), magenta, "
                    "cyan and yellow")


def overlay(image: np.ndarray, mask: np.ndarray, palette, alpha: float = LAYER_ALPHA) -> np.ndarray:
    """The photo with the mask's classes in palette colours at `alpha` (ignore left clear), as RGB uint8."""
    layer = mask_to_layer(mask, palette, alpha).astype(np.float32)
    a = layer[..., 3:] / 255.0
    rgb = np.asarray(image)[..., :3].astype(np.float32)
    return (rgb * (1 - a) + layer[..., :3] * a).round().astype(np.uint8)


def hex_colour(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


def mask_to_layer(mask: np.ndarray, palette, alpha: float = LAYER_ALPHA) -> np.ndarray:
    """(H, W) class ids -> (H, W, 4) uint8 RGBA: palette colour at `alpha`, ignore transparent."""
    pal = check_palette(palette)
    mask = np.asarray(mask)
    out = np.zeros(mask.shape + (4,), dtype=np.uint8)
    known = mask < len(pal)
    out[known, :3] = pal[mask[known]]
    out[known, 3] = round(alpha * 255)
    return out


def layer_to_classes(layer: np.ndarray, palette, unpainted: int = -1) -> np.ndarray:
    """One RGBA layer -> (H, W) int16 class ids (IGNORE for the ignore colour), `unpainted` where the layer
    paints nothing (rules in the module doc)."""
    pal = check_palette(palette).astype(np.int32)
    pal = np.concatenate([pal, np.asarray([ignore_colour(palette)], dtype=np.int32)])
    ids = np.append(np.arange(len(pal) - 1), IGNORE)
    layer = np.asarray(layer)
    if layer.ndim != 3 or layer.shape[2] not in (3, 4):
        raise DataError(f"a layer must be an RGBA image (H, W, 4), got shape {layer.shape}")
    rgb = layer[..., :3].astype(np.int32)
    painted = layer[..., 3] >= MIN_ALPHA if layer.shape[2] == 4 else np.ones(layer.shape[:2], bool)
    out = np.full(layer.shape[:2], unpainted, dtype=np.int16)
    if not painted.any():
        return out
    # classify each distinct colour once (a canvas has few), then spread back to the pixels
    colours, inverse = np.unique(rgb[painted], axis=0, return_inverse=True)
    dist = np.abs(colours[:, None, :] - pal[None, :, :]).max(-1)
    nearest, clean_colour = dist.argmin(1), dist.min(1) <= COLOUR_TOLERANCE
    out[painted] = np.where(clean_colour, ids[nearest], unpainted)[inverse.ravel()]
    clean = painted & (out != unpainted)
    blend = painted & ~clean
    if blend.any():
        if clean.any():
            # the index of the nearest clean pixel, for every pixel
            _, (iy, ix) = ndimage.distance_transform_edt(~clean, return_indices=True)
            out[blend] = out[iy[blend], ix[blend]]
        else:
            out[blend] = ids[nearest[inverse.ravel()][~clean_colour[inverse.ravel()]]]
    return out


def layers_to_mask(layers: list[np.ndarray], palette, base: np.ndarray) -> np.ndarray:
    """The pre-annotation `base` with every layer painted over it, later layers winning where they overlap."""
    mask = np.array(base, dtype=np.uint8)
    shape = mask.shape
    for i, layer in enumerate(layers):
        if layer is None:
            continue
        layer = np.asarray(layer)
        if layer.shape[:2] != tuple(shape):
            raise DataError(f"layer {i + 1} is {layer.shape[1]}x{layer.shape[0]}, the image is "
                            f"{shape[1]}x{shape[0]}; was the canvas cropped or resized? Reload the image")
        classes = layer_to_classes(layer, palette)
        painted = classes >= 0
        mask[painted] = classes[painted]
    return mask


def editor_value_to_mask(value: dict | None, palette, base: np.ndarray) -> np.ndarray:
    """An ImageEditor value -> class-id mask. Only `layers` counts: `composite` (None when nobody touched the
    canvas) mixes in the photo and cannot be read back as classes; no layers at all means no corrections."""
    if value is None:
        raise DataError("the editor sent nothing; reload the image (nothing was saved)")
    return layers_to_mask(value.get("layers") or [], palette, base)
