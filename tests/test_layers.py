"""Masks <-> ImageEditor layers: every class, overlaps, empty and absent layers, blended stroke edges."""
from __future__ import annotations

import numpy as np
import pytest

from annotassist.ui.layers import (COLOUR_TOLERANCE, LAYER_ALPHA, MIN_ALPHA, check_palette,
                                         editor_value_to_mask, ignore_colour, layer_to_classes, layers_to_mask,
                                         mask_to_layer, overlay)
from annotassist.config import voc_palette
from annotassist.data.masks import IGNORE
from annotassist.errors import DataError

PAL = voc_palette(21)


def stroke(shape, colour, where, alpha=LAYER_ALPHA) -> np.ndarray:
    """An RGBA layer painting `colour` on the boolean `where`."""
    layer = np.zeros(shape + (4,), np.uint8)
    layer[where, :3] = colour
    layer[where, 3] = round(alpha * 255)
    return layer


def test_every_class_round_trips_through_a_layer():
    mask = np.arange(21 * 4, dtype=np.uint8).reshape(6, 14) % 21
    mask[0, 0] = IGNORE
    layer = mask_to_layer(mask, PAL)
    assert layer.shape == (6, 14, 4) and layer[0, 0, 3] == 0 and (layer[mask != IGNORE, 3] > 0).all()
    got = layer_to_classes(layer, PAL)
    assert (got[mask != IGNORE] == mask[mask != IGNORE]).all() and got[0, 0] == -1  # -1 = unpainted
    base = np.full(mask.shape, 3, np.uint8)
    out = layers_to_mask([layer], PAL, base)
    assert (out[mask != IGNORE] == mask[mask != IGNORE]).all() and out[0, 0] == 3  # unpainted keeps the base


def test_translucent_colours_rounded_by_the_canvas_still_map_exactly():
    mask = np.arange(21, dtype=np.uint8)[None].repeat(3, 0)
    layer = mask_to_layer(mask, PAL).astype(np.int16)
    layer[..., :3] += np.random.default_rng(0).integers(-COLOUR_TOLERANCE, COLOUR_TOLERANCE + 1, (3, 21, 3))
    layer = layer.clip(0, 255).astype(np.uint8)
    assert (layer_to_classes(layer, PAL) == mask).all()


def test_later_layers_win_where_layers_overlap():
    base = np.zeros((10, 10), np.uint8)
    a = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True
    b = np.zeros((10, 10), bool)
    b[4:8, 4:8] = True
    out = layers_to_mask([stroke((10, 10), PAL[1], a), stroke((10, 10), PAL[2], b)], PAL, base)
    assert (out[4:8, 4:8] == 2).all() and out[2, 2] == 1 and out[9, 9] == 0
    out = layers_to_mask([stroke((10, 10), PAL[2], b), stroke((10, 10), PAL[1], a)], PAL, base)
    assert (out[4:6, 4:6] == 1).all() and out[7, 7] == 2


def test_empty_and_absent_layers_keep_the_pre_annotation():
    base = np.random.default_rng(1).integers(0, 21, (8, 9)).astype(np.uint8)
    empty = np.zeros((8, 9, 4), np.uint8)
    assert (layers_to_mask([], PAL, base) == base).all()
    assert (layers_to_mask([empty, None], PAL, base) == base).all()
    faint = stroke((8, 9), PAL[5], np.ones((8, 9), bool), alpha=(MIN_ALPHA - 1) / 255)
    assert (layers_to_mask([faint], PAL, base) == base).all()  # an anti-aliased rim is not paint


def test_untouched_canvas_where_composite_is_none():
    base = np.random.default_rng(2).integers(0, 21, (8, 9)).astype(np.uint8)
    value = {"background": np.zeros((8, 9, 4), np.uint8), "layers": [np.zeros((8, 9, 4), np.uint8)],
             "composite": None}
    assert (editor_value_to_mask(value, PAL, base) == base).all()
    assert (editor_value_to_mask({"background": None, "layers": [], "composite": None}, PAL, base) == base).all()
    with pytest.raises(DataError, match="sent nothing"):
        editor_value_to_mask(None, PAL, base)


def test_the_ignore_brush_un_labels():
    base = np.ones((6, 6), np.uint8)
    where = np.zeros((6, 6), bool)
    where[:, :3] = True
    out = layers_to_mask([stroke((6, 6), ignore_colour(PAL), where)], PAL, base)
    assert (out[:, :3] == IGNORE).all() and (out[:, 3:] == 1).all()
    assert ignore_colour(PAL) not in [tuple(c) for c in PAL]
    assert ignore_colour([(255, 255, 255)]) == (224, 224, 192)


def test_a_blend_at_a_stroke_edge_takes_a_neighbour_class_never_a_third():
    # class 2's colour lies halfway between classes 0 and 1, so a soft edge between a class-0 and a class-1
    # stroke can come close to it; only a pixel of exactly that colour may become class 2
    pal = [(0, 0, 0), (255, 255, 254), (128, 128, 127)]
    layer = np.zeros((1, 5, 4), np.uint8)
    layer[0, :2] = (0, 0, 0, 255)
    layer[0, 3:] = (255, 255, 254, 255)
    layer[0, 2] = (128, 128, 127, 255)  # exactly class 2's colour: a real class-2 pixel stays class 2
    assert layer_to_classes(layer, pal).tolist() == [[0, 0, 2, 1, 1]]
    layer[0, 2] = (100, 100, 99, 255)  # a blend, near no colour: the nearest clean pixel decides
    assert layer_to_classes(layer, pal)[0, 2] in (0, 1)


def test_wrong_sized_layers_and_ambiguous_palettes_are_refused():
    with pytest.raises(DataError, match="cropped or resized"):
        layers_to_mask([np.zeros((4, 4, 4), np.uint8)], PAL, np.zeros((5, 5), np.uint8))
    with pytest.raises(DataError, match="share the palette colour"):
        check_palette([(1, 2, 3), (4, 5, 6), (1, 2, 3)])


def test_overlay_tints_classes_and_leaves_ignore_clear():
    img = np.full((2, 2, 3), 200, np.uint8)
    mask = np.array([[0, 1], [IGNORE, 1]], np.uint8)
    out = overlay(img, mask, PAL)
    assert (out[1, 0] == 200).all() and (out[0, 0] < 200).all() and out[0, 1, 0] > out[0, 1, 1]
