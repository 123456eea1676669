"""The correction editor: a Gradio page to review and fix the round's pseudo-masks, most useful image first.

Each browser tab keeps its own `TabState` on the server (Gradio session state); the workspace is opened per
request (SQLite connections are per thread, and WAL lets the trainer or another tab write meanwhile).
The browser only ever names images by workspace id, checked against the workspace; files are read from the
paths the workspace stored. What is saved is in the pool at once; only the canvas's unsaved strokes can be
lost, and the page names the image that has them.

Region mode (an image with an open region query, see session.py): the canvas shows the queried regions
outlined and the rest dimmed; a clickable copy beside it gives a whole region the chosen class in one click
(strokes already on the canvas are kept: they are folded into the mask first), and Save stores only what is
inside the regions.

The editor never takes the workspace lock (annotassist/lock.py): correcting queued images while a loop waits
for them is what `loop --annotator gradio` does. A read-only workspace is refused at start.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from ..auth import AUTH_ENV, parse_auth
from ..data.masks import IGNORE
from ..errors import AnnotassistError
from ..workspace import Workspace
from . import session
from .layers import LAYER_ALPHA, check_palette, editor_value_to_mask, hex_colour, ignore_colour, overlay
from .shortcuts import SHORTCUTS_JS, legend_html


@dataclass
class TabState:
    opened: session.Opened | None = None
    dirty: bool = False  # strokes on the canvas since the image was opened or saved
    armed: str = ""  # an action the person was warned about once; doing it again goes ahead
    stale: bool = False  # the last save was refused: another version was stored since opening
    mask: np.ndarray | None = None  # region mode: the mask after region clicks (strokes drawn before them included)


def build_app(workspace_path: str | Path, title: str = "annotassist editor") -> gr.Blocks:
    root = Path(workspace_path)
    with Workspace(root) as ws:  # fail now, with the workspace's own message, not in the browser
        cfg = ws.config
        brush_size = _brush_size(ws)
    classes, palette = cfg.dataset.classes, check_palette(cfg.palette())
    brush_hex = [hex_colour(c) for c in palette] + [hex_colour(ignore_colour(palette))]
    colours = [(c, LAYER_ALPHA) for c in brush_hex]
    outline = session.outline_colour(list(palette) + [ignore_colour(palette)])

    def shown(st: TabState, scale: int = 1):
        """The canvas's background: the mask over the photo; in region mode outlined and dimmed outside."""
        o = st.opened
        base = overlay(o.image, st.mask if st.mask is not None else o.start_mask, palette)
        return base if o.region is None else session.region_view(base, o, outline, scale)

    def region_preview(st: TabState):
        o = st.opened
        if o is None or o.region is None:
            return gr.update(value=None, visible=False)
        return gr.update(value=shown(st, session.preview_scale(o)), visible=True,
                         label=f"{_region_summary(o.region)}: click one to give all of it the chosen class")

    def view(ws: Workspace, st: TabState, message: str = ""):
        """Every output of a navigation or save, for the tab's current image."""
        items = session.work_list(ws)
        o = st.opened
        choices = [(_item_label(it), it.image_id) for it in items]
        if o is None:
            editor = gr.update(value=None)
            unsure, info = None, message or session.progress_text(items)
        else:
            # the pre-annotation rides on the background: Gradio 6.31 does not load layers from a value
            editor = {"background": shown(st), "layers": [], "composite": None}
            unsure = session.heatmap(o.image, o.unsure[1]) if o.unsure else None
            info = _info(o, ws.image(o.image_id).state, ws.partial_mask(o.image_id) is not None)
            if o.image_id not in [c[1] for c in choices]:
                choices.append((o.name, o.image_id))
        region = o is not None and o.region is not None
        return (editor, gr.update(value=unsure, label=_unsure_label(o)), info, message, _unsaved(st),
                session.progress_text(items), gr.update(choices=choices, value=o.image_id if o else None),
                st, gr.update(visible=st.stale and not region), gr.update(visible=st.stale),
                region_preview(st), gr.update(visible=region))

    def go(st: TabState, action: str, target: int | None = None):
        st = st or TabState()
        with Workspace(root) as ws:
            if st.dirty and st.armed != action and st.opened and target != st.opened.image_id:
                st.armed = action
                return view_keep(ws, st, f"**{st.opened.name} has unsaved changes.** Save them, or press "
                                         f"{action} again to drop them.")
            items = session.work_list(ws)
            image_id = _pick(items, st.opened.image_id if st.opened else None, action, target)
            if image_id is None:
                st.armed = ""
                return view_keep(ws, st, "Every queued image is corrected." if items else
                                 "Nothing is queued for labeling: run `annotassist select` first.")
            try:
                st = TabState(opened=session.open_image(ws, image_id))
            except AnnotassistError as e:
                raise gr.Error(str(e)) from None
            return view(ws, st)

    def view_keep(ws: Workspace, st: TabState, message: str):
        """Like `view`, but leave the canvas alone so unsaved strokes stay on it."""
        out = list(view(ws, st, message))
        out[0] = gr.update()
        return tuple(out)

    def store(value, st: TabState, how: str):
        st = st or TabState()
        if st.opened is None:
            raise gr.Error("No image is open.")
        o = st.opened
        with Workspace(root) as ws:
            if how == "accept" and st.dirty and st.armed != "accept":
                st.armed = "accept"
                return view_keep(ws, st, "Accept saves the pre-annotation as it was loaded and drops your "
                                         "strokes: press Accept again to do so, or Save to keep them.")
            base = st.mask if st.mask is not None else o.start_mask
            try:
                mask = o.start_mask if how == "accept" else editor_value_to_mask(value, palette, base)
                saved = session.save_correction(ws, o, mask, force=how == "overwrite", accepted=how == "accept")
            except AnnotassistError as e:
                raise gr.Error(str(e)) from None
            if saved.stale and saved.unit == "region":
                st.stale, st.armed = True, ""
                return view_keep(ws, st, f"**Not saved: the regions of {o.name} were already saved** (from "
                                         "another tab or tool). Reload to go on with the image.")
            if saved.stale:
                st.stale, st.armed = True, ""
                return view_keep(ws, st, f"**Not saved: the mask of {o.name} changed since you opened it** "
                                         "(saved from another tab or tool). Reload to see that version, or "
                                         "Overwrite to store yours over it.")
            done = _saved_text(o, saved)
            items = session.work_list(ws)
            nxt = _pick(items, o.image_id, "skip", None)
            st = TabState(opened=session.open_image(ws, nxt if nxt is not None else o.image_id))
            return view(ws, st, done if nxt is not None else done + " Every queued image is corrected.")

    def clicked(value, class_id, st: TabState, evt: gr.SelectData):
        """A click on the region preview: give the whole queried region under it the chosen class."""
        st = st or TabState()
        o = st.opened
        if o is None or o.region is None:
            return gr.update(), gr.update(), "No regions to check are open.", _unsaved(st), st
        k = session.preview_scale(o)
        x, y = (int(v) // k for v in evt.index)
        base = st.mask if st.mask is not None else o.start_mask
        click = session.click_region(o, base, x, y, None if class_id is None else int(class_id))
        if click.region is None:  # nothing changes: leave the canvas and its strokes alone
            return gr.update(), gr.update(), click.message, _unsaved(st), st
        try:  # strokes drawn so far become part of the mask (reloading the canvas clears its layers)
            base = editor_value_to_mask(value, palette, base)
        except AnnotassistError as e:
            raise gr.Error(str(e)) from None
        click = session.click_region(o, base, x, y, int(class_id))
        name = "ignore" if click.mask[y, x] == IGNORE else classes[int(click.mask[y, x])]
        st.mask, st.dirty, st.armed = click.mask, True, ""
        editor = {"background": shown(st), "layers": [], "composite": None}
        return editor, region_preview(st), f"{click.message} Class: {name}.", _unsaved(st), st

    def touched(st: TabState):
        st = st or TabState()
        if st.opened is not None:
            st.dirty, st.armed = True, ""
        return _unsaved(st), st

    with gr.Blocks(title=title) as app:
        state = gr.State(TabState())
        with gr.Row():
            gr.Markdown(f"### {title}: `{root.name}`")
            progress = gr.Markdown(elem_id="progress")
        with gr.Row():
            pick = gr.Dropdown(label="Jump to image (most useful first)", choices=[], elem_id="jump", scale=3)
            prev_b = gr.Button("◀ Previous", elem_id="prev", scale=1)
            next_b = gr.Button("Next ▶", elem_id="next", scale=1)
            skip_b = gr.Button("Skip", elem_id="skip", scale=1)
        with gr.Row():
            with gr.Column(scale=3):
                editor = gr.ImageEditor(
                    label="Pre-annotation: paint corrections over it (white = ignore)", type="numpy", image_mode="RGBA",
                    format="png", sources=(), transforms=(), elem_id="editor", interactive=True,
                    brush=gr.Brush(colors=colours, default_color=colours[0], color_mode="fixed",
                                   default_size=brush_size),
                    eraser=gr.Eraser(default_size=brush_size), layers=gr.LayerOptions(allow_additional_layers=False, layers=["mask"]),
                    buttons=["fullscreen"])
                unsaved = gr.HTML(_unsaved(TabState()), js_on_load=None, elem_id="unsaved")
                status = gr.Markdown(elem_id="status")
                with gr.Row():
                    accept_b = gr.Button("Accept as is", elem_id="accept")
                    save_b = gr.Button("Save", variant="primary", elem_id="save")
                    overwrite_b = gr.Button("Overwrite anyway", variant="stop", visible=False, elem_id="overwrite")
                    reload_b = gr.Button("Reload", visible=False, elem_id="reload")
                    # clicked by the page's script when a stroke ends; the editor's own input event also fires
                    # when the server loads an image, so it cannot tell edits from loads
                    touched_b = gr.Button("touched", visible="hidden", elem_id="touched")
            with gr.Column(scale=2):
                gr.HTML(legend_html(classes, brush_hex), js_on_load=SHORTCUTS_JS,
                        elem_id="legend")
                region_cls = gr.Radio([(c, i) for i, c in enumerate(classes)] + [("ignore (un-label)", IGNORE)],
                                      label="Class for a region click", visible=False, elem_id="region_class")
                regions = gr.Image(label="Regions to check: click one to give it the chosen class", type="numpy",
                                   interactive=False, visible=False, elem_id="regions", height=420,
                                   buttons=["fullscreen"])
                unsure = gr.Image(label="Where the model is unsure", interactive=False, elem_id="unsure",
                                  buttons=["fullscreen"], height=320)
                info = gr.Markdown(elem_id="info")

        outs = [editor, unsure, info, status, unsaved, progress, pick, state, overwrite_b, reload_b, regions,
                region_cls]
        app.load(lambda st: go(st, "first"), [state], outs, api_name="start")
        prev_b.click(lambda st: go(st, "previous"), [state], outs, api_name="previous")
        next_b.click(lambda st: go(st, "next"), [state], outs, api_name="next")
        skip_b.click(lambda st: go(st, "skip"), [state], outs, api_name="skip")
        pick.input(lambda i, st: go(st, "jump", int(i)), [pick, state], outs, api_name="open")
        reload_b.click(lambda st: go(st, "reload", st.opened.image_id if st and st.opened else None),
                       [state], outs, api_name="reload")
        save_b.click(lambda v, st: store(v, st, "save"), [editor, state], outs, api_name="save")
        overwrite_b.click(lambda v, st: store(v, st, "overwrite"), [editor, state], outs, api_name="overwrite")
        accept_b.click(lambda st: store(None, st, "accept"), [state], outs, api_name="accept")
        touched_b.click(touched, [state], [unsaved, state], api_name=False, queue=False)
        regions.select(clicked, [editor, region_cls, state], [editor, regions, status, unsaved, state],
                       api_name="region_click")
    return app


def launch(workspace, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           auth: str | None = None, **kwargs):
    """Serve the editor; binds to this machine only unless `host`/`share` say otherwise. `auth` USER:PASSWORD,
    else the environment's ANNOTASSIST_AUTH (see `read_auth` for the command line's options)."""
    root = workspace.root if isinstance(workspace, Workspace) else Path(workspace)
    app = build_app(root)
    creds = parse_auth(auth or os.environ.get(AUTH_ENV))
    if (share or host not in ("127.0.0.1", "localhost")) and creds is None:
        print(f"warning: the editor is reachable from other machines without a password; set {AUTH_ENV}="
              f"USER:PASS or pass --auth-file FILE")
    try:
        app.launch(server_name=host, server_port=port, share=share, auth=creds, **kwargs)
    except OSError as e:  # Gradio: "Cannot find empty port in range: 7860-7860", or a host it cannot bind
        app.close()
        if "empty port" in str(e):
            which = f"port {port} on {host} is" if port else f"ports 7860-7959 on {host} are all"
            raise AnnotassistError(f"{which} in use (another editor or program); choose a free one with --port "
                                   "N, or stop what is using it") from None
        raise AnnotassistError(f"cannot serve the editor on {host}:{port or 7860} ({e}); check --host and "
                               "--port") from None
    return app


def _pick(items: list[session.WorkItem], current: int | None, action: str, target: int | None) -> int | None:
    """The image an action leads to: next/previous walk the list (wrapping); first/skip go to the next one not
    yet corrected; jump/reload go to `target`."""
    if action in ("jump", "reload"):
        return target
    ids = [it.image_id for it in items]
    if not ids:
        return None
    at = ids.index(current) if current in ids else -1
    if action == "next":
        return ids[(at + 1) % len(ids)]
    if action == "previous":
        return ids[(at - 1) % len(ids)] if at >= 0 else ids[-1]
    start = 0 if action == "first" else at + 1
    for k in range(len(ids)):
        it = items[(start + k) % len(ids)]
        if not it.done and it.image_id != current:
            return it.image_id
    return None


def _brush_size(ws: Workspace) -> int:
    """A brush radius in image pixels that suits the pool (Gradio's own default is 25 whatever the size)."""
    return max(3, round((ws.median_side("pool") or 256) / 60))


def _item_label(it: session.WorkItem) -> str:
    rank = f"{it.rank + 1}. " if it.rank is not None else ""
    return f"{rank}{it.name}{' ✓' if it.done else ''}"


def _info(o: session.Opened, state: str, has_partial: bool = False) -> str:
    start = {"pseudo": "the model's pre-annotation", "human": "your last saved correction",
             "ground_truth": "the dataset's label", "none": "an empty mask (no pre-annotation stored)"}
    text = f"**{o.name}** ({state}); the mask starts from {start[o.start_kind]}."
    if o.region is not None:
        return (f"{text}\n\n**{_region_summary(o.region)}**, outlined; "
                "the rest is dimmed and not stored. Choose a class and click a region to give all of it that "
                "class; fix the rest with the brush.")
    if has_partial and state != "labeled":
        text += " Regions of it were checked before; saving here labels the whole image."
    return text


def _region_summary(q: session.RegionQuery) -> str:
    return f"region mode: check {len(q.regions)} regions ({100 * q.share:.3g}% of the image)"


def _saved_text(o: session.Opened, saved: session.Saved) -> str:
    if saved.unit != "region":
        return (f"Saved {o.name} ({saved.changed_pixels} pixels in {saved.changed_regions} regions "
                f"changed, {saved.seconds:.0f} s).")
    text = (f"Saved {saved.regions} regions of {o.name}: {saved.reviewed_pixels} pixels stored "
            f"({saved.changed_pixels} pixels in {saved.changed_regions} regions changed, {saved.seconds:.0f} s).")
    if saved.outside_pixels:
        text += f" {saved.outside_pixels} pixels painted outside the regions to check were not stored."
    return text


def _unsure_label(o: session.Opened | None) -> str:
    if o is None or o.unsure is None:
        return "Where the model is unsure (no map stored for this image)"
    return f"Where the model is unsure ({o.unsure[0].replace('_', ' ')}; red = less sure)"


def _unsaved(st: TabState) -> str:
    """The banner naming the image with unsaved strokes; empty when there are none (the page's beforeunload
    check reads it)."""
    if st.dirty and st.opened:
        return f'<div class="unsaved" data-unsaved="1">● Unsaved changes on {html.escape(st.opened.name)}</div>'
    return '<div class="unsaved" data-unsaved="0"></div>'

