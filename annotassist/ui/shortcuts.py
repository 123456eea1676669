"""The legend and the keyboard shortcuts of the correction editor (a little JavaScript, run once per page)."""
from __future__ import annotations

import html

SHORTCUTS = [("n / →", "next image"), ("p / ←", "previous image"), ("s", "save"), ("a", "accept as is"),
             ("1 … 9", "brush of class 1 … 9"), ("0", "ignore brush"), ("e", "eraser"), ("ctrl+z", "undo (the editor's own)")]


def legend_html(classes: list[str], colours: list[str]) -> str:
    """One swatch per class with its number key, then the ignore brush (the last colour)."""
    classes = list(classes) + ["ignore (un-label)"]
    rows = "".join(
        f'<li><span class="swatch" style="background:{c}"></span>'
        f'<kbd>{_key(i, len(classes))}</kbd> {html.escape(name)}</li>'
        for i, (name, c) in enumerate(zip(classes, colours)))
    keys = " · ".join(f"<kbd>{k}</kbd> {what}" for k, what in SHORTCUTS)
    return (f'<div class="legend"><b>Classes</b><ul style="list-style:none;padding:0;margin:4px 0">{rows}</ul>'
            f'<small>{keys}. Unpainted pixels keep the pre-annotation; the eraser removes strokes.</small></div>'
            '<style>.legend .swatch{display:inline-block;width:14px;height:14px;border:1px solid #888;'
            'vertical-align:middle;margin-right:4px}.legend kbd{min-width:1em;display:inline-block}'
            '#unsaved .unsaved{color:#b45309;font-weight:bold}</style>')


def _key(i: int, n: int) -> str:
    return "0" if i == n - 1 else str(i + 1) if i < 9 else ""


# Runs in the legend's js_on_load: installs one document-level key handler per page (the guard keeps a
# re-render from installing a second), and warns before closing the tab with unsaved strokes.
SHORTCUTS_JS = r"""
if (!window.__annotassistKeys) {
  window.__annotassistKeys = true;
  const click = (id) => { const b = document.querySelector('#' + id); if (b) b.click(); };
  document.addEventListener('keydown', (ev) => {
    const t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
    const k = ev.key;
    if (k === 'n' || k === 'ArrowRight') click('next');
    else if (k === 'p' || k === 'ArrowLeft') click('prev');
    else if (k === 's') click('save');
    else if (k === 'a') click('accept');
    else if (k === 'e') { const b = document.querySelector('#editor button[aria-label="Erase"]'); if (b) b.click(); }
    else if (k >= '1' && k <= '9') window.__annotassistPickClass(parseInt(k) - 1);
    else if (k === '0') window.__annotassistPickClass(-1);
    else return;
    ev.preventDefault();
  });
  // the brush colours are the editor's own swatches, in class order with the ignore colour last
  const wait = (ms) => new Promise((r) => setTimeout(r, ms));
  window.__annotassistPickClass = async (i) => {
    const q = (s) => document.querySelector(s);
    // region mode: the same class for region clicks (the radio is only on the page then)
    const radios = document.querySelectorAll('#region_class input[type="radio"]');
    const r = radios[i < 0 ? radios.length - 1 : i];
    if (r) r.click();
    const brush = q('#editor button[aria-label="Brush"]');
    if (brush) brush.click();
    await wait(50);
    if (!q('#editor button.color')) { const c = q('#editor button[aria-label="Color"]'); if (c) c.click(); }
    await wait(50);
    const sw = document.querySelectorAll('#editor button.color');
    const pick = sw[i < 0 ? sw.length - 1 : i];
    if (pick) pick.click();
  };
  // a stroke ended on the canvas: tell the server this tab has unsaved work
  document.addEventListener('pointerup', (ev) => {
    if (ev.target && ev.target.closest && ev.target.closest('#editor canvas')) click('touched');
  }, true);
  window.addEventListener('beforeunload', (ev) => {
    if (document.querySelector('#unsaved [data-unsaved="1"]')) { ev.preventDefault(); ev.returnValue = ''; }
  });
}
"""
